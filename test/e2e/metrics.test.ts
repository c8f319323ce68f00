/**
 * The node agent's Prometheus metrics, scraped from `istio-cni install` (the built executable, as
 * the DaemonSet runs it: pod cache, repair in label mode, MONITORING_PORT) against the fake API
 * server: install and re-insert counts, readiness, repair actions, the pod cache's answers, and the
 * plugin's ADD/DEL/CHECK outcomes with their durations, reported by each plugin run over the pod
 * cache's socket.
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as h from '../harness/index.ts';
import { CALICO, entryIsLast, makeFakeNode, readConflist, startInstaller, waitFor, type FakeNode } from '../install/node.ts';
import { UNINITIALIZED_LABEL } from '../../src/repair/pod.ts';

after(h.cleanupAll);

const NODE_NAME = 'test-node';
const BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

let api: h.FakeKubeApi;
let dir: string;
let node: FakeNode;
let kubeconfig: string;
let socketPath: string;
let metricsUrl: string;

/** What kubelet reports for an istio-validation that exited 126: the pod started without capture. */
const BROKEN = { status: { phase: 'Pending', initContainerStatuses: [{ name: 'istio-validation', restartCount: 1, state: { waiting: { reason: 'CrashLoopBackOff' } }, lastState: { terminated: { exitCode: 126 } } }] } };

before(async () => {
  api = await h.startFakeKubeApi({ pods: [h.injectedPod('web-0', 'default'), h.injectedPod('web-1', 'default'), h.injectedPod('broken-0', 'default', BROKEN)] });
  h.servePodWatch(api);
  dir = h.makeTempDir('icni-metrics-');
  kubeconfig = api.writeKubeconfig(dir, { auth: 'token', caMode: 'data' });
  node = makeFakeNode({
    token: api.token,
    ca: api.pki.caPem,
    apiHost: '127.0.0.1',
    apiPort: api.port,
    env: { NODE_NAME, POD_CACHE_SOCKET: join(dir, 'run', 'pod-cache.sock'), MONITORING_PORT: '0', REPAIR_ENABLED: 'true', REPAIR_LABEL_PODS: 'true' },
  });
  writeFileSync(join(node.netDir, '10-calico.conflist'), CALICO);
  const installer = await startInstaller(node);
  await waitFor('the first list', () => installer.output().stderr.includes('listed this node\'s pods'), 5000);
  const port = /"port":(\d+),"path":"\/metrics","msg":"serving metrics"/.exec(installer.output().stderr)?.[1];
  assert.ok(port, installer.output().stderr);
  metricsUrl = `http://127.0.0.1:${port}/metrics`;
  socketPath = readConflist(join(node.netDir, '10-calico.conflist')).plugins.at(-1)!.pod_cache_socket as string;
});

/** The value of one sample of the exposition text; undefined when there is none. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  const wanted = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  for (const line of text.split('\n')) {
    const m = /^([a-z_:]+)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (m === null || m[1] !== name) continue;
    const have = m[2] === undefined ? [] : m[2].split(',');
    if (have.length === wanted.length && wanted.every((w) => have.includes(w))) return Number(m[3]);
  }
  return undefined;
}

async function scrape(): Promise<string> {
  const res = await fetch(metricsUrl);
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
  return res.text();
}

/** Scrapes until `ready` holds for the text (a report arrives a moment after its plugin run exits). */
async function scrapeUntil(what: string, ready: (text: string) => boolean): Promise<string> {
  let text = '';
  const deadline = Date.now() + 5000;
  for (;;) {
    text = await scrape();
    if (ready(text)) return text;
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}:\n${text}`);
    await h.sleep(20);
  }
}

interface Run {
  code: number;
  durationMs: number;
}

/** One verb through the built plugin with the entry the installer wrote (its pod_cache_socket), as the runtime runs it. */
async function verb(command: 'ADD' | 'DEL' | 'CHECK', namespace: string, name: string, netns: h.Netns | string): Promise<Run> {
  const log = join(dir, `${command}-${name}-${Date.now()}.log`);
  const r = await h.runPlugin(h.DEFAULT_ISTIO_CNI_BIN, {
    command,
    stdin: { cniVersion: '1.0.0', name: 'metrics-test', type: 'istio-cni', kubernetes: { kubeconfig }, log_file: log, iptables_backend: 'nft', pod_cache_socket: socketPath },
    containerId: `metrics-${name}`,
    netns,
    ifName: 'eth0',
    cniArgs: { K8S_POD_NAMESPACE: namespace, K8S_POD_NAME: name, K8S_POD_UID: api.pods.get(`${namespace}/${name}`)?.metadata.uid ?? 'no-such-uid' },
  });
  const line = JSON.parse(readFileSync(log, 'utf8').trim()) as { durationMs: number; code?: number };
  return { code: r.code === 0 ? 0 : (line.code ?? -1), durationMs: line.durationMs };
}

describe('metrics on the DaemonSet\'s HTTP port', () => {
  it('after the install: our entry written once, ready, no plugin run counted', async () => {
    const text = await scrape();
    assert.equal(sample(text, 'istio_cni_installs_total', { result: 'SUCCESS' }), 1);
    assert.equal(sample(text, 'istio_cni_reinserts_total'), 0);
    assert.equal(sample(text, 'istio_cni_install_ready'), 1);
    assert.doesNotMatch(text, /^istio_cni_plugin_verbs_total\{/m);
  });

  it('counts the plugin\'s ADD, DEL and CHECK by decision and error code, with their durations, as each run reported them', async () => {
    const web0 = await h.createNetns({ tag: 'metrics' });
    const web1 = await h.createNetns({ tag: 'metrics' });
    const plain = await h.createNetns({ tag: 'metrics' });
    const adds = [
      await verb('ADD', 'default', 'web-0', web0), // redirect, 0
      await verb('ADD', 'default', 'web-1', web1), // redirect, 0
      await verb('ADD', 'default', 'web-0', '/run/netns/icni-metrics-no-such-netns'), // redirect, then 104
    ];
    const pass = await verb('ADD', 'kube-system', 'coredns-0', plain); // an excluded namespace: pass, no lookup
    const check = await verb('CHECK', 'default', 'web-1', web1);
    const del = await verb('DEL', 'default', 'web-0', web0);
    assert.deepEqual([...adds.map((r) => r.code), pass.code, check.code, del.code], [0, 0, 104, 0, 0, 0]);

    const text = await scrapeUntil('six reports', (t) => sample(t, 'istio_cni_plugin_verb_duration_seconds_count', { verb: 'DEL', decision: 'none' }) === 1 && sample(t, 'istio_cni_plugin_verb_duration_seconds_count', { verb: 'CHECK', decision: 'redirect' }) === 1 && sample(t, 'istio_cni_plugin_verb_duration_seconds_count', { verb: 'ADD', decision: 'redirect' }) === 3 && sample(t, 'istio_cni_plugin_verb_duration_seconds_count', { verb: 'ADD', decision: 'pass' }) === 1);
    const verbs = text.split('\n').filter((l) => l.startsWith('istio_cni_plugin_verbs_total{')).sort();
    assert.deepEqual(verbs, [
      'istio_cni_plugin_verbs_total{verb="ADD",decision="pass",code="0"} 1',
      'istio_cni_plugin_verbs_total{verb="ADD",decision="redirect",code="0"} 2',
      'istio_cni_plugin_verbs_total{verb="ADD",decision="redirect",code="104"} 1',
      'istio_cni_plugin_verbs_total{verb="CHECK",decision="redirect",code="0"} 1',
      'istio_cni_plugin_verbs_total{verb="DEL",decision="none",code="0"} 1',
    ]);

    // The histogram holds each run's own duration (the log line's, rounded there to the millisecond).
    const redirect = { verb: 'ADD', decision: 'redirect' };
    const seconds = sample(text, 'istio_cni_plugin_verb_duration_seconds_sum', redirect)!;
    const logged = adds.reduce((sum, r) => sum + r.durationMs, 0) / 1000;
    assert.ok(Math.abs(seconds - logged) <= adds.length * 0.0005, `sum ${seconds} s, the log lines ${logged} s`);
    for (const le of BUCKETS) {
      const inBucket = sample(text, 'istio_cni_plugin_verb_duration_seconds_bucket', { ...redirect, le: String(le) })!;
      const surely = adds.filter((r) => r.durationMs + 0.5 <= le * 1000).length;
      const maybe = adds.filter((r) => r.durationMs - 0.5 <= le * 1000).length;
      assert.ok(inBucket >= surely && inBucket <= maybe, `le=${le}: ${inBucket}, the log lines say ${surely}..${maybe}`);
    }
    assert.equal(sample(text, 'istio_cni_plugin_verb_duration_seconds_bucket', { ...redirect, le: '+Inf' }), 3);
    assert.equal(sample(text, 'istio_cni_plugin_verb_duration_seconds_count', { verb: 'ADD', decision: 'pass' }), 1);

    // Each ADD and CHECK of an injected pod asked the cache, and it held the pod; the excluded namespace and DEL did not ask.
    assert.equal(sample(text, 'istio_cni_pod_cache_answers_total', { found: 'true' }), 4);
    assert.equal(sample(text, 'istio_cni_pod_cache_answers_total', { found: 'false' }), undefined);
    for (const netns of [web0, web1, plain]) await h.deleteNetns(netns);
  });

  it('counts repair\'s action on a pod that started without capture', async () => {
    await waitFor('broken-0 labelled', () => (api.pods.get('default/broken-0')?.metadata.labels as Record<string, string> | undefined)?.[UNINITIALIZED_LABEL] === 'true', 5000);
    const text = await scrapeUntil('the repair counted', (t) => sample(t, 'istio_cni_repair_pods_repaired_total', { type: 'label', result: 'success' }) !== undefined);
    assert.equal(sample(text, 'istio_cni_repair_pods_repaired_total', { type: 'label', result: 'success' }), 1);
    assert.equal(sample(text, 'istio_cni_repair_pods_repaired_total', { type: 'label', result: 'fail' }), undefined);
  });

  it('counts a re-insert when the primary plugin rewrites its file without our entry', async () => {
    writeFileSync(join(node.netDir, '10-calico.conflist'), CALICO);
    await waitFor('our entry back', () => entryIsLast(join(node.netDir, '10-calico.conflist')), 3000);
    const text = await scrapeUntil('the re-insert counted', (t) => sample(t, 'istio_cni_reinserts_total') === 1);
    assert.equal(sample(text, 'istio_cni_installs_total', { result: 'SUCCESS' }), 2);
    assert.equal(sample(text, 'istio_cni_install_ready'), 1);
  });

  it('answers only /metrics', async () => {
    assert.equal((await fetch(metricsUrl.replace('/metrics', '/other'))).status, 404);
    assert.equal((await fetch(metricsUrl, { method: 'POST' })).status, 405);
  });
});
