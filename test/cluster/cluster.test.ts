/**
 * The plugin on a real one-node Kubernetes cluster (test/harness/cluster.ts): etcd,
 * kube-apiserver, kube-controller-manager, kube-scheduler and kubelet v1.37.2 built from source,
 * Debian's containerd 1.6, a bridge + host-local conflist standing in for calico, our DaemonSet
 * installed by `helm install` of deploy/charts/istio-cni with cluster/values.yaml, and pods injected
 * by `istioctl kube-inject`.
 * The cluster comes up once for this file (a cluster left from before is taken down first) and
 * goes down at its end; the tests run in order, each building on the ones before.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { parse as parseYaml, parseAllDocuments } from 'yaml';
import * as h from '../harness/index.ts';
import * as c from '../harness/cluster.ts';
import { leftovers, machineSnapshot, type MachineSnapshot, type SandboxRef } from '../harness/cluster-host.ts';
import { PROXY_IMAGE } from '../harness/cluster-images.ts';
import { kubeInject, makeMeshNamespace } from '../harness/istio-inject.ts';
import { startupRaceScenarios } from './race.ts';

/** ISTIO_CNI_TEST_BACKEND=nftables installs the chart with iptablesBackend=nftables (default: the node's iptables, nft). */
const BACKEND = h.captureBackend();
const SEED = h.seedRules(BACKEND);
const NS = 'icni-test';
const WEB = readFileSync(join(h.REPO_ROOT, 'cluster', 'examples', 'web.yaml'), 'utf8');
const KUBECONFIG = join(c.paths.cniNet, 'ZZZ-istio-cni-kubeconfig');

interface Container {
  name: string;
  image: string;
  securityContext?: { runAsUser?: number };
}
interface ContainerStatus {
  name: string;
  state: { terminated?: { exitCode: number }; running?: object };
}
interface Pod {
  metadata: { name: string; namespace: string; uid: string; annotations?: Record<string, string> };
  spec: { initContainers?: Container[]; containers: Container[] };
  status: { phase: string; podIP: string; initContainerStatuses?: ContainerStatus[]; containerStatuses?: ContainerStatus[] };
}

interface K8sObject {
  kind: string;
  data?: Record<string, string>;
  [key: string]: unknown;
}

const sortByKind = (docs: K8sObject[]) => [...docs].sort((x, y) => x.kind.localeCompare(y.kind));

/** Every leaf where two JSON values differ, as "path: before -> after", sorted. */
function differences(a: unknown, b: unknown, path = ''): string[] {
  if (typeof a === 'object' && a !== null && typeof b === 'object' && b !== null && Array.isArray(a) === Array.isArray(b)) {
    const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
    return [...keys].flatMap((k) => differences((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k], Array.isArray(a) ? `${path}[${k}]` : `${path}.${k}`)).sort();
  }
  return JSON.stringify(a) === JSON.stringify(b) ? [] : [`${path}: ${JSON.stringify(a)} -> ${JSON.stringify(b)}`];
}

const sha256 = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');

/** A pod of the stand-in's application, with nothing of Istio's. */
const plainPod = (name: string, namespace: string) => JSON.stringify({
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { name, namespace },
  spec: {
    terminationGracePeriodSeconds: 2,
    containers: [{ name: 'app', image: PROXY_IMAGE, imagePullPolicy: 'IfNotPresent', command: ['/usr/local/bin/standin', 'app', '8080'] }],
  },
});

async function getPod(namespace: string, name: string): Promise<Pod> {
  return c.kubectlJson<Pod>(['-n', namespace, 'get', 'pod', name]);
}

async function webPods(): Promise<Pod[]> {
  return (await c.kubectlJson<{ items: Pod[] }>(['-n', NS, 'get', 'pods', '-l', 'app=web'])).items;
}

/** The decoded claims of a JWT (the token is the API server's to verify; whoami below does). */
function jwtClaims(token: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString('utf8')) as Record<string, unknown>;
}

/** `kubectl exec` into a pod's container: `standin connect` and the JSON line the far end answered. */
async function connectFrom(pod: Pod, container: string, target: string): Promise<{ pod: string; listener: number; original_dst: string; peer: string }> {
  const r = await c.kubectl(['-n', pod.metadata.namespace, 'exec', pod.metadata.name, '-c', container, '--', '/usr/local/bin/standin', 'connect', target]);
  return JSON.parse(r.stdout) as { pod: string; listener: number; original_dst: string; peer: string };
}

/** `kubectl auth can-i --list` as a user (kubectl has no JSON for it): one "what verb" per permission. */
async function permissions(user: string): Promise<Set<string>> {
  const [header, ...rows] = (await c.kubectl(['auth', 'can-i', '--list', `--as=${user}`])).stdout.trimEnd().split('\n');
  // Columns: Resources, Non-Resource URLs, Resource Names, Verbs, at the header's offsets.
  const at = ['Non-Resource URLs', 'Resource Names', 'Verbs'].map((name) => header!.indexOf(name));
  const out = new Set<string>();
  for (const row of rows) {
    const [resource, urls, names, verbs] = [row.slice(0, at[0]), row.slice(at[0], at[1]), row.slice(at[1], at[2]), row.slice(at[2])].map((x) => x.trim());
    const what = [resource, urls === '[]' ? '' : urls, names === '[]' ? '' : names].filter(Boolean).join(' ');
    for (const verb of verbs!.replace(/^\[|\]$/g, '').split(/\s+/).filter(Boolean)) out.add(`${what} ${verb}`);
  }
  return out;
}

describe('on a real one-node cluster', { sequential: true }, () => {
  let machineBefore: MachineSnapshot;
  /** Every sandbox the tests saw, for the leftovers check. */
  const sandboxes: SandboxRef[] = [];

  beforeAll(async () => {
    await c.clusterDown({ log: () => undefined });
    machineBefore = machineSnapshot();
    await c.clusterUp();
    await makeMeshNamespace(NS);
  });

  afterAll(async () => {
    await c.clusterDown({ log: () => undefined });
    await h.cleanupAll();
  });

  it('the chart is installed as a Helm release, and the cluster\'s values change deploy/istio-cni.yaml only in the image, the node\'s paths and the guards (the taint, repair\'s mode)', async () => {
    const releases = JSON.parse((await c.helm(['list', '--namespace', 'kube-system', '--output', 'json'])).stdout) as Array<{ name: string; status: string; chart: string }>;
    assert.deepEqual(releases.map((r) => [r.name, r.status, r.chart]), [[c.RELEASE, 'deployed', 'istio-cni-0.1.0']]);
    const documents = (text: string) => parseAllDocuments(text).map((d) => d.toJS() as K8sObject).filter((d) => d !== null);
    const installed = documents((await c.helm(['get', 'manifest', c.RELEASE, '--namespace', 'kube-system'])).stdout);
    const file = documents(readFileSync(join(h.REPO_ROOT, 'deploy', 'istio-cni.yaml'), 'utf8'));
    const base = documents((await c.kubectl(['kustomize', join(h.REPO_ROOT, 'deploy')])).stdout);
    assert.deepEqual(sortByKind(base), sortByKind(file), 'deploy/ as a kustomize base is deploy/istio-cni.yaml as it is');
    // The ConfigMap's entry is JSON in a string: compare it parsed. The container's environment
    // is compared by name.
    const parsed = (docs: K8sObject[]) => sortByKind(docs).map((d) => {
      if (d.kind === 'ConfigMap') return { ...d, data: { cni_network_config: JSON.parse(d.data!.cni_network_config!) } };
      if (d.kind !== 'DaemonSet') return d;
      const ds = structuredClone(d) as unknown as { spec: { template: { spec: { containers: Array<{ env: unknown }> } } } };
      for (const container of ds.spec.template.spec.containers) {
        container.env = Object.fromEntries((container.env as Array<{ name: string }>).map((e) => [e.name, e]));
      }
      return ds;
    });
    assert.deepEqual(differences(parsed(file), parsed(installed)), [
      '[0].rules[0].verbs[3]: "patch" -> "delete"',
      '[0].rules[1]: undefined -> {"apiGroups":[""],"resources":["nodes"],"verbs":["get","patch"]}',
      '[2].data.cni_network_config.kubernetes.cni_bin_dir: "/opt/cni/bin" -> "/var/lib/icni-cluster/cni/bin"',
      '[2].data.cni_network_config.log_file: "/var/log/istio-cni.log" -> "/var/lib/icni-cluster/cni/istio-cni.log"',
      '[3].spec.template.spec.containers[0].env.CNI_NET_DIR.value: "/etc/cni/net.d" -> "/var/lib/icni-cluster/cni/net.d"',
      '[3].spec.template.spec.containers[0].env.NODE_READINESS_TAINT: undefined -> {"name":"NODE_READINESS_TAINT","value":"true"}',
      '[3].spec.template.spec.containers[0].env.POD_CACHE_SOCKET.value: "/var/run/istio-cni/pod-cache.sock" -> "/var/lib/icni-cluster/pod-cache/pod-cache.sock"',
      '[3].spec.template.spec.containers[0].env.REPAIR_DELETE_PODS.value: "false" -> "true"',
      '[3].spec.template.spec.containers[0].env.REPAIR_LABEL_PODS.value: "true" -> "false"',
      '[3].spec.template.spec.containers[0].image: "istio-cni:0.1.0" -> "localhost/istio-cni:cluster"',
      '[3].spec.template.spec.containers[0].volumeMounts[2].mountPath: "/var/run/istio-cni" -> "/var/lib/icni-cluster/pod-cache"',
      '[3].spec.template.spec.volumes[0].hostPath.path: "/opt/cni/bin" -> "/var/lib/icni-cluster/cni/bin"',
      '[3].spec.template.spec.volumes[1].hostPath.path: "/etc/cni/net.d" -> "/var/lib/icni-cluster/cni/net.d"',
      '[3].spec.template.spec.volumes[2].hostPath.path: "/var/run/istio-cni" -> "/var/lib/icni-cluster/pod-cache"',
      ...(BACKEND === 'nftables' ? ['[2].data.cni_network_config.iptables_backend: "auto" -> "nftables"'] : []),
    ].sort());
  });

  it('1. up: the DaemonSet is Ready, our entry is last in the node\'s conflist, once, and the kubeconfig is 0600 with the pod\'s projected token', async () => {
    const ds = await c.kubectlJson<{ status: { desiredNumberScheduled: number; numberReady: number } }>(['-n', 'kube-system', 'get', 'daemonset', 'istio-cni-node']);
    assert.equal(ds.status.desiredNumberScheduled, 1);
    assert.equal(ds.status.numberReady, 1);

    assert.deepEqual(readdirSync(c.paths.cniNet).sort(), [c.PRIMARY_CONFLIST, 'ZZZ-istio-cni-kubeconfig']);
    const conflist = JSON.parse(readFileSync(join(c.paths.cniNet, c.PRIMARY_CONFLIST), 'utf8')) as { plugins: Array<{ type: string }> };
    assert.deepEqual(conflist.plugins.map((p) => p.type), ['bridge', 'istio-cni']);
    const primary = JSON.parse(c.primaryConflist()) as typeof conflist;
    assert.deepEqual({ ...conflist, plugins: conflist.plugins.slice(0, -1) }, primary, 'the primary plugin\'s part is untouched');
    assert.equal(sha256(join(c.paths.cniBin, 'istio-cni')), sha256(h.DEFAULT_ISTIO_CNI_BIN), 'the executable on the node is the one built here');

    assert.equal(statSync(KUBECONFIG).mode & 0o777, 0o600);
    const kubeconfig = parseYaml(readFileSync(KUBECONFIG, 'utf8')) as { clusters: Array<{ cluster: { server: string } }>; users: Array<{ user: { token: string } }> };
    assert.equal(kubeconfig.clusters[0]!.cluster.server, `https://${c.NET.apiServiceIp}:443`, 'the kubernetes service, as the pod saw it');
    const claims = jwtClaims(kubeconfig.users[0]!.user.token);
    const [dsPod] = (await c.kubectlJson<{ items: Pod[] }>(['-n', 'kube-system', 'get', 'pods', '-l', 'app.kubernetes.io/name=istio-cni'])).items;
    // A projected token is bound to its pod (a legacy Secret token names no pod and never expires).
    assert.deepEqual((claims['kubernetes.io'] as { pod: unknown }).pod, { name: dsPod!.metadata.name, uid: dsPod!.metadata.uid });
    assert.equal(claims.sub, c.PLUGIN_USER);
    assert.ok(typeof claims.exp === 'number');
    const whoami = await c.kubectl(['--kubeconfig', KUBECONFIG, 'auth', 'whoami', '-o', 'jsonpath={.status.userInfo.username}']);
    assert.equal(whoami.stdout, c.PLUGIN_USER, 'the API server accepts the token');
  });

  it('cluster.sh up a second time finds the cluster up and restarts nothing', async () => {
    const pids = (await c.clusterStatus()).components.map((x) => x.pid);
    assert.ok(pids.every((pid) => pid !== undefined));
    const r = await h.run(['/usr/bin/bash', join(h.REPO_ROOT, 'scripts', 'cluster.sh'), 'up'], { timeoutMs: 600_000, env: h.minimalEnv({ HOME: process.env.HOME ?? '/root' }) });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /^cluster: already up$/m);
    assert.deepEqual((await c.clusterStatus()).components.map((x) => x.pid), pids);
  });

  let web: Pod[] = [];

  it('2. an injected Deployment of 2: pods Running, istio-validation exited 0, each pod\'s netns holds exactly the seed\'s rules', async () => {
    const injected = await kubeInject(WEB);
    const template = (parseAllDocuments(injected)[0]!.toJS() as { spec: { template: { spec: { initContainers: Container[]; containers: Container[] } } } }).spec.template.spec;
    assert.deepEqual(template.initContainers.map((x) => x.name), ['istio-validation'], 'CNI mode: no istio-init');
    assert.ok(template.containers.some((x) => x.name === 'istio-proxy' && x.image === PROXY_IMAGE), 'the proxy is the stand-in');
    await c.kubectl(['-n', NS, 'apply', '-f', '-'], { input: injected });
    await c.kubectl(['-n', NS, 'rollout', 'status', 'deployment/web', '--timeout=180s'], { timeoutMs: 200_000 });

    web = await webPods();
    assert.equal(web.length, 2);
    const lookups = c.auditEvents();
    for (const pod of web) {
      assert.equal(pod.status.phase, 'Running');
      const validation = pod.status.initContainerStatuses?.find((s) => s.name === 'istio-validation');
      assert.equal(validation?.state.terminated?.exitCode, 0, JSON.stringify(validation));
      const validateLog = await c.kubectl(['-n', NS, 'logs', pod.metadata.name, '-c', 'istio-validation']);
      assert.match(validateLog.stdout, /^istio-cni validate: traffic capture works/, 'our validate ran as istio-validation');

      const sandbox = await c.podSandbox(pod.metadata.uid);
      sandboxes.push(sandbox);
      assert.deepEqual(await h.natRules(sandbox.netns, BACKEND), SEED);
      assert.ok(await h.iptablesIsEmpty(sandbox.netns, 'legacy'), 'nothing in the other backend');
      const add = c.pluginLog().find((l) => l.verb === 'ADD' && l.containerId === sandbox.id);
      assert.equal(add?.decision, 'redirect', JSON.stringify(add));
      assert.equal(add?.pod, `${NS}/${pod.metadata.name}`);
      // The plugin had the pod from the installer's node-local cache, which watches the API server.
      assert.equal(add?.podSource, 'cache', JSON.stringify(add));
      assert.ok(!lookups.some((e) => e.objectRef?.name === pod.metadata.name), `no request for ${pod.metadata.name} itself`);
    }
    const watches = lookups.filter((e) => e.objectRef?.resource === 'pods' && ['list', 'watch'].includes(e.verb));
    assert.ok(watches.length > 0 && watches.every((e) => e.requestURI.includes(`fieldSelector=spec.nodeName%3D${c.NODE_NAME}`)),
      `the installer's cache lists and watches this node's pods only: ${watches.map((e) => e.requestURI).join(' ')}`);
  });

  it('3. traffic over the bridge: A → B is captured on A\'s 15001 with B as the original destination; B\'s inbound lands on B\'s 15006; uid 1337 is not captured', async () => {
    const [a, b] = web as [Pod, Pod];
    const target = `${b.status.podIP}:8080`;
    const proxy = a.spec.containers.find((x) => x.name === 'istio-proxy')!;
    assert.equal(proxy.securityContext?.runAsUser, 1337, 'the injected proxy runs as 1337');

    const outbound = await connectFrom(a, 'app', target);
    assert.deepEqual({ pod: outbound.pod, listener: outbound.listener, original_dst: outbound.original_dst },
      { pod: a.metadata.name, listener: 15001, original_dst: target });

    // The proxy's own connection leaves A uncaptured, crosses the bridge, and B's inbound rules
    // send it to B's 15006.
    const inbound = await connectFrom(a, 'istio-proxy', target);
    assert.deepEqual({ pod: inbound.pod, listener: inbound.listener, original_dst: inbound.original_dst },
      { pod: b.metadata.name, listener: 15006, original_dst: target });
    assert.equal(inbound.peer.split(':')[0], a.status.podIP, 'from A\'s pod IP, over the bridge');
  });

  it('4. an uninjected pod and a kube-system pod get no rules, and the plugin made no API request for them', async () => {
    const pods = [['plain', NS], ['plain', 'kube-system']] as const;
    for (const [name, namespace] of pods) await c.kubectl(['apply', '-f', '-'], { input: plainPod(name, namespace) });
    for (const [name, namespace] of pods) await c.kubectl(['-n', namespace, 'wait', '--for=condition=Ready', `pod/${name}`, '--timeout=120s'], { timeoutMs: 130_000 });

    const reasons: Record<string, RegExp> = { [NS]: /runtime-supplied annotations have no sidecar\.istio\.io\/status/, 'kube-system': /namespace kube-system is excluded/ };
    for (const [name, namespace] of pods) {
      const pod = await getPod(namespace, name);
      const sandbox = await c.podSandbox(pod.metadata.uid);
      sandboxes.push(sandbox);
      for (const backend of ['nft', 'legacy', 'nftables'] as const) assert.deepEqual(await h.ownedRules(sandbox.netns, backend), [], `${namespace}/${name} ${backend}`);
      const add = c.pluginLog().find((l) => l.verb === 'ADD' && l.containerId === sandbox.id);
      assert.equal(add?.decision, 'pass', JSON.stringify(add));
      assert.match(add?.reason ?? '', reasons[namespace]!);
      assert.equal(add?.apiAttempts, 0);
      const requests = c.auditEvents().filter((e) => e.objectRef?.namespace === namespace && e.objectRef.name === name);
      assert.deepEqual(requests, [], `the API server saw no request by ${c.PLUGIN_USER} for ${namespace}/${name}`);
    }
  });

  it('4b. metrics: the DaemonSet\'s port 15014 on the node counts the kubelet\'s ADDs as the plugin reported them, the cache\'s answers and the install', async () => {
    const res = await fetch(`http://${c.NET.nodeIp}:15014/metrics`);
    assert.equal(res.status, 200);
    const text = await res.text();
    const lines = (prefix: string) => text.split('\n').filter((l) => l.startsWith(prefix)).sort();
    // The two injected web pods, the two pods passed in 4.; nothing deleted yet.
    assert.deepEqual(lines('istio_cni_plugin_verbs_total{'), [
      'istio_cni_plugin_verbs_total{verb="ADD",decision="pass",code="0"} 2',
      'istio_cni_plugin_verbs_total{verb="ADD",decision="redirect",code="0"} 2',
    ]);
    assert.ok(lines('istio_cni_plugin_verb_duration_seconds_count{').includes('istio_cni_plugin_verb_duration_seconds_count{verb="ADD",decision="redirect"} 2'), text);
    assert.deepEqual(lines('istio_cni_pod_cache_answers_total{'), ['istio_cni_pod_cache_answers_total{found="true"} 2']);
    assert.deepEqual(lines('istio_cni_installs_total{'), ['istio_cni_installs_total{result="SUCCESS"} 1']);
    assert.deepEqual(lines('istio_cni_install_ready '), ['istio_cni_install_ready 1']);
    assert.deepEqual(lines('istio_cni_repair_pods_repaired_total{'), [], 'no pod needed repair');
  });

  it('5. least privilege: the DaemonSet\'s ServiceAccount can do what the plugin, repair and the taint need and nothing more', async () => {
    const granted = await permissions(c.PLUGIN_USER);
    // What every ServiceAccount may do (discovery, self-reviews): a ServiceAccount with no binding.
    const baseline = await permissions('system:serviceaccount:kube-system:icni-no-binding');
    const extra = [...granted].filter((p) => !baseline.has(p)).sort();
    // nodes get, patch: the readiness taint (taint.enabled); pods get: the plugin's direct lookup
    // (when the pod cache misses); list, watch: the installer's pod cache and repair (one watch for
    // both); delete: repair's delete mode (cluster/values.yaml; label mode grants patch instead).
    assert.deepEqual(extra, ['nodes get', 'nodes patch', 'pods delete', 'pods get', 'pods list', 'pods watch']);
    // What the ServiceAccount did so far, but for this file's own kubectl (whoami in 1.): the
    // installer read its node (no taint to take off), the pod cache and repair listed and watched
    // this node's pods; every request said who it is.
    const events = c.auditEvents().filter((e) => !e.userAgent?.startsWith('kubectl/'));
    assert.deepEqual([...new Set(events.map((e) => `${e.objectRef?.resource ?? e.requestURI} ${e.verb}`))].sort(), ['nodes get', 'pods list', 'pods watch']);
    const { version } = JSON.parse(readFileSync(join(h.REPO_ROOT, 'package.json'), 'utf8')) as { version: string };
    assert.deepEqual([...new Set(events.map((e) => e.userAgent))], [`istio-cni/${version}`], 'the taint\'s node read, the list and the watch (all @kubernetes/client-node) say who they are');
  });

  it('6a. kubectl delete pod: the kubelet\'s DEL takes our chains out, then containerd removes the netns', async () => {
    const pod = web[0]!;
    const sandbox = await c.podSandbox(pod.metadata.uid);
    // Keep the netns alive past its removal to read what the DEL left in it.
    const keep = join(h.makeTempDir('icni-keep-'), 'netns');
    writeFileSync(keep, '');
    await h.runOk(['/usr/bin/mount', '--bind', sandbox.netns, keep]);
    const unmount = h.registerCleanup(`umount ${keep}`, () => void spawnSync('/usr/bin/umount', [keep]));
    try {
      assert.deepEqual(await h.natRules(keep, BACKEND), SEED);
      await c.kubectl(['-n', NS, 'delete', 'pod', pod.metadata.name, '--wait=true', '--timeout=60s'], { timeoutMs: 70_000 });
      await c.waitUntil(`${sandbox.netns} removed`, async () => !existsSync(sandbox.netns), 60_000);
      assert.deepEqual(await h.ownedRules(keep, BACKEND), [], 'nothing of ours left');
      const del = c.pluginLog().filter((l) => l.verb === 'DEL' && l.containerId === sandbox.id);
      assert.ok(del.length >= 1 && del.every((l) => l.msg === 'DEL ok'), JSON.stringify(del));
    } finally {
      await unmount();
    }
  });

  startupRaceScenarios(sandboxes);

  it('6b. helm uninstall: the conflist is the primary plugin\'s again, executable, kubeconfig and pod cache socket gone', async () => {
    await c.uninstallDaemonSet();
    await c.waitUntil('the installer\'s clean-up', async () => readdirSync(c.paths.cniNet).length === 1 || readdirSync(c.paths.cniNet).join(' '), 30_000);
    assert.deepEqual(readdirSync(c.paths.cniNet), [c.PRIMARY_CONFLIST]);
    assert.deepEqual(JSON.parse(readFileSync(join(c.paths.cniNet, c.PRIMARY_CONFLIST), 'utf8')), JSON.parse(c.primaryConflist()));
    assert.deepEqual(readdirSync(c.paths.cniBin).sort(), ['bridge', 'host-local', 'loopback']);
    assert.deepEqual(readdirSync(c.paths.podCache), [], 'the pod cache\'s socket is gone');
  });

  it('7. cluster.sh down leaves the machine as it found it', async (t) => {
    for (const pod of await webPods()) sandboxes.push(await c.podSandbox(pod.metadata.uid));
    const r = await h.run(['/usr/bin/bash', join(h.REPO_ROOT, 'scripts', 'cluster.sh'), 'down'], { timeoutMs: 300_000, env: h.minimalEnv({ HOME: process.env.HOME ?? '/root' }) });
    assert.equal(r.code, 0, r.stderr);
    t.annotate(r.stderr.trim().split('\n').at(-2) ?? '');
    assert.deepEqual(leftovers(machineBefore, c.CLUSTER_DIR, sandboxes), []);
  });
});
