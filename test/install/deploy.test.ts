/**
 * deploy/istio-cni.yaml fits the installer: the DaemonSet mounts what its environment names, the
 * ConfigMap's entry is one the installer accepts, the probes reach the installer's HTTP server
 * (metrics on a port of their own), repair runs inside the installer, and the RBAC covers the plugin
 * and repair (the chart's taint.enabled: the taint, test/install/chart.test.ts).
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { after, it } from 'node:test';
import * as h from '../harness/index.ts';
import { container, daemonSetEnv, find, hostMounts, manifestObjects, POD_IP } from './manifest.ts';
import { CALICO, makeFakeNode, readConflist, startInstaller, stopInstaller } from './node.ts';

after(h.cleanupAll);

it('the DaemonSet mounts the host dirs its environment names, on the host network, on every node', () => {
  const objects = manifestObjects();
  const env = daemonSetEnv(objects);
  const mounts = hostMounts(objects);
  assert.equal(mounts.get('/etc/cni/net.d'), env.MOUNTED_CNI_NET_DIR);
  assert.equal(mounts.get('/opt/cni/bin'), env.MOUNTED_CNI_BIN_DIRS);
  assert.equal(env.CNI_NET_DIR, '/etc/cni/net.d');
  // The pod cache's socket: the plugin on the host reads the path the container serves it at.
  assert.equal(mounts.get('/var/run/istio-cni'), '/var/run/istio-cni');
  assert.equal(dirname(env.POD_CACHE_SOCKET!), '/var/run/istio-cni');
  assert.equal(env.NODE_NAME, 'test-node', 'the node name from the downward API');

  const pod = find(objects, 'DaemonSet').spec!.template.spec;
  assert.equal(pod.hostNetwork, true);
  assert.equal(pod.priorityClassName, 'system-node-critical');
  assert.ok(pod.tolerations.some((t) => t.operator === 'Exists' && t.effect === 'NoSchedule'));
  assert.equal(pod.serviceAccountName, find(objects, 'ServiceAccount').metadata.name);
});

it('the ClusterRole lets the plugin read pods, the cache and repair watch them and repair label them, bound to the DaemonSet\'s account', () => {
  const objects = manifestObjects();
  const rules = find(objects, 'ClusterRole').rules!;
  // Repair runs in label mode by default: patch, no delete (the chart grants delete in delete mode).
  assert.deepEqual(rules, [{ apiGroups: [''], resources: ['pods'], verbs: ['get', 'list', 'watch', 'patch'] }]);
  const env = daemonSetEnv(objects);
  assert.deepEqual([env.REPAIR_ENABLED, env.REPAIR_LABEL_PODS, env.REPAIR_DELETE_PODS], ['true', 'true', 'false']);
  const binding = find(objects, 'ClusterRoleBinding');
  assert.deepEqual(binding.roleRef, { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'istio-cni' });
  const sa = find(objects, 'ServiceAccount');
  assert.deepEqual(binding.subjects, [{ kind: 'ServiceAccount', name: sa.metadata.name, namespace: sa.metadata.namespace }]);
});

it('the probes ask the installer\'s HTTP server, on the node\'s address and the port the environment names; metrics have their own', async () => {
  const objects = manifestObjects();
  const install = container(objects, 'install-cni');
  const env = daemonSetEnv(objects);
  assert.equal(env.HTTP_ADDRESS, POD_IP, 'status.podIP: a host-network pod\'s is the node\'s');
  assert.deepEqual(install.ports, [
    { name: 'http', containerPort: Number(env.HTTP_PORT), protocol: 'TCP' },
    { name: 'metrics', containerPort: Number(env.MONITORING_PORT), protocol: 'TCP' },
  ]);
  assert.notEqual(env.HTTP_PORT, env.MONITORING_PORT);
  assert.deepEqual(install.readinessProbe?.httpGet, { path: '/readyz', port: 'http' });
  assert.deepEqual(install.livenessProbe?.httpGet, { path: '/healthz', port: 'http' });

  // The installer with that environment (the node's dirs in temp dirs) answers both paths.
  const node = makeFakeNode({ env: { HTTP_ADDRESS: env.HTTP_ADDRESS, HTTP_PORT: '0' } });
  writeFileSync(join(node.netDir, '10-calico.conflist'), CALICO);
  const installer = await startInstaller(node);
  const line = installer.output().stderr.split('\n').find((l) => l.includes('"msg":"http: serving"'));
  const { port } = JSON.parse(line!) as { port: number };
  for (const path of ['/readyz', '/healthz']) {
    const res = await fetch(`http://${POD_IP}:${port}${path}`);
    assert.equal(res.status, 200, path);
  }
  assert.equal(await stopInstaller(installer), 0);
});

it('repair runs inside the installer, in label mode unless changed: one container, no separate repair process', () => {
  const objects = manifestObjects();
  assert.deepEqual(find(objects, 'DaemonSet').spec!.template.spec.containers.map((x) => x.name), ['install-cni']);
  const env = daemonSetEnv(objects);
  assert.deepEqual([env.REPAIR_ENABLED, env.REPAIR_LABEL_PODS, env.REPAIR_DELETE_PODS], ['true', 'true', 'false']);
  // The taint is off: nodes are not everyone's to taint.
  assert.equal(env.NODE_READINESS_TAINT, undefined);
  assert.ok(!find(objects, 'ClusterRole').rules!.some((r) => r.resources.includes('nodes')));
});

it('the installer accepts the DaemonSet\'s environment and inserts the ConfigMap\'s entry', async () => {
  const objects = manifestObjects();
  const env = daemonSetEnv(objects);
  // The fake node's dirs stand where the container would see the host's (its MOUNTED_* paths).
  const node = makeFakeNode({ env: Object.fromEntries(Object.entries(env).filter(([name]) => !name.startsWith('MOUNTED_'))) });
  const path = join(node.netDir, '10-calico.conflist');
  writeFileSync(path, CALICO);

  const r = await h.run([h.DEFAULT_ISTIO_CNI_BIN, 'install', '--once'], { env: node.env });
  assert.equal(r.code, 0, r.stderr);
  const entry = readConflist(path).plugins.at(-1);
  const expected = JSON.parse(find(objects, 'ConfigMap').data!.cni_network_config!.replace('__KUBECONFIG_FILEPATH__', '/etc/cni/net.d/ZZZ-istio-cni-kubeconfig'));
  assert.deepEqual(entry, { ...expected, pod_cache_socket: '/var/run/istio-cni/pod-cache.sock' });
  assert.deepEqual(entry?.capabilities, { 'io.kubernetes.cri.pod-annotations': true });
  assert.match(readFileSync(join(node.netDir, 'ZZZ-istio-cni-kubeconfig'), 'utf8'), /token: token-1/);
});
