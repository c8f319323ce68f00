/**
 * The Helm chart (deploy/charts/istio-cni), with helm built from its Go module (cluster/build.sh
 * helm): it lints, its default rendering is deploy/istio-cni.yaml byte for byte, Istio's value
 * names land where they should (and the installer accepts what they render), and every value or
 * combination the plugin does not support is refused with a message that says why.
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parseAllDocuments, stringify } from 'yaml';
import * as h from '../harness/index.ts';
import { kitBins } from '../harness/cluster.ts';
import { daemonSetEnv, find, hostMounts, MANIFEST, type K8sObject } from './manifest.ts';
import { CALICO, makeFakeNode, readConflist } from './node.ts';

after(h.cleanupAll);

const CHART = join(h.REPO_ROOT, 'deploy', 'charts', 'istio-cni');
let helm: string;

before(async () => {
  helm = join(await kitBins('helm'), 'helm');
});

/** `helm template` of the chart with these values (a values file, as an operator passes it). */
async function template(values: Record<string, unknown> = {}, namespace = 'kube-system'): Promise<h.RunResult> {
  const file = join(h.makeTempDir('icni-values-'), 'values.yaml');
  writeFileSync(file, stringify(values));
  return h.run([helm, 'template', 'istio-cni', CHART, '--namespace', namespace, '-f', file], { env: h.minimalEnv({ HOME: '/nonexistent' }) });
}

async function rendered(values: Record<string, unknown> = {}, namespace?: string): Promise<K8sObject[]> {
  const r = await template(values, namespace);
  assert.equal(r.code, 0, r.stderr);
  return parseAllDocuments(r.stdout).map((d) => d.toJS() as K8sObject).filter((o) => o !== null);
}

function entryOf(objects: K8sObject[]): Record<string, unknown> {
  return JSON.parse(find(objects, 'ConfigMap').data!.cni_network_config!) as Record<string, unknown>;
}

function podVerbs(objects: K8sObject[]): string[] {
  return find(objects, 'ClusterRole').rules!.filter((r) => r.resources.includes('pods')).flatMap((r) => r.verbs);
}

describe('the Helm chart', () => {
  it('passes helm lint --strict', async () => {
    const r = await h.run([helm, 'lint', '--strict', CHART], { env: h.minimalEnv({ HOME: '/nonexistent' }) });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /1 chart\(s\) linted, 0 chart\(s\) failed/);
  });

  it('rendered with its default values is deploy/istio-cni.yaml, byte for byte (scripts/render-deploy.sh writes it)', async () => {
    const r = await template();
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, readFileSync(MANIFEST, 'utf8'), 'deploy/istio-cni.yaml is stale: run bash scripts/render-deploy.sh');
  });

  it('puts Istio\'s value names where the installer and the plugin read them', async () => {
    const objects = await rendered(
      {
        hub: 'registry.example/mesh',
        tag: '1.2.3',
        cniBinDir: '/home/kubernetes/bin',
        cniConfDir: '/etc/cni/multus/net.d',
        cniConfFileName: '10-calico.conflist',
        excludeNamespaces: ['kube-system', 'monitoring'],
        global: { logging: { level: 'debug' }, imagePullPolicy: 'Always' },
        pluginLogFile: '/var/log/cni/istio-cni.log',
        rulesProfile: 'istio-current',
        iptablesBackend: 'legacy',
        podCache: { socketPath: '/run/icni/cache.sock' },
        repair: { labelPods: false, deletePods: true },
        taint: { enabled: true },
        resources: { requests: { cpu: '50m' } },
        tolerations: [{ key: 'dedicated', operator: 'Equal', value: 'mesh', effect: 'NoSchedule' }],
        priorityClassName: 'mesh-critical',
        podAnnotations: { team: 'mesh' },
      },
      'istio-system',
    );
    const env = daemonSetEnv(objects);
    const pod = find(objects, 'DaemonSet').spec!.template.spec;
    const container = pod.containers[0]!;
    assert.equal(container.image, 'registry.example/mesh/istio-cni:1.2.3');
    assert.equal((container as { imagePullPolicy?: string }).imagePullPolicy, 'Always');
    assert.equal(env.CNI_NET_DIR, '/etc/cni/multus/net.d');
    assert.equal(env.CNI_CONF_NAME, '10-calico.conflist');
    assert.equal(env.LOG_LEVEL, 'debug');
    assert.equal(env.POD_CACHE_SOCKET, '/run/icni/cache.sock');
    assert.deepEqual([env.REPAIR_ENABLED, env.REPAIR_LABEL_PODS, env.REPAIR_DELETE_PODS], ['true', 'false', 'true']);
    assert.equal(env.NODE_READINESS_TAINT, 'true');
    assert.equal(env.MONITORING_PORT, '15014');
    const mounts = hostMounts(objects);
    assert.equal(mounts.get('/home/kubernetes/bin'), env.MOUNTED_CNI_BIN_DIRS);
    assert.equal(mounts.get('/etc/cni/multus/net.d'), env.MOUNTED_CNI_NET_DIR);
    assert.equal(mounts.get('/run/icni'), '/run/icni', 'the socket\'s dir at the same path');
    // Helm merges a map value into the default's: the other requests and the limits stay.
    assert.deepEqual((container as { resources?: unknown }).resources, { requests: { cpu: '50m', memory: '64Mi' }, limits: { memory: '256Mi' } });
    assert.deepEqual(pod.tolerations, [{ key: 'dedicated', operator: 'Equal', value: 'mesh', effect: 'NoSchedule' }]);
    assert.equal(pod.priorityClassName, 'mesh-critical');
    assert.equal((find(objects, 'DaemonSet').spec!.template as { metadata?: { annotations?: Record<string, string> } }).metadata?.annotations?.team, 'mesh');
    assert.deepEqual(entryOf(objects), {
      type: 'istio-cni',
      capabilities: { 'io.kubernetes.cri.pod-annotations': true },
      log_level: 'debug',
      log_file: '/var/log/cni/istio-cni.log',
      kubernetes: { kubeconfig: '__KUBECONFIG_FILEPATH__', cni_bin_dir: '/home/kubernetes/bin', exclude_namespaces: ['kube-system', 'monitoring'] },
      pod_namespace: 'istio-system',
      rules_profile: 'istio-current',
      iptables_backend: 'legacy',
    });
    for (const o of objects) if (o.metadata.namespace !== undefined) assert.equal(o.metadata.namespace, 'istio-system', o.kind);
    assert.deepEqual(find(objects, 'ClusterRoleBinding').subjects, [{ kind: 'ServiceAccount', name: 'istio-cni', namespace: 'istio-system' }]);
    // Delete mode and the taint: exactly what they need.
    assert.deepEqual(podVerbs(objects), ['get', 'list', 'watch', 'delete']);
    assert.deepEqual(find(objects, 'ClusterRole').rules!.find((r) => r.resources.includes('nodes'))?.verbs, ['get', 'patch']);

    // The installer takes what this rendering gives it (the fake node's dirs stand for the MOUNTED_* paths).
    const node = makeFakeNode({ env: { ...Object.fromEntries(Object.entries(env).filter(([name]) => !name.startsWith('MOUNTED_') && name !== 'NODE_READINESS_TAINT')), CNI_CONF_NAME: '10-calico.conflist' } });
    writeFileSync(join(node.netDir, '10-calico.conflist'), CALICO);
    const r = await h.run([h.DEFAULT_ISTIO_CNI_BIN, 'install', '--once'], { env: node.env });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(readConflist(join(node.netDir, '10-calico.conflist')).plugins.at(-1)?.iptables_backend, 'legacy');
  });

  it('global.nativeNftables (Istio\'s name) is the nftables backend; label mode and no cache need no more than they use', async () => {
    const objects = await rendered({ global: { nativeNftables: true }, podCache: { enabled: false }, logging: { level: 'none' } });
    assert.equal(entryOf(objects).iptables_backend, 'nftables');
    assert.equal(entryOf(objects).log_level, 'none');
    const env = daemonSetEnv(objects);
    assert.equal(env.POD_CACHE_SOCKET, '');
    assert.equal(env.LOG_LEVEL, 'silent');
    assert.equal(hostMounts(objects).has('/var/run/istio-cni'), false);
    assert.deepEqual(podVerbs(objects), ['get', 'list', 'watch', 'patch']);
    assert.equal(find(objects, 'ClusterRole').rules!.some((r) => r.resources.includes('nodes')), false);
    const bare = await rendered({ podCache: { enabled: false }, repair: { enabled: false } });
    assert.deepEqual(podVerbs(bare), ['get']);
    assert.equal(daemonSetEnv(bare).REPAIR_ENABLED, 'false');
  });

  it('taint.enabled adds exactly the taint setting to the installer and nodes get and patch to the RBAC (what deploy/taint was)', async () => {
    const [plain, tainted] = [await rendered(), await rendered({ taint: { enabled: true } })];
    const { NODE_READINESS_TAINT, ...rest } = daemonSetEnv(tainted);
    assert.equal(NODE_READINESS_TAINT, 'true');
    assert.deepEqual(rest, daemonSetEnv(plain));
    const rules = find(tainted, 'ClusterRole').rules!;
    assert.deepEqual(rules.filter((r) => r.resources.includes('nodes')), [{ apiGroups: [''], resources: ['nodes'], verbs: ['get', 'patch'] }]);
    assert.deepEqual(rules.filter((r) => !r.resources.includes('nodes')), find(plain, 'ClusterRole').rules);
    // Nothing else changes: every other object, and the DaemonSet but for that one variable.
    const withoutTaint = (objects: K8sObject[]) => objects.filter((o) => o.kind !== 'ClusterRole').map((o) => {
      if (o.kind !== 'DaemonSet') return o;
      const ds = structuredClone(o);
      const install = ds.spec!.template.spec.containers[0]!;
      install.env = install.env.filter((v) => v.name !== 'NODE_READINESS_TAINT');
      return ds;
    });
    assert.deepEqual(withoutTaint(tainted), withoutTaint(plain));
  });

  it('refuses what the plugin does not support, saying what and why', async () => {
    const refused: Array<[Record<string, unknown>, RegExp]> = [
      // Not a value of this chart (Istio's chart has no logLevel: its name is logging.level).
      [{ logLevel: 'debug' }, /additional properties 'logLevel' not allowed/],
      [{ revision: 'canary' }, /additional properties 'revision' not allowed/],
      [{ rulesProfile: 'newest' }, /at '\/rulesProfile': value must be one of 'seed', 'istio-current', 'auto'/],
      [{ iptablesBackend: 'ebpf' }, /at '\/iptablesBackend': value must be one of 'auto', 'nft', 'legacy', 'nftables'/],
      [{ logging: { level: 'default:debug' } }, /at '\/logging\/level': value must be one of/],
      [{ cniBinDir: 'opt/cni/bin' }, /at '\/cniBinDir': '[^']*' does not match pattern/],
      [{ excludeNamespaces: ['Kube_System'] }, /at '\/excludeNamespaces\/0': '[^']*' does not match pattern/],
      [{ podCache: { socketPath: 'pod-cache.sock' } }, /at '\/podCache\/socketPath'/],
      [{ repair: { enabled: 'sometimes' } }, /at '\/repair\/enabled': got string, want boolean/],
      // Istio's values the plugin cannot honour, and contradictions.
      [{ chained: false }, /chained: false \(the plugin in a config file of its own\) is not supported/],
      [{ provider: 'multus' }, /provider: "multus" is not supported/],
      [{ ambient: { enabled: true } }, /ambient.enabled: true is not supported: this plugin sets up sidecar capture only/],
      [{ repair: { repairPods: true } }, /repair.repairPods: true .* is not supported: use repair.labelPods or repair.deletePods/],
      [{ repair: { labelPods: false } }, /repair.enabled: true needs repair.labelPods or repair.deletePods/],
      [{ global: { nativeNftables: true }, iptablesBackend: 'legacy' }, /global.nativeNftables: true \(native nftables\) contradicts iptablesBackend: "legacy"/],
    ];
    for (const [values, message] of refused) {
      const r = await template(values);
      assert.notEqual(r.code, 0, `${JSON.stringify(values)} was accepted`);
      assert.equal(r.stdout, '', JSON.stringify(values));
      assert.match(r.stderr, message, JSON.stringify(values));
    }
  });
});
