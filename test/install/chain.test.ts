/**
 * What the installer leaves on the node works: the main plugin's list (ptp + host-local standing
 * in for calico) with our entry added by `istio-cni install`, the executable it copied and the
 * kubeconfig it wrote from the service account, run by the libcni driver for an injected pod.
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, it } from 'vitest';
import * as h from '../harness/index.ts';
import { entryIsLast, makeFakeNode, startInstaller, stopInstaller, types } from './node.ts';

afterAll(h.cleanupAll);

/** ISTIO_CNI_TEST_BACKEND=nftables runs this with native nftables (default iptables-nft). */
const BACKEND = h.captureBackend();
const PLAIN = { pod: 'plain-0', namespace: 'default' };
const WEB = { pod: 'web-0', namespace: 'default' };

it(`an injected pod gets its rules through the installed conflist, executable and kubeconfig (capture on ${BACKEND})`, async () => {
  const topo = await h.makeTopology({ tag: 'install' });
  const api = await h.startFakeKubeApi({ pods: [h.injectedPod(WEB.pod, WEB.namespace)] });
  await api.exposeIn(topo.node);

  // The fake apiserver is this cluster's "kubernetes" service; its CA and token are the service account's.
  const node = makeFakeNode({ token: api.token, ca: api.pki.caPem, apiHost: '127.0.0.1', apiPort: api.port });
  // The runtime on this node reads the same dirs the installer writes: host path = mounted path.
  node.env.CNI_NET_DIR = node.netDir;
  node.env.CNI_NETWORK_CONFIG = JSON.stringify({
    type: 'istio-cni',
    log_file: join(node.root, 'istio-cni.log'),
    iptables_backend: BACKEND,
    kubernetes: { kubeconfig: '__KUBECONFIG_FILEPATH__' },
  });
  const main = h.writeConflist({ dir: node.netDir, netName: 'k8s-pod-network', withIstio: false, fileName: '10-ptp.conflist' });
  h.makeCniPath({ dir: node.binDir, withoutIstio: true });

  const installer = await startInstaller(node);
  assert.ok(entryIsLast(main.path));
  assert.deepEqual(types(JSON.parse(readFileSync(main.path, 'utf8'))), ['ptp', 'istio-cni']);

  const cni = {
    netName: 'k8s-pod-network',
    hostNetns: topo.node,
    netnsPath: topo.pod.path,
    confDir: node.netDir,
    cniPath: node.binDir,
    cniArgs: { IgnoreUnknown: '1', K8S_POD_NAMESPACE: WEB.namespace, K8S_POD_NAME: WEB.pod, K8S_POD_INFRA_CONTAINER_ID: h.defaultContainerId(topo.pod) },
  };
  const add = await h.runCni('add', cni);
  assert.equal(add.code, 0, add.stderr + add.stdout);
  assert.deepEqual(await h.natRules(topo.pod, BACKEND), h.seedRules(BACKEND));
  assert.equal(api.podRequests(WEB.namespace, WEB.pod)[0]?.auth, 'token', 'the pod was looked up with the installed kubeconfig');

  const del = await h.runCni('del', cni);
  assert.equal(del.code, 0, del.stderr);
  assert.equal(await stopInstaller(installer), 0);
  assert.deepEqual(types(JSON.parse(readFileSync(main.path, 'utf8'))), ['ptp']);
});

it('the entry the installer writes by default asks the runtime for the pod\'s annotations: a plain pod passes with no API request', async () => {
  const topo = await h.makeTopology({ tag: 'install-cap' });
  const api = await h.startFakeKubeApi({ pods: [h.plainPod(PLAIN.pod, PLAIN.namespace)] });
  await api.exposeIn(topo.node);
  const node = makeFakeNode({ token: api.token, ca: api.pki.caPem, apiHost: '127.0.0.1', apiPort: api.port });
  node.env.CNI_NET_DIR = node.netDir;
  const main = h.writeConflist({ dir: node.netDir, netName: 'k8s-pod-network', withIstio: false, fileName: '10-ptp.conflist' });
  h.makeCniPath({ dir: node.binDir, withoutIstio: true });
  const r = await h.run([h.DEFAULT_ISTIO_CNI_BIN, 'install', '--once'], { env: node.env });
  assert.equal(r.code, 0, r.stderr);

  // The installed entry as written, only pointed at this test's log file and iptables backend.
  const installed = JSON.parse(readFileSync(main.path, 'utf8')) as { plugins: Array<Record<string, unknown>> };
  const entry = installed.plugins.at(-1)!;
  assert.deepEqual(entry.capabilities, { 'io.kubernetes.cri.pod-annotations': true });
  installed.plugins[installed.plugins.length - 1] = { ...entry, log_file: join(node.root, 'istio-cni.log'), iptables_backend: 'nft' };
  writeFileSync(main.path, JSON.stringify(installed));

  const add = await h.runCni('add', {
    netName: 'k8s-pod-network',
    hostNetns: topo.node,
    netnsPath: topo.pod.path,
    confDir: node.netDir,
    cniPath: node.binDir,
    cniArgs: { IgnoreUnknown: '1', K8S_POD_NAMESPACE: PLAIN.namespace, K8S_POD_NAME: PLAIN.pod, K8S_POD_INFRA_CONTAINER_ID: h.defaultContainerId(topo.pod) },
    // What containerd sends as the pod's annotations; libcni passes them only to a plugin that declares the capability.
    capArgs: { 'io.kubernetes.cri.pod-annotations': { 'kubectl.kubernetes.io/default-container': 'app' } },
  });
  assert.equal(add.code, 0, add.stderr + add.stdout);
  assert.equal(api.podRequests().length, 0, 'decided from the runtime-supplied annotations');
  assert.match(readFileSync(join(node.root, 'istio-cni.log'), 'utf8'), /runtime-supplied annotations have no sidecar.istio.io\/status/);
  assert.equal((await h.runCni('del', { netName: 'k8s-pod-network', hostNetns: topo.node, netnsPath: topo.pod.path, confDir: node.netDir, cniPath: node.binDir })).code, 0);
});
