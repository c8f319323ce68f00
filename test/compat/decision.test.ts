/**
 * Which pods are captured, ours against Istio's own istio-cni plugin: each case through the same
 * libcni chain (ptp + host-local, then the plugin) against the same fake API server, pods as
 * `kubectl get pod -o yaml` prints them (test/fixtures/pods) and variants of them. The decision must
 * be the same, or be one of the listed differences (listed.ts, README).
 */
import assert from 'node:assert/strict';
import { mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { parse as parseYaml } from 'yaml';
import * as h from '../harness/index.ts';
import { istioPrograms } from '../harness/istio.ts';
import { DECISION_DIFFERENCES } from './listed.ts';

after(h.cleanupAll);

const FIXTURES = new URL('../fixtures/pods/', import.meta.url);
const fixtures = new Map(readdirSync(FIXTURES).map((file) => [file.replace(/\.yaml$/, ''), parseYaml(readFileSync(new URL(file, FIXTURES), 'utf8')) as h.Pod]));

type Container = { name: string; args?: string[]; env?: { name: string; value?: string }[]; restartPolicy?: string };
const spec = (pod: h.Pod) => pod.spec as { containers: Container[]; initContainers?: Container[] };

/** A fixture under another name, changed by `edit`. */
function variant(fixture: string, name: string, edit: (pod: h.Pod) => void): h.Pod {
  const pod = structuredClone(fixtures.get(fixture)!);
  pod.metadata = { ...pod.metadata, name };
  edit(pod);
  return pod;
}
const proxyOf = (pod: h.Pod) => spec(pod).containers.find((c) => c.name === 'istio-proxy')!;
const annotate = (key: string, value: string) => (pod: h.Pod) => void ((pod.metadata.annotations as Record<string, string>)[key] = value);
const setEnv = (name: string, value: string) => (pod: h.Pod) => void (proxyOf(pod).env = [...(proxyOf(pod).env ?? []), { name, value }]);

/** Case name → the pod (undefined: a sandbox with no pod in CNI_ARGS). */
const CASES: [string, h.Pod | undefined][] = [
  ...[...fixtures].map(([name, pod]): [string, h.Pod] => [name, pod]),
  ['no-k8s-args', undefined],
  ['inject-annotation-false', variant('injected', 'inject-annotation-false', annotate('sidecar.istio.io/inject', 'false'))],
  ['inject-annotation-no', variant('injected', 'inject-no', annotate('sidecar.istio.io/inject', 'no'))],
  ['inject-annotation-F', variant('injected', 'inject-f', annotate('sidecar.istio.io/inject', 'F'))],
  ['inject-annotation-FALSE', variant('injected', 'inject-false-upper', annotate('sidecar.istio.io/inject', 'FALSE'))],
  ['disable-envoy-1', variant('injected', 'disable-envoy-1', setEnv('DISABLE_ENVOY', '1'))],
  ['disable-envoy-TRUE', variant('injected', 'disable-envoy-upper', setEnv('DISABLE_ENVOY', 'TRUE'))],
  ['gateway-proxy-router', variant('injected', 'gateway', (pod) => void (proxyOf(pod).args = ['proxy', 'router', '--domain', '$(POD_NAMESPACE).svc.cluster.local']))],
  [
    'istio-proxy-plain-init-container',
    variant('native-sidecar', 'plain-init', (pod) => {
      for (const c of spec(pod).initContainers ?? []) delete c.restartPolicy;
    }),
  ],
];

describe('the capture decision, ours and Istio\'s istio-cni plugin', () => {
  let e: h.E2E;
  let istioPath: string;
  before(async () => {
    const istio = await istioPrograms();
    const runDir = h.makeTempDir('icni-istio-run-');
    mkdirSync(runDir, { recursive: true });
    e = await h.makeE2E({
      tag: 'decide',
      pods: CASES.flatMap(([, pod]) => (pod ? [pod] : [])),
      conflist: { iptablesBackend: 'nft', istio: { exclude_namespaces: ['kube-system'], pod_namespace: 'istio-system', cni_agent_run_dir: runDir } },
    });
    e.api!.writeKubeconfig(runDir, { auth: 'token', caMode: 'data', fileName: 'istio-cni-kubeconfig' });
    istioPath = h.makeCniPath({ pluginBin: istio.istioCni });
  });

  /**
   * ADD through the chain with one plugin or the other and whether the pod netns then holds Istio's
   * chains, on either backend (Istio's plugin picks legacy once legacy tables exist), then clean up:
   * Istio's DEL leaves the netns alone (the runtime deletes it), ours takes both plugins' rules out.
   */
  async function captured(pod: h.Pod | undefined, cniPath: string): Promise<boolean> {
    const ref = pod ? { pod: pod.metadata.name, namespace: pod.metadata.namespace } : undefined;
    const add = await e.run('add', ref, { cniPath });
    assert.equal(add.code, 0, `${add.stdout}\n${add.stderr}`);
    const rules = [...(await h.iptablesS(e.topo.pod, 'nft')), ...(await h.iptablesS(e.topo.pod, 'legacy'))];
    assert.equal((await e.run('del', ref, { cniPath: e.cniPath })).code, 0);
    const legacyDel = await h.runPlugin(h.DEFAULT_ISTIO_CNI_BIN, { command: 'DEL', stdin: { ...e.pluginStdin(), iptables_backend: 'legacy' }, containerId: 'c', netns: e.topo.pod, ifName: 'eth0', hostNetns: e.topo.node });
    assert.equal(legacyDel.code, 0, legacyDel.stdout);
    return rules.some((l) => l.includes('ISTIO_'));
  }

  for (const [name, pod] of CASES) {
    it(name, async () => {
      const ours = await captured(pod, e.cniPath);
      const istio = await captured(pod, istioPath);
      const listed = DECISION_DIFFERENCES.find((d) => d.case === name);
      if (listed) assert.deepEqual({ ours, istio }, { ours: listed.ours === 'capture', istio: listed.istio === 'capture' }, listed.why);
      else assert.equal(ours, istio, `ours ${ours ? 'captures' : 'passes'}, Istio's plugin ${istio ? 'captures' : 'passes'}`);
    });
  }

  it('every listed decision difference is a case here', () => {
    for (const d of DECISION_DIFFERENCES) assert.ok(CASES.some(([name]) => name === d.case), d.case);
  });
});
