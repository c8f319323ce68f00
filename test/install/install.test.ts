/**
 * `istio-cni install`, the built executable as a child process against a fake node in temp dirs:
 * calico-shaped configs, invalid files, old entries, calico rewriting its file while the installer
 * runs, token rotation, and the clean-up on SIGTERM/SIGINT.
 */
import assert from 'node:assert/strict';
import { chmodSync, existsSync, readdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { parse as parseYaml } from 'yaml';
import * as h from '../harness/index.ts';
import { BRIDGE, CALICO, entryIsLast, HOST_NET_DIR, KUBECONFIG_NAME, makeFakeNode, readConflist, startInstaller, stopInstaller, types, waitFor } from './node.ts';

after(h.cleanupAll);

const OUR_ENTRY = {
  type: 'istio-cni',
  capabilities: { 'io.kubernetes.cri.pod-annotations': true },
  log_level: 'info',
  kubernetes: { kubeconfig: `${HOST_NET_DIR}/${KUBECONFIG_NAME}`, cni_bin_dir: '/opt/cni/bin', exclude_namespaces: ['kube-system'] },
};
/** "Within a second" of a change, measured from the write to the entry being back. */
const REINSERT_BUDGET_MS = 1000;

const mode = (path: string) => statSync(path).mode & 0o777;
const kubeconfigOf = (netDir: string) => parseYaml(readFileSync(join(netDir, KUBECONFIG_NAME), 'utf8')) as {
  clusters: Array<{ cluster: Record<string, unknown> }>;
  users: Array<{ user: { token: string } }>;
};

describe('istio-cni install', () => {
  it('installs the executable, the kubeconfig and our entry last in calico\'s list; SIGTERM removes all three', async () => {
    const node = makeFakeNode({ token: 'sa-token-1' });
    const calicoPath = join(node.netDir, '10-calico.conflist');
    writeFileSync(calicoPath, CALICO);
    chmodSync(calicoPath, 0o640);
    const installer = await startInstaller(node);

    const installed = join(node.binDir, 'istio-cni');
    assert.equal(statSync(installed).size, statSync(h.DEFAULT_ISTIO_CNI_BIN).size);
    assert.equal(mode(installed), 0o755);
    const version = await h.run([installed], { env: h.minimalEnv({ CNI_COMMAND: 'VERSION' }), input: '{"cniVersion":"1.0.0"}' });
    assert.equal(version.code, 0, version.stderr);
    assert.ok((JSON.parse(version.stdout) as { supportedVersions: string[] }).supportedVersions.includes('0.3.1'));

    const list = readConflist(calicoPath);
    const calico = JSON.parse(CALICO) as typeof list;
    assert.deepEqual(list, { ...calico, plugins: [...calico.plugins, OUR_ENTRY] });
    assert.equal(mode(calicoPath), 0o640, 'the conflist keeps its mode');

    const kubeconfigPath = join(node.netDir, KUBECONFIG_NAME);
    assert.equal(mode(kubeconfigPath), 0o600);
    const kubeconfig = kubeconfigOf(node.netDir);
    assert.equal(kubeconfig.clusters[0]!.cluster.server, 'https://10.96.0.1:443');
    assert.equal(Buffer.from(kubeconfig.clusters[0]!.cluster['certificate-authority-data'] as string, 'base64').toString(), readFileSync(join(node.saDir, 'ca.crt'), 'utf8'));
    assert.equal(kubeconfig.users[0]!.user.token, 'sa-token-1');

    assert.equal(await stopInstaller(installer, 'SIGTERM'), 0);
    assert.deepEqual(readConflist(calicoPath), calico, 'calico\'s list as calico wrote it');
    assert.equal(mode(calicoPath), 0o640);
    assert.deepEqual(readdirSync(node.netDir), ['10-calico.conflist'], 'no kubeconfig, no temp file left');
    assert.deepEqual(readdirSync(node.binDir), []);
  });

  it('turns a bridge .conf into a .conflist keeping its cniVersion; SIGINT removes our entry', async () => {
    const node = makeFakeNode();
    writeFileSync(join(node.netDir, '10-bridge.conf'), BRIDGE);
    const installer = await startInstaller(node);

    const listPath = join(node.netDir, '10-bridge.conflist');
    assert.equal(existsSync(join(node.netDir, '10-bridge.conf')), false);
    const bridge = JSON.parse(BRIDGE) as Record<string, unknown>;
    assert.deepEqual(readConflist(listPath), { name: 'bridge', cniVersion: '0.3.1', plugins: [bridge, OUR_ENTRY] });

    assert.equal(await stopInstaller(installer, 'SIGINT'), 0);
    assert.deepEqual(readConflist(listPath), { name: 'bridge', cniVersion: '0.3.1', plugins: [bridge] });
    assert.equal(existsSync(join(node.binDir, 'istio-cni')), false);
  });

  it('10-bridge.conf beside 10-bridge.conflist: chains the .conf the runtime uses, in place of the .conflist, every time the .conf comes back', async () => {
    const node = makeFakeNode();
    const confPath = join(node.netDir, '10-bridge.conf');
    const listPath = join(node.netDir, '10-bridge.conflist');
    // libcni (containerd's go-cni) sorts the names: "10-bridge.conf" < "10-bridge.conflist", so the
    // .conf is the network in force and the .conflist is never read.
    const shadowed = '{"cniVersion": "1.0.0", "name": "shadowed", "plugins": [{"type": "ptp"}]}';
    writeFileSync(listPath, shadowed);
    writeFileSync(confPath, BRIDGE);
    chmodSync(confPath, 0o640);
    const installer = await startInstaller(node);
    const bridge = JSON.parse(BRIDGE) as Record<string, unknown>;
    assert.deepEqual(readdirSync(node.netDir).sort(), ['10-bridge.conflist', KUBECONFIG_NAME]);
    assert.deepEqual(readConflist(listPath), { name: 'bridge', cniVersion: '0.3.1', plugins: [bridge, OUR_ENTRY] });
    assert.equal(mode(listPath), 0o640, 'the .conf\'s mode');
    assert.match(installer.output().stderr, /replacing the \.conflist of the same name/);

    // The primary plugin's installer writes its .conf again (ours shadowed once more): chained again.
    writeFileSync(confPath, BRIDGE);
    const took = await waitFor('the .conf chained again', () => !existsSync(confPath) && entryIsLast(listPath));
    assert.ok(took < REINSERT_BUDGET_MS, `${took} ms`);
    assert.deepEqual(readConflist(listPath), { name: 'bridge', cniVersion: '0.3.1', plugins: [bridge, OUR_ENTRY] });
    assert.doesNotMatch(installer.output().stderr, /cannot turn|"level":50/, 'no error, no retry loop');

    assert.equal(await stopInstaller(installer), 0);
    assert.deepEqual(readConflist(listPath), { name: 'bridge', cniVersion: '0.3.1', plugins: [bridge] });
  });

  it('picks the lowest-sorted valid config, skipping invalid files, and touches no other file', async () => {
    const node = makeFakeNode();
    const others: Record<string, string> = {
      '00-broken.conflist': '{"name": "half-written", "plugins": [',
      '01-no-plugins.conflist': '{"name": "empty", "cniVersion": "0.3.1", "plugins": []}',
      '02-no-type.conf': '{"name": "typeless", "cniVersion": "0.3.1"}',
      '03-not-an-object.json': '["calico"]',
      '05-notes.txt': CALICO,
      '20-bridge.conf': BRIDGE,
      '99-other.conflist': '{"name": "other", "cniVersion": "1.0.0", "plugins": [{"type": "ptp"}]}',
      'calico-kubeconfig': 'apiVersion: v1\nkind: Config\n',
    };
    for (const [name, text] of Object.entries(others)) writeFileSync(join(node.netDir, name), text);
    writeFileSync(join(node.netDir, '10-calico.conflist'), CALICO);
    const installer = await startInstaller(node);

    assert.deepEqual(types(readConflist(join(node.netDir, '10-calico.conflist'))), ['calico', 'portmap', 'bandwidth', 'istio-cni']);
    for (const [name, text] of Object.entries(others)) assert.equal(readFileSync(join(node.netDir, name), 'utf8'), text, name);
    assert.equal(await stopInstaller(installer), 0);
    assert.deepEqual(readConflist(join(node.netDir, '10-calico.conflist')), JSON.parse(CALICO));
  });

  it('with CNI_CONF_NAME uses that file, also once it has become a .conflist', async () => {
    const node = makeFakeNode({ env: { CNI_CONF_NAME: '20-bridge.conf' } });
    writeFileSync(join(node.netDir, '10-calico.conflist'), CALICO);
    writeFileSync(join(node.netDir, '20-bridge.conf'), BRIDGE);
    const installer = await startInstaller(node);
    const bridgeList = join(node.netDir, '20-bridge.conflist');
    assert.ok(entryIsLast(bridgeList));
    // Later rounds (our own writes, calico rewriting its file) must keep it there.
    writeFileSync(join(node.netDir, '10-calico.conflist'), CALICO);
    await h.sleep(500);
    assert.ok(entryIsLast(bridgeList));
    assert.equal(readFileSync(join(node.netDir, '10-calico.conflist'), 'utf8'), CALICO);
    assert.equal(await stopInstaller(installer), 0);
    assert.deepEqual(types(readConflist(bridgeList)), ['bridge']);
  });

  it('replaces older istio-cni entries with exactly one, last', async () => {
    const node = makeFakeNode();
    const calico = JSON.parse(CALICO) as { plugins: unknown[] };
    const old = { type: 'istio-cni', log_level: 'debug', kubernetes: { kubeconfig: '/etc/cni/net.d/old-kubeconfig' } };
    const [first, ...rest] = calico.plugins;
    const path = join(node.netDir, '10-calico.conflist');
    writeFileSync(path, JSON.stringify({ ...calico, plugins: [first, old, ...rest, old] }));
    const installer = await startInstaller(node);

    assert.deepEqual(readConflist(path).plugins, [...calico.plugins, OUR_ENTRY]);
    assert.equal(await stopInstaller(installer), 0);
    assert.deepEqual(readConflist(path), calico);
  });

  it('waits for a network config to appear', async () => {
    const node = makeFakeNode();
    const installer = await startInstaller(node);
    await waitFor('the waiting message', () => installer.output().stderr.includes('waiting for a CNI network config'));
    assert.deepEqual(readdirSync(node.netDir), [KUBECONFIG_NAME]);

    const path = join(node.netDir, '10-calico.conflist');
    writeFileSync(path, CALICO);
    const took = await waitFor('our entry', () => entryIsLast(path));
    assert.ok(took < REINSERT_BUDGET_MS, `${took} ms`);
    assert.equal(await stopInstaller(installer), 0);
  });

  it('re-inserts within a second when calico rewrites or replaces its file, and follows a file that sorts first', async () => {
    const node = makeFakeNode();
    const calicoPath = join(node.netDir, '10-calico.conflist');
    writeFileSync(calicoPath, CALICO);
    const installer = await startInstaller(node);
    assert.ok(entryIsLast(calicoPath));

    // calico's installer restarting: the file rewritten in place, without our entry.
    writeFileSync(calicoPath, CALICO);
    const inPlace = await waitFor('our entry after an in-place rewrite', () => entryIsLast(calicoPath));

    // ... or replaced by a rename.
    writeFileSync(join(node.netDir, '.calico.tmp'), CALICO);
    renameSync(join(node.netDir, '.calico.tmp'), calicoPath);
    const replaced = await waitFor('our entry after a replace', () => entryIsLast(calicoPath));

    // Another config now sorts first: the runtime will use it, so our entry moves there.
    const firstPath = join(node.netDir, '05-calico.conflist');
    writeFileSync(firstPath, CALICO);
    const moved = await waitFor('our entry in the new first file', () => entryIsLast(firstPath) && !types(readConflist(calicoPath)).includes('istio-cni'));

    for (const took of [inPlace, replaced, moved]) assert.ok(took < REINSERT_BUDGET_MS, `re-inserted after ${took} ms`);
    assert.deepEqual(readConflist(calicoPath), JSON.parse(CALICO));
    const list = readConflist(firstPath);
    assert.deepEqual(types(list), ['calico', 'portmap', 'bandwidth', 'istio-cni']);
    assert.equal(await stopInstaller(installer), 0);
    assert.deepEqual(readConflist(firstPath), JSON.parse(CALICO));
    console.log(`re-inserted after: in-place rewrite ${inPlace.toFixed(0)} ms, replace ${replaced.toFixed(0)} ms, new first file ${moved.toFixed(0)} ms`);
  });

  it('rewrites the kubeconfig when kubelet rotates the token', async () => {
    const node = makeFakeNode({ token: 'before-rotation' });
    writeFileSync(join(node.netDir, '10-calico.conflist'), CALICO);
    const installer = await startInstaller(node);
    assert.equal(kubeconfigOf(node.netDir).users[0]!.user.token, 'before-rotation');

    node.rotateToken('after-rotation');
    const took = await waitFor('the rotated token', () => kubeconfigOf(node.netDir).users[0]!.user.token === 'after-rotation');
    assert.ok(took < REINSERT_BUDGET_MS, `${took} ms`);
    assert.equal(mode(join(node.netDir, KUBECONFIG_NAME)), 0o600);

    // A kubeconfig deleted by someone else comes back too.
    node.rotateToken('third', '-----BEGIN CERTIFICATE-----\nnew-ca\n-----END CERTIFICATE-----\n');
    await waitFor('the new CA', () => Buffer.from(kubeconfigOf(node.netDir).clusters[0]!.cluster['certificate-authority-data'] as string, 'base64').toString().includes('new-ca'));
    assert.equal(await stopInstaller(installer), 0);
    assert.equal(existsSync(join(node.netDir, KUBECONFIG_NAME)), false);
  });

  it('install --once and uninstall do one round each and exit', async () => {
    const node = makeFakeNode();
    const path = join(node.netDir, '10-calico.conflist');
    writeFileSync(path, CALICO);
    const once = await h.run([h.DEFAULT_ISTIO_CNI_BIN, 'install', '--once'], { env: node.env });
    assert.equal(once.code, 0, once.stderr);
    assert.ok(entryIsLast(path));
    assert.ok(existsSync(join(node.binDir, 'istio-cni')));
    assert.ok(existsSync(join(node.netDir, KUBECONFIG_NAME)));

    const uninstall = await h.run([h.DEFAULT_ISTIO_CNI_BIN, 'uninstall'], { env: node.env });
    assert.equal(uninstall.code, 0, uninstall.stderr);
    assert.deepEqual(readConflist(path), JSON.parse(CALICO));
    assert.deepEqual(readdirSync(node.netDir), ['10-calico.conflist']);
    assert.deepEqual(readdirSync(node.binDir), []);

    const empty = makeFakeNode();
    const nothing = await h.run([h.DEFAULT_ISTIO_CNI_BIN, 'install', '--once'], { env: empty.env });
    assert.equal(nothing.code, 1);
    assert.match(nothing.stderr, /our entry is not in place/);
  });

  it('scripts/cni-entry.sh adds our entry and the executable by hand, and removes them', async () => {
    const node = makeFakeNode();
    const path = join(node.netDir, '10-calico.conflist');
    writeFileSync(path, CALICO);
    const env = h.minimalEnv({ CNI_NET_DIR: node.netDir, CNI_BIN_DIR: node.binDir });
    const script = join(h.REPO_ROOT, 'scripts', 'cni-entry.sh');

    const add = await h.run(['/bin/bash', script, 'add'], { env });
    assert.equal(add.code, 0, add.stderr);
    const entry = readConflist(path).plugins.at(-1)!;
    assert.deepEqual(entry, { ...OUR_ENTRY, kubernetes: { ...OUR_ENTRY.kubernetes, kubeconfig: join(node.netDir, KUBECONFIG_NAME) } });
    assert.equal(statSync(join(node.binDir, 'istio-cni')).size, statSync(h.DEFAULT_ISTIO_CNI_BIN).size);
    assert.deepEqual(readdirSync(node.netDir), ['10-calico.conflist'], 'no kubeconfig without KUBERNETES_SERVICE_HOST');

    const remove = await h.run(['/bin/bash', script, 'remove'], { env });
    assert.equal(remove.code, 0, remove.stderr);
    assert.deepEqual(readConflist(path), JSON.parse(CALICO));
    assert.deepEqual(readdirSync(node.binDir), []);
  });

  it('refuses bad settings before touching the node, naming the variable', async () => {
    const cases: Array<[NodeJS.ProcessEnv, RegExp]> = [
      [{ CNI_NETWORK_CONFIG: '{"type": "calico"}' }, /CNI_NETWORK_CONFIG: must be a JSON object with "type": "istio-cni"/],
      [{ CNI_NETWORK_CONFIG: '{"type": "istio-cni", "log_level": "loud"}' }, /CNI_NETWORK_CONFIG: log_level/],
      [{ CNI_NETWORK_CONFIG: '{"type": ' }, /CNI_NETWORK_CONFIG: not JSON/],
      [{ KUBERNETES_SERVICE_PORT: '70000' }, /KUBERNETES_SERVICE_PORT/],
      [{ KUBECFG_FILE_NAME: '../escape' }, /KUBECFG_FILE_NAME/],
      [{ MOUNTED_CNI_NET_DIR: 'relative/net.d' }, /MOUNTED_CNI_NET_DIR: must be an absolute path/],
    ];
    for (const [env, message] of cases) {
      const node = makeFakeNode({ env });
      writeFileSync(join(node.netDir, '10-calico.conflist'), CALICO);
      const r = await h.run([h.DEFAULT_ISTIO_CNI_BIN, 'install'], { env: node.env });
      assert.equal(r.code, 1);
      assert.match(r.stderr, message);
      assert.deepEqual(readdirSync(node.binDir), []);
      assert.equal(readFileSync(join(node.netDir, '10-calico.conflist'), 'utf8'), CALICO);
    }
  });
});
