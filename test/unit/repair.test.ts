import assert from 'node:assert/strict';
import { describe, it } from 'vitest';
import { readCommandLine, readFlags, UsageError } from '../../src/flags.ts';
import { startedUncaptured, WatchedPod } from '../../src/repair/pod.ts';

type State = { terminated?: { exitCode: number }; waiting?: object; running?: object };

function pod(validation: { state?: State; lastState?: State } | undefined, opts: { annotated?: boolean; container?: string } = {}): WatchedPod {
  return WatchedPod.parse({
    metadata: {
      name: 'web-0',
      namespace: 'default',
      uid: 'u-1',
      resourceVersion: '7',
      annotations: (opts.annotated ?? true) ? { 'sidecar.istio.io/status': '{}' } : {},
    },
    status: { initContainerStatuses: validation === undefined ? [] : [{ name: opts.container ?? 'istio-validation', ...validation }] },
  });
}

const exited = (exitCode: number): State => ({ terminated: { exitCode } });

describe('which pods started without traffic capture', () => {
  it('a crash-looping istio-validation whose last run exited 126', () => {
    assert.equal(startedUncaptured(pod({ state: { waiting: { reason: 'CrashLoopBackOff' } }, lastState: exited(126) })), true);
    assert.equal(startedUncaptured(pod({ state: { running: {} }, lastState: exited(126) })), true);
  });
  it('an istio-validation that exited 126 and is not restarted', () => {
    assert.equal(startedUncaptured(pod({ state: exited(126) })), true);
  });
  it('not once its latest run succeeded, whatever came before', () => {
    assert.equal(startedUncaptured(pod({ state: exited(0), lastState: exited(126) })), false);
  });
  it('not for another exit status, another container, no status yet, or no sidecar annotation', () => {
    assert.equal(startedUncaptured(pod({ state: exited(1) })), false);
    assert.equal(startedUncaptured(pod({ state: exited(126) }, { container: 'app-init' })), false);
    assert.equal(startedUncaptured(pod(undefined)), false);
    assert.equal(startedUncaptured(pod({ state: exited(126) }, { annotated: false })), false);
  });
});

describe('subcommand flags', () => {
  const kinds = { timeout: 'value', ipv6: 'switch' } as const;
  it('reads --name value, --name=value and switches', () => {
    assert.deepEqual(readFlags(['--timeout', '2', '--ipv6'], kinds), { timeout: '2', ipv6: true });
    assert.deepEqual(readFlags(['--timeout=0.5'], kinds), { timeout: '0.5' });
  });
  it('refuses unknown flags, a value on a switch, a missing value and stray words', () => {
    assert.throws(() => readFlags(['--bogus'], kinds), (e) => e instanceof UsageError && /unknown flag --bogus; known: --timeout, --ipv6/.test(e.message));
    assert.throws(() => readFlags(['--ipv6=yes'], kinds), /takes no value/);
    assert.throws(() => readFlags(['--timeout'], kinds), /needs a value/);
    assert.throws(() => readFlags(['now'], kinds), /unexpected argument "now"/);
  });
  it('keeps the words that are neither a flag nor its value, wherever they stand (explain\'s manifest)', () => {
    assert.deepEqual(readCommandLine(['--timeout', '2', 'pod.yaml', '--ipv6'], kinds), { flags: { timeout: '2', ipv6: true }, operands: ['pod.yaml'] });
    assert.deepEqual(readCommandLine(['a', 'b'], kinds), { flags: {}, operands: ['a', 'b'] });
    assert.throws(() => readCommandLine(['-x', 'pod.yaml'], kinds), /unexpected argument "-x"/);
  });
});
