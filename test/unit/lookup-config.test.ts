import assert from 'node:assert/strict';
import { describe, it } from 'vitest';
import { parseConfig } from '../../src/cni/config.ts';
import { CniError } from '../../src/cni/errors.ts';

const base = { cniVersion: '1.0.0', name: 'n', type: 'istio-cni' };

describe('pod lookup config', () => {
  it('defaults: 3 s per attempt, 10 s in all, 2 s of 404s, 5 s of 401/403, own pods in istio-system, no runtime annotations', () => {
    const config = parseConfig(JSON.stringify(base));
    assert.deepEqual(config.podLookup, { attemptTimeoutMs: 3000, budgetMs: 10000, notFoundMs: 2000, deniedMs: 5000 });
    assert.equal(config.podNamespace, 'istio-system');
    assert.equal(config.runtimeAnnotations, undefined);
  });

  it('takes the fields and the runtime-supplied annotations', () => {
    const config = parseConfig(JSON.stringify({
      ...base,
      pod_namespace: 'istio-cni',
      pod_lookup_timeout_ms: 500,
      pod_lookup_budget_ms: 4000,
      pod_lookup_not_found_ms: 1000,
      pod_lookup_denied_ms: 1500,
      runtimeConfig: { 'io.kubernetes.cri.pod-annotations': { 'sidecar.istio.io/status': '{}' } },
    }));
    assert.deepEqual(config.podLookup, { attemptTimeoutMs: 500, budgetMs: 4000, notFoundMs: 1000, deniedMs: 1500 });
    assert.equal(config.podNamespace, 'istio-cni');
    assert.deepEqual(config.runtimeAnnotations, { 'sidecar.istio.io/status': '{}' });
  });

  it('reads containerd\'s null annotations (a pod without any) as none', () => {
    const config = parseConfig(JSON.stringify({ ...base, runtimeConfig: { 'io.kubernetes.cri.pod-annotations': null } }));
    assert.deepEqual(config.runtimeAnnotations, {});
  });

  it('refuses a budget that is not a whole number of milliseconds within kubelet\'s 4 minutes, and annotations that are not strings', () => {
    for (const bad of [{ pod_lookup_budget_ms: 0 }, { pod_lookup_budget_ms: 1.5 }, { pod_lookup_timeout_ms: '3000' }, { pod_lookup_budget_ms: 240_001 }, { runtimeConfig: { 'io.kubernetes.cri.pod-annotations': { a: 1 } } }]) {
      assert.throws(() => parseConfig(JSON.stringify({ ...base, ...bad })), (err: unknown) => err instanceof CniError && err.code === 7, JSON.stringify(bad));
    }
  });
});
