import assert from 'node:assert/strict';
import { describe, it } from 'vitest';
import { backoffMs, judge, retryAfterMs } from '../../src/kube/retry.ts';

const status = (code: number, message = '') => ({ kind: 'answer' as const, status: code, body: JSON.stringify({ kind: 'Status', message }) });
const failure = (code: string, message: string) => ({ kind: 'failure' as const, error: Object.assign(new Error(message), { code }) });

describe('what a pod lookup retries', () => {
  it('retries timeouts, failed connections, 404, 429 and 5xx', () => {
    assert.equal(judge({ kind: 'timeout', afterMs: 300 }).retry, true);
    assert.equal(judge(failure('ECONNRESET', 'socket hang up')).retry, true);
    assert.equal(judge(failure('ECONNREFUSED', 'connect ECONNREFUSED')).retry, true);
    for (const code of [401, 403, 404, 429, 500, 502, 503, 504]) assert.equal(judge(status(code)).retry, true, `HTTP ${code}`);
  });
  it('does not retry other statuses or an untrusted certificate', () => {
    for (const code of [400, 405, 410]) assert.equal(judge(status(code)).retry, false, `HTTP ${code}`);
    const untrusted = judge(failure('UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'unable to verify the first certificate'));
    assert.equal(untrusted.retry, false);
    assert.match(untrusted.reason, /server certificate not trusted/);
  });
  it("names the status and the API server's message", () => {
    assert.equal(judge(status(403, 'pods "web-0" is forbidden')).reason, 'HTTP 403 pods "web-0" is forbidden');
  });
});

describe('Retry-After', () => {
  it('reads delay-seconds and HTTP dates', () => {
    assert.equal(retryAfterMs('2', 0), 2000);
    assert.equal(retryAfterMs(' 0 ', 0), 0);
    const now = Date.parse('Wed, 21 Oct 2015 07:28:00 GMT');
    assert.equal(retryAfterMs('Wed, 21 Oct 2015 07:28:03 GMT', now), 3000);
    assert.equal(retryAfterMs('Wed, 21 Oct 2015 07:27:00 GMT', now), 0);
  });
  it('ignores an absent or unreadable header', () => {
    assert.equal(retryAfterMs(undefined, 0), undefined);
    assert.equal(retryAfterMs('soon', 0), undefined);
    assert.equal(retryAfterMs('-1', 0), undefined);
  });
});

describe('backoff', () => {
  it('doubles from 100 ms to a 1 s ceiling, jittered down by at most half', () => {
    assert.deepEqual([1, 2, 3, 4, 5, 9].map((n) => backoffMs(n, () => 1)), [100, 200, 400, 800, 1000, 1000]);
    assert.deepEqual([1, 5].map((n) => backoffMs(n, () => 0)), [50, 500]);
  });
});
