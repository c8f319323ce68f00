/**
 * The decision table, one test per row, through libcni (ptp + host-local + the built dist/istio-cni)
 * with each pod served as `kubectl get pod -o yaml` prints it (test/fixtures/pods). Then the
 * runtime-supplied annotations: the capability in the conflist, the annotations in CAP_ARGS, and a
 * passing pod decided with no request to the API server at all.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import * as h from '../harness/index.ts';

afterAll(h.cleanupAll);

const POD_ANNOTATIONS = 'io.kubernetes.cri.pod-annotations';
const FIXTURES = new URL('../fixtures/pods/', import.meta.url);
const pods = new Map(
  readdirSync(FIXTURES).map((file) => [file.replace(/\.yaml$/, ''), parseYaml(readFileSync(new URL(file, FIXTURES), 'utf8')) as h.Pod]),
);

function fixture(name: string): h.Pod {
  const pod = pods.get(name);
  assert.ok(pod, `test/fixtures/pods/${name}.yaml`);
  return pod;
}

const refOf = (pod: h.Pod): h.PodRef => ({ pod: pod.metadata.name, namespace: pod.metadata.namespace });

function lastLogLine(e: h.E2E): { decision: string; reason: string; apiAttempts: number } {
  return JSON.parse(readFileSync(e.conf.logFile!, 'utf8').trim().split('\n').at(-1)!);
}

/** ADD through the chain, what it did, then DEL so that the next row starts from a clean pod netns. */
async function addThenDel(e: h.E2E, ref: h.PodRef | undefined, capArgs?: Record<string, unknown>) {
  const api = e.api!;
  api.clearRequests();
  const connectionsBefore = api.connections;
  const add = await e.run('add', ref, capArgs ? { capArgs } : {});
  assert.equal(add.code, 0, add.stderr);
  const redirected = (await h.iptablesS(e.topo.pod, 'nft')).some((l) => l.includes('ISTIO_'));
  const log = lastLogLine(e);
  const requests = api.requests.length;
  const connections = api.connections - connectionsBefore;
  const del = await e.run('del', ref);
  assert.equal(del.code, 0, del.stderr);
  return { redirected, log, requests, connections };
}

describe('the decision table, row by row', () => {
  let e: h.E2E;
  beforeAll(async () => {
    e = await h.makeE2E({ tag: 'table', pods: [...pods.values()], conflist: { iptablesBackend: 'nft' } });
  });

  it('1. no K8S_POD_NAME/K8S_POD_NAMESPACE: pass, no API call', async () => {
    const r = await addThenDel(e, undefined);
    assert.equal(r.redirected, false);
    assert.match(r.log.reason, /not a Kubernetes pod/);
    assert.equal(r.requests, 0);
  });

  it('2. excluded namespace: pass, no API call', async () => {
    const r = await addThenDel(e, refOf(fixture('excluded-namespace')));
    assert.equal(r.redirected, false);
    assert.match(r.log.reason, /namespace kube-system is excluded/);
    assert.equal(r.requests, 0);
  });

  it("3. the plugin's own istio-cni-node pod in pod_namespace: pass, no API call", async () => {
    const own = fixture('own-daemonset-pod');
    const r = await addThenDel(e, refOf(own));
    assert.equal(r.redirected, false);
    assert.match(r.log.reason, /istio-system\/istio-cni-node-x7k2p is an istio-cni-node-\* pod of the plugin itself/);
    assert.equal(r.requests, 0);
    // The name alone is not enough: the same name in another namespace is looked up.
    e.api!.setPod({ ...own, metadata: { ...own.metadata, namespace: 'default' } });
    const elsewhere = await addThenDel(e, { pod: own.metadata.name, namespace: 'default' });
    assert.equal(elsewhere.requests, 1);
    assert.match(elsewhere.log.reason, /no istio-proxy container/);
  });

  it('4. istio-init init container: pass', async () => {
    const r = await addThenDel(e, refOf(fixture('istio-init')));
    assert.equal(r.redirected, false);
    assert.match(r.log.reason, /istio-init init container/);
    assert.equal(r.requests, 1);
  });

  it('5. no istio-proxy container (the status annotation notwithstanding): pass', async () => {
    const r = await addThenDel(e, refOf(fixture('no-istio-proxy')));
    assert.equal(r.redirected, false);
    assert.match(r.log.reason, /no istio-proxy container/);
  });

  it('6. istio-proxy with DISABLE_ENVOY=true: pass', async () => {
    const r = await addThenDel(e, refOf(fixture('disable-envoy')));
    assert.equal(r.redirected, false);
    assert.match(r.log.reason, /DISABLE_ENVOY=true/);
  });

  it('7. sidecar.istio.io/inject label "false" over an annotation "true": pass', async () => {
    const r = await addThenDel(e, refOf(fixture('inject-label-false')));
    assert.equal(r.redirected, false);
    assert.match(r.log.reason, /sidecar\.istio\.io\/inject=false/);
  });

  it('8. no sidecar.istio.io/status annotation: pass', async () => {
    const r = await addThenDel(e, refOf(fixture('no-status-annotation')));
    assert.equal(r.redirected, false);
    assert.match(r.log.reason, /no sidecar\.istio\.io\/status annotation/);
  });

  it('9. an injected pod: redirect, with istio-proxy as a container or as a native sidecar', async () => {
    for (const name of ['injected', 'native-sidecar']) {
      const r = await addThenDel(e, refOf(fixture(name)));
      assert.equal(r.redirected, true, name);
      assert.equal(r.log.decision, 'redirect');
      assert.match(r.log.reason, /injected istio-proxy sidecar/);
      assert.equal(r.requests, 1);
    }
  });
});

describe('runtime-supplied annotations (CAP_ARGS -> runtimeConfig)', () => {
  let e: h.E2E;
  beforeAll(async () => {
    e = await h.makeE2E({ tag: 'annotations', pods: [...pods.values()], conflist: { iptablesBackend: 'nft' } });
  });
  const capArgsOf = (pod: h.Pod) => ({ [POD_ANNOTATIONS]: pod.metadata.annotations ?? {} });

  it('the example conflist declares the capability', () => {
    const entry = h.readExampleConflist().plugins.find((p) => p.type === 'istio-cni');
    assert.deepEqual(entry?.capabilities, { [POD_ANNOTATIONS]: true });
  });

  it('decides a pod without the status annotation with zero requests to the API server', async () => {
    // Both in namespace default, where the API server does not even have them: only the annotations decide.
    for (const name of ['no-status-annotation', 'own-daemonset-pod']) {
      const pod = fixture(name);
      const r = await addThenDel(e, { pod: pod.metadata.name, namespace: 'default' }, capArgsOf(pod));
      assert.equal(r.redirected, false, name);
      assert.match(r.log.reason, /runtime-supplied annotations have no sidecar\.istio\.io\/status/);
      assert.equal(r.requests, 0, name);
      assert.equal(r.connections, 0, name);
    }
  });

  it('still passes such a pod while the API server is unreachable', async () => {
    e.api!.behavior.fault = { kind: 'reset' };
    try {
      const r = await addThenDel(e, refOf(fixture('no-status-annotation')), capArgsOf(fixture('no-status-annotation')));
      assert.equal(r.redirected, false);
      assert.equal(r.connections, 0);
    } finally {
      delete e.api!.behavior.fault;
    }
  });

  it('reads an injected pod from the API: its containers decide', async () => {
    const injected = await addThenDel(e, refOf(fixture('injected')), capArgsOf(fixture('injected')));
    assert.equal(injected.redirected, true);
    assert.equal(injected.requests, 1);
    const disabled = await addThenDel(e, refOf(fixture('disable-envoy')), capArgsOf(fixture('disable-envoy')));
    assert.equal(disabled.redirected, false);
    assert.match(disabled.log.reason, /DISABLE_ENVOY=true/);
    assert.equal(disabled.requests, 1);
  });

  it('gets no annotations, and asks the API, when the conflist does not declare the capability', async () => {
    const undeclared = await h.makeE2E({ tag: 'nocap', pods: [fixture('no-status-annotation')], conflist: { iptablesBackend: 'nft', istio: { capabilities: null } } });
    const pod = fixture('no-status-annotation');
    const r = await addThenDel(undeclared, refOf(pod), capArgsOf(pod));
    assert.equal(r.redirected, false);
    assert.match(r.log.reason, /no sidecar\.istio\.io\/status annotation: not injected/);
    assert.equal(r.requests, 1);
  });
});
