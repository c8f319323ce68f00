import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { warmUp } from '../../build/warm-up.ts';

describe('snapshot warm-up (build/warm-up.ts)', () => {
  it('runs the whole hot path on its samples: each is accepted and leads where it should', () => {
    // warmUp throws when a sample is rejected or takes another path (e.g. a schema change makes the
    // pod sample invalid): the snapshot would then hold only the error path compiled.
    assert.doesNotThrow(warmUp);
  });
});
