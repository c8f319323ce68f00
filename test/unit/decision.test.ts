import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';
import { decideFromAnnotations, decideFromArgs, decideFromPod, podForDecision } from '../../src/kube/decision.ts';
import { Pod } from '../../src/kube/pod.ts';
import { captureSettingsFor } from '../../src/redirect/profile.ts';
import { CaptureDefaults } from '../../src/redirect/settings.ts';

function pod(overrides: { annotations?: Record<string, string>; labels?: Record<string, string>; containers?: object[]; initContainers?: object[] } = {}): Pod {
  return Pod.parse({
    metadata: {
      name: 'web-0',
      namespace: 'default',
      annotations: overrides.annotations ?? { 'sidecar.istio.io/status': '{"containers":["istio-proxy"]}' },
      labels: overrides.labels,
    },
    spec: {
      containers: overrides.containers ?? [{ name: 'app' }, { name: 'istio-proxy', env: [{ name: 'ISTIO_META_X', value: '1' }] }],
      initContainers: overrides.initContainers ?? [{ name: 'istio-validation' }],
    },
  });
}

describe('decision from CNI_ARGS', () => {
  const excluded = { excludeNamespaces: new Set(['kube-system']), podNamespace: 'istio-system' };
  it('passes a sandbox with no pod name or namespace', () => {
    assert.equal((decideFromArgs({ ignoreUnknown: true, podName: 'x', podNamespace: undefined, infraContainerId: undefined, podUid: undefined }, excluded) as { redirect: boolean }).redirect, false);
  });
  it('passes an excluded namespace without asking the API', () => {
    const decision = decideFromArgs({ ignoreUnknown: false, podName: 'coredns', podNamespace: 'kube-system', infraContainerId: undefined, podUid: undefined }, excluded);
    assert.deepEqual(decision, { redirect: false, reason: 'namespace kube-system is excluded' });
  });
  it("passes the plugin's own istio-cni-node pods in pod_namespace only", () => {
    const own = decideFromArgs({ ignoreUnknown: false, podName: 'istio-cni-node-x7k2p', podNamespace: 'istio-system', infraContainerId: undefined, podUid: undefined }, excluded);
    assert.equal((own as { redirect: boolean }).redirect, false);
    assert.match((own as { reason: string }).reason, /istio-cni-node-\* pod of the plugin itself/);
    const elsewhere = decideFromArgs({ ignoreUnknown: false, podName: 'istio-cni-node-x7k2p', podNamespace: 'default', infraContainerId: undefined, podUid: undefined }, excluded);
    assert.deepEqual(elsewhere, { namespace: 'default', name: 'istio-cni-node-x7k2p' });
  });
  it('asks for the pod otherwise', () => {
    assert.deepEqual(decideFromArgs({ ignoreUnknown: false, podName: 'web-0', podNamespace: 'default', infraContainerId: undefined, podUid: undefined }, excluded), { namespace: 'default', name: 'web-0' });
  });
});

describe('decision from the pod', () => {
  it('redirects an injected pod', () => {
    assert.equal(decideFromPod(pod()).redirect, true);
  });
  it('redirects a pod whose proxy is a native sidecar', () => {
    const decision = decideFromPod(pod({ containers: [{ name: 'app' }], initContainers: [{ name: 'istio-proxy', restartPolicy: 'Always' }] }));
    assert.equal(decision.redirect, true);
  });
  it('passes a pod with istio-init', () => {
    assert.match(decideFromPod(pod({ initContainers: [{ name: 'istio-init' }] })).reason, /istio-init/);
  });
  it('passes a pod without istio-proxy', () => {
    assert.match(decideFromPod(pod({ containers: [{ name: 'app' }] })).reason, /no istio-proxy/);
    // An init container named istio-proxy that is not a sidecar does not count.
    assert.equal(decideFromPod(pod({ containers: [{ name: 'app' }], initContainers: [{ name: 'istio-proxy' }] })).redirect, false);
  });
  it('passes a pod whose proxy has DISABLE_ENVOY=true', () => {
    assert.match(decideFromPod(pod({ containers: [{ name: 'istio-proxy', env: [{ name: 'DISABLE_ENVOY', value: 'true' }] }] })).reason, /DISABLE_ENVOY/);
  });
  it('passes a pod opted out, the label winning over the annotation', () => {
    const status = { 'sidecar.istio.io/status': '{}' };
    assert.equal(decideFromPod(pod({ annotations: { ...status, 'sidecar.istio.io/inject': 'false' } })).redirect, false);
    assert.equal(decideFromPod(pod({ annotations: { ...status, 'sidecar.istio.io/inject': 'false' }, labels: { 'sidecar.istio.io/inject': 'true' } })).redirect, true);
    assert.equal(decideFromPod(pod({ annotations: { ...status, 'sidecar.istio.io/inject': 'true' }, labels: { 'sidecar.istio.io/inject': 'false' } })).redirect, false);
  });
  it('passes a pod without the status annotation', () => {
    assert.match(decideFromPod(pod({ annotations: {} })).reason, /sidecar.istio.io\/status/);
  });
});

describe('decision from runtime-supplied annotations', () => {
  it('passes a pod without the status annotation, whatever else it says', () => {
    assert.equal(decideFromAnnotations({ 'sidecar.istio.io/inject': 'true', 'prometheus.io/scrape': 'true' })?.redirect, false);
  });
  it('leaves an injected pod to the API: only its containers can tell', () => {
    assert.equal(decideFromAnnotations({ 'sidecar.istio.io/status': '{}', 'sidecar.istio.io/inject': 'false' }), undefined);
  });
});

describe('the pod as the node-local cache hands it over', () => {
  const fixtures = join(dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'pods');
  const manifests = readdirSync(fixtures).map((file) => ({ file, pod: Pod.parse(parseYaml(readFileSync(join(fixtures, file), 'utf8'))) }));
  const annotated = (base: Pod, annotations: Record<string, string>): Pod => ({ ...base, metadata: { ...base.metadata, annotations: { ...base.metadata.annotations, ...annotations } } });
  const injected = manifests.find((m) => m.file === 'injected.yaml')!.pod;
  const withProxyEnv = (base: Pod, names: string[]): Pod => ({
    ...base,
    spec: { ...base.spec, containers: base.spec.containers.map((c) => (c.name === 'istio-proxy' ? { ...c, env: [...(c.env ?? []), ...names.map((name) => ({ name, value: 'true' }))] } : c)) },
  });
  const variants = [
    ...manifests,
    { file: 'injected + traffic annotations', pod: annotated(injected, { 'traffic.sidecar.istio.io/excludeInboundPorts': '8080', 'traffic.sidecar.istio.io/includeOutboundIPRanges': '10.0.0.0/8', 'sidecar.istio.io/interceptionMode': 'TPROXY', 'istio.io/reroute-virtual-interfaces': 'eth1', 'unrelated.example.com/x': 'y' }) },
    { file: 'injected + inject annotation false', pod: annotated(injected, { 'sidecar.istio.io/inject': 'false' }) },
    { file: 'injected + istio-current annotations and variables', pod: withProxyEnv(annotated(injected, { 'traffic.sidecar.istio.io/excludeInterfaces': 'eth1' }), ['INVALID_DROP', 'ISTIO_DUAL_STACK', 'ISTIO_META_DNS_CAPTURE']) },
  ];
  const defaults = CaptureDefaults.parse(undefined);
  const outcome = (p: Pod) => {
    const decision = decideFromPod(p);
    if (!decision.redirect) return { decision };
    const input = { annotations: decision.annotations, proxy: decision.proxy, podIps: ['10.0.0.5/24', 'fd00::5/64'], defaults };
    return { reason: decision.reason, settings: (['seed', 'istio-current', 'auto'] as const).map((profile) => captureSettingsFor(input, profile)) };
  };

  for (const { file, pod } of variants) {
    it(`${file}: the same decision and rules from the cut-down pod as from the whole one`, () => {
      assert.deepEqual(outcome(podForDecision(pod)), outcome(pod));
    });
  }

  it('carries only the istio containers, the variables read, and the annotations and labels read', () => {
    const cut = podForDecision(annotated(injected, { 'unrelated.example.com/x': 'y' }));
    assert.deepEqual(cut.spec.containers.map((c) => c.name), ['istio-proxy']);
    assert.ok(cut.spec.containers[0]!.env!.every((e) => ['DISABLE_ENVOY', 'ISTIO_META_DNS_CAPTURE', 'INVALID_DROP', 'ISTIO_DUAL_STACK'].includes(e.name)));
    assert.equal(cut.metadata.annotations!['unrelated.example.com/x'], undefined);
    assert.ok(cut.metadata.annotations!['sidecar.istio.io/status'] !== undefined);
    assert.equal(cut.metadata.uid, injected.metadata.uid);
  });
});
