/**
 * The Dockerfile, built with podman (no daemon, no registry) on a Debian base made here with
 * debootstrap, run the way deploy/istio-cni.yaml runs it: its environment, its host mounts, its
 * security context. The binary and our entry appear on the "host"; `podman stop` removes them.
 *
 * The Dockerfile's source build stage needs the node image and the npm registry, so this builds
 * the `prebuilt` target from the dist/istio-cni of this checkout (`npm run build` first).
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, it } from 'node:test';
import * as h from '../harness/index.ts';
import { daemonSetEnv, find, hostMounts, manifestObjects } from '../install/manifest.ts';
import { CALICO, entryIsLast, KUBECONFIG_NAME, makeFakeNode, waitFor } from '../install/node.ts';
import { BASE_IMAGE, baseRootfsTarball, makePodman, type Podman } from '../harness/image-build.ts';

after(h.cleanupAll);

const IMAGE = 'localhost/istio-cni:test';
let podman: Podman;

before(async () => {
  const tarball = await baseRootfsTarball();
  podman = makePodman();
  await podman.ok(['import', tarball, BASE_IMAGE]);
  await podman.ok(['build', '--isolation=chroot', '--pull=never', '--target', 'prebuilt', '--tag', IMAGE, '.'], 300_000);
});

it('runs as the DaemonSet does: installs the binary, kubeconfig and entry on the host; podman stop removes them', async () => {
  const objects = manifestObjects();
  const mounts = hostMounts(objects);
  const container = find(objects, 'DaemonSet').spec!.template.spec.containers[0]!;
  const security = (container as unknown as { securityContext: { capabilities: { add: string[] } } }).securityContext;
  const node = makeFakeNode({ token: 'image-token' });
  const calicoPath = join(node.netDir, '10-calico.conflist');
  writeFileSync(calicoPath, CALICO);

  const cacheDir = join(node.root, 'var-run-istio-cni');
  mkdirSync(cacheDir);
  const name = `icni-${process.pid}-install`;
  const env = { ...daemonSetEnv(objects), KUBERNETES_SERVICE_HOST: '10.96.0.1', KUBERNETES_SERVICE_PORT: '443' };
  await podman.ok([
    'run', '--detach', '--name', name, '--network', 'none', '--read-only',
    '--cap-drop', 'ALL', '--cap-add', security.capabilities.add.join(','),
    '--volume', `${node.netDir}:${mounts.get('/etc/cni/net.d')}`,
    '--volume', `${node.binDir}:${mounts.get('/opt/cni/bin')}`,
    '--volume', `${node.saDir}:/var/run/secrets/kubernetes.io/serviceaccount:ro`,
    '--volume', `${cacheDir}:${mounts.get('/var/run/istio-cni')}`,
    ...Object.entries(env).flatMap(([k, v]) => ['--env', `${k}=${v}`]),
    IMAGE,
  ]);

  const installed = join(node.binDir, 'istio-cni');
  await waitFor('the entry and the kubeconfig on the host', () => entryIsLast(calicoPath) && existsSync(join(node.netDir, KUBECONFIG_NAME)), 20_000);
  const version = await h.run([installed], { env: h.minimalEnv({ CNI_COMMAND: 'VERSION' }), input: '{"cniVersion":"1.0.0"}' });
  assert.equal(version.code, 0, `the executable from the image runs on the host: ${version.stderr}`);
  assert.match(readFileSync(join(node.netDir, KUBECONFIG_NAME), 'utf8'), /token: image-token/);
  assert.ok(statSync(join(cacheDir, 'pod-cache.sock')).isSocket(), 'the pod cache serves its socket in the host dir');

  await podman.ok(['stop', '--time', '10', name]);
  const state = await podman.ok(['inspect', '--format', '{{.State.ExitCode}}', name]);
  assert.equal(state.stdout.trim(), '0');
  assert.deepEqual(JSON.parse(readFileSync(calicoPath, 'utf8')), JSON.parse(CALICO));
  assert.deepEqual(readdirSync(node.netDir), ['10-calico.conflist']);
  assert.deepEqual(readdirSync(node.binDir), []);
  assert.deepEqual(readdirSync(cacheDir), [], 'the socket is removed');
  const logs = await podman.ok(['logs', name]);
  assert.match(logs.stderr + logs.stdout, /"signal":"SIGTERM"/);
});
