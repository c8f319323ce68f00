import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parse as parseYaml } from 'yaml';
import { renderKubeconfig } from '../../src/install/kubeconfig.ts';
import { entryIsInPlace, parseNetConfig, primaryConfig, withEntry } from '../../src/install/netconf.ts';
import { parseInstallSettings, SettingsError } from '../../src/install/settings.ts';

const list = (name: string, ...types: string[]) => JSON.stringify({ name, cniVersion: '1.0.0', plugins: types.map((type) => ({ type })) });

describe('the primary network config', () => {
  it('sorts by bytes as libcni does, so "10-" comes before "9-"', () => {
    const files = new Map([
      ['9-first-by-number.conflist', list('nine', 'ptp')],
      ['10-calico.conflist', list('calico', 'calico')],
    ]);
    assert.equal(primaryConfig(files, undefined)?.fileName, '10-calico.conflist');
  });

  it('takes a .json like a .conf, and ignores other extensions', () => {
    const files = new Map([
      ['00-notes.yaml', list('yaml', 'ptp')],
      ['05-single.json', JSON.stringify({ cniVersion: '0.4.0', name: 'single', type: 'bridge' })],
    ]);
    const primary = primaryConfig(files, undefined);
    assert.equal(primary?.fileName, '05-single.json');
    assert.equal(primary?.single, true);
    assert.deepEqual(primary?.list, { name: 'single', cniVersion: '0.4.0', plugins: [{ cniVersion: '0.4.0', name: 'single', type: 'bridge' }] });
  });

  it('uses CNI_CONF_NAME when set, and nothing else even when it is missing', () => {
    const files = new Map([
      ['10-calico.conflist', list('calico', 'calico')],
      ['20-chosen.conflist', list('chosen', 'ptp')],
    ]);
    assert.equal(primaryConfig(files, '20-chosen.conflist')?.fileName, '20-chosen.conflist');
    assert.equal(primaryConfig(files, '30-absent.conflist'), undefined);
  });

  it('follows a named .conf into the .conflist it was turned into', () => {
    const files = new Map([['20-bridge.conflist', list('bridge', 'bridge', 'istio-cni')]]);
    assert.equal(primaryConfig(files, '20-bridge.conf')?.fileName, '20-bridge.conflist');
  });

  it('rejects lists without a name, with a non-object plugin, or with a plugin without type', () => {
    assert.equal(parseNetConfig('a.conflist', '{"cniVersion":"1.0.0","plugins":[{"type":"ptp"}]}'), undefined);
    assert.equal(parseNetConfig('a.conflist', '{"name":"a","plugins":["ptp"]}'), undefined);
    assert.equal(parseNetConfig('a.conflist', '{"name":"a","plugins":[{"type":""}]}'), undefined);
    assert.equal(parseNetConfig('a.conf', 'null'), undefined);
  });
});

describe('our entry', () => {
  it('is in place only when it is the single istio-cni entry, last, and exactly ours', () => {
    const entry = { type: 'istio-cni', log_level: 'info' };
    const calico = JSON.parse(list('k8s-pod-network', 'calico', 'portmap'));
    const placed = withEntry(calico, entry);
    assert.equal(entryIsInPlace(placed, entry), true);
    assert.equal(entryIsInPlace(placed, { ...entry, log_level: 'debug' }), false);
    assert.equal(entryIsInPlace({ ...placed, plugins: [entry, ...placed.plugins] }, entry), false);
    assert.equal(entryIsInPlace({ ...placed, plugins: [...placed.plugins, { type: 'bandwidth' }] }, entry), false);
  });
});

describe('installer settings', () => {
  it('brackets an IPv6 service host and puts the kubeconfig\'s host path into the entry', () => {
    const settings = parseInstallSettings({ KUBERNETES_SERVICE_HOST: 'fd00::1', KUBERNETES_SERVICE_PORT: '6443', CNI_NET_DIR: '/var/lib/cni/net.d' });
    assert.equal(settings.api?.server, 'https://[fd00::1]:6443');
    assert.equal((settings.entry.kubernetes as { kubeconfig: string }).kubeconfig, '/var/lib/cni/net.d/ZZZ-istio-cni-kubeconfig');
    assert.deepEqual(settings.binDirs, ['/host/opt/cni/bin']);
  });

  it('the probes\' HTTP server: port 8000 on every address unless told, a port and an IP address only', () => {
    assert.deepEqual(parseInstallSettings({}).http, { address: undefined, port: 8000 });
    assert.deepEqual(parseInstallSettings({ HTTP_ADDRESS: '10.0.0.7', HTTP_PORT: '0' }).http, { address: '10.0.0.7', port: 0 });
    for (const env of [{ HTTP_PORT: '' }, { HTTP_PORT: '65536' }, { HTTP_PORT: '80a' }, { HTTP_ADDRESS: 'node.local' }, { HTTP_ADDRESS: '10.0.0.7:80' }]) {
      assert.throws(() => parseInstallSettings(env), SettingsError, JSON.stringify(env));
    }
  });

  it('the readiness taint is off unless asked for, and then needs the node and the API', () => {
    assert.equal(parseInstallSettings({ NODE_NAME: 'n1', KUBERNETES_SERVICE_HOST: '10.96.0.1' }).readinessTaint, undefined);
    assert.deepEqual(parseInstallSettings({ NODE_NAME: 'n1', KUBERNETES_SERVICE_HOST: '10.96.0.1', NODE_READINESS_TAINT: 'true' }).readinessTaint, { nodeName: 'n1' });
    assert.throws(() => parseInstallSettings({ KUBERNETES_SERVICE_HOST: '10.96.0.1', NODE_READINESS_TAINT: 'true' }), /needs NODE_NAME/);
    assert.throws(() => parseInstallSettings({ NODE_NAME: 'n1', NODE_READINESS_TAINT: 'true' }), /needs NODE_NAME and KUBERNETES_SERVICE_HOST/);
  });

  it('refuses a service host that is not a host name or address', () => {
    assert.throws(() => parseInstallSettings({ KUBERNETES_SERVICE_HOST: 'evil/path?x' }), SettingsError);
  });

  it('writes the CA, or insecure-skip-tls-verify instead of it', () => {
    const account = { token: 't0k', ca: Buffer.from('CA PEM') };
    const secure = parseYaml(renderKubeconfig({ server: 'https://10.96.0.1:443', skipTlsVerify: false }, account));
    assert.equal(secure.clusters[0].cluster['certificate-authority-data'], Buffer.from('CA PEM').toString('base64'));
    assert.equal(secure.users[0].user.token, 't0k');
    const insecure = parseYaml(renderKubeconfig({ server: 'https://10.96.0.1:443', skipTlsVerify: true }, account));
    assert.deepEqual(insecure.clusters[0].cluster, { server: 'https://10.96.0.1:443', 'insecure-skip-tls-verify': true });
  });
});
