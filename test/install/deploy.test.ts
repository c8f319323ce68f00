/**
 * deploy/istio-cni.yaml fits the installer: the DaemonSet mounts what its environment names, the
 * ConfigMap's entry is one the installer accepts, and the RBAC covers the plugin and repair.
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { after, it } from 'node:test';
import * as h from '../harness/index.ts';
import { daemonSetEnv, find, hostMounts, manifestObjects } from './manifest.ts';
import { CALICO, makeFakeNode, readConflist } from './node.ts';

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

it('the ClusterRole lets the plugin read pods and repair restart them, bound to the DaemonSet\'s account', () => {
  const objects = manifestObjects();
  const rules = find(objects, 'ClusterRole').rules!;
  const podVerbs = new Set(rules.filter((r) => r.apiGroups.includes('') && r.resources.includes('pods')).flatMap((r) => r.verbs));
  for (const verb of ['get', 'list', 'watch', 'patch', 'delete']) assert.ok(podVerbs.has(verb), verb);
  const binding = find(objects, 'ClusterRoleBinding');
  assert.deepEqual(binding.roleRef, { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'istio-cni' });
  const sa = find(objects, 'ServiceAccount');
  assert.deepEqual(binding.subjects, [{ kind: 'ServiceAccount', name: sa.metadata.name, namespace: sa.metadata.namespace }]);
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
