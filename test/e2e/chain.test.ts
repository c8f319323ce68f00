/**
 * The spine, end to end: libcni runs ptp + host-local and then the built dist/istio-cni from a
 * conflist, against real network namespaces, on both iptables backends and on native nftables,
 * with the pod looked up from an HTTPS API server that checks the bearer token.
 */
import assert from 'node:assert/strict';
import { readFileSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, it } from 'vitest';
import * as h from '../harness/index.ts';

afterAll(h.cleanupAll);

const WEB = { pod: 'web-0', namespace: 'default' };
const PLAIN = { pod: 'plain-0', namespace: 'default' };
const GATEWAY = '10.200.0.1';
const RECORDER = join(h.REPO_ROOT, 'test', 'helpers', 'record-prev.py');

const BACKENDS = ['nft', 'legacy', 'nftables'] as const;
const label = (backend: h.CaptureBackend) => (backend === 'nftables' ? 'native nftables' : `iptables-${backend}`);

async function environment(backend: h.CaptureBackend, tag: string) {
  return h.makeE2E({
    tag,
    pods: [h.injectedPod(WEB.pod, WEB.namespace), h.plainPod(PLAIN.pod, PLAIN.namespace), h.injectedPod('coredns', 'kube-system')],
    conflist: { iptablesBackend: backend },
  });
}

const ours = (lines: string[]) => lines.filter((l) => l.includes('ISTIO_'));

for (const backend of BACKENDS) {
  describe(`chained after ptp, on ${label(backend)}`, () => {
    it('gives an injected pod exactly the seed rules and passes ptp\'s result through unchanged', async () => {
      const e = await environment(backend, `seed-${backend}`);
      // Recorders on both sides of istio-cni capture what it received and what it answered.
      const records = join(e.conf.confDir, 'records.jsonl');
      symlinkSync(RECORDER, join(e.cniPath, 'record-prev'));
      const [ptp, istio] = e.conf.conflist.plugins;
      const recorder = { type: 'record-prev', record_to: records };
      h.writeConflist({ dir: e.conf.confDir, netName: e.conf.netName, plugins: [ptp!, recorder, istio!, recorder] });

      const add = await e.run('add', WEB);
      assert.equal(add.code, 0, add.stderr);
      assert.deepEqual(await h.natRules(e.topo.pod, backend), h.seedRules(backend));

      const [before, afterIstio] = readFileSync(records, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
      assert.ok(before.prevResult.ips[0].address.startsWith('10.200.0.'));
      assert.deepEqual(afterIstio.prevResult, before.prevResult);
      assert.deepEqual(add.json, before.prevResult);
      assert.equal(e.api!.podRequests(WEB.namespace, WEB.pod).length, 1);
      assert.equal(e.api!.podRequests(WEB.namespace, WEB.pod)[0]!.auth, 'token');
    });

    it('leaves one copy of every rule after a second ADD on the same netns', async () => {
      const e = await environment(backend, `twice-${backend}`);
      const add = await e.run('add', WEB);
      assert.equal(add.code, 0, add.stderr);
      const again = await e.runDirect('ADD', WEB, { prevResult: add.json });
      assert.equal(again.code, 0, again.stdout);
      assert.deepEqual(again.json, add.json);
      assert.deepEqual(await h.natRules(e.topo.pod, backend), h.seedRules(backend));
    });

    it('CHECK passes on the programmed netns and fails naming a deleted rule', async () => {
      const e = await environment(backend, `check-${backend}`);
      assert.equal((await e.run('add', WEB)).code, 0);
      const ok = await e.run('check', WEB);
      assert.equal(ok.code, 0, ok.stderr);

      if (backend === 'nftables') await h.nftDeleteRule(e.topo.pod, 'istio-proxy-nat', 'istio-output', 'meta skuid 1337 counter return');
      else await h.execInNetnsOk(e.topo.pod, [`/usr/sbin/iptables-${backend}`, '-t', 'nat', '-D', 'ISTIO_OUTPUT', '-m', 'owner', '--uid-owner', '1337', '-j', 'RETURN']);
      const broken = await e.run('check', WEB);
      assert.notEqual(broken.code, 0);
      assert.equal(broken.error?.code, 103);
      const named = backend === 'nftables'
        ? /istio-proxy-nat istio-output rule 3: expected "meta skuid 1337 counter return", found "meta skgid 1337 counter return"/
        : /missing -A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN/;
      assert.match(broken.error?.details ?? '', named);
    });

    it('DEL removes the four chains and both jumps; a DEL without netns succeeds', async () => {
      const e = await environment(backend, `del-${backend}`);
      assert.equal((await e.run('add', WEB)).code, 0);
      const del = await e.run('del', WEB);
      assert.equal(del.code, 0, del.stderr);
      assert.deepEqual(await h.ownedRules(e.topo.pod, backend), []);
      assert.deepEqual(await h.natRules(e.topo.pod, backend), h.emptyNatRules(backend));

      // containerd's RemovePodSandbox: a second DEL with an empty CNI_NETNS and no prevResult.
      const second = await e.runDirect('DEL', WEB, { netns: '' });
      assert.equal(second.code, 0, second.stdout);
      assert.equal(second.stdout, '');
    });

    it('leaves a pod without a sidecar alone', async () => {
      const e = await environment(backend, `plain-${backend}`);
      const add = await e.run('add', PLAIN);
      assert.equal(add.code, 0, add.stderr);
      assert.deepEqual(await h.ownedRules(e.topo.pod, backend), []);
      assert.equal(e.api!.podRequests(PLAIN.namespace, PLAIN.pod).length, 1);
      assert.equal((await e.run('check', PLAIN)).code, 0);
    });
  });
}

describe('pods decided without the API', () => {
  it('passes an excluded namespace and a sandbox with no pod args without any API call', async () => {
    const e = await environment('nft', 'excluded');
    const add = await e.run('add', { pod: 'coredns', namespace: 'kube-system' });
    assert.equal(add.code, 0, add.stderr);
    assert.deepEqual(ours(await h.iptablesS(e.topo.pod, 'nft')), []);

    const other = await environment('nft', 'noargs');
    assert.equal((await other.run('add')).code, 0);
    assert.deepEqual(ours(await h.iptablesS(other.topo.pod, 'nft')), []);
    assert.equal(e.api!.requests.length + other.api!.requests.length, 0);
  });

  it('fails the ADD when the API refuses the token, and programs nothing', async () => {
    const e = await h.makeE2E({ tag: 'badtoken', pods: [h.injectedPod(WEB.pod, WEB.namespace)], kubeconfig: { auth: 'token', caMode: 'data', badCredentials: true } });
    const add = await e.run('add', WEB);
    assert.notEqual(add.code, 0);
    assert.equal(add.error?.code, 101);
    assert.match(add.error?.details ?? '', /HTTP 401/);
    assert.deepEqual(ours(await h.iptablesS(e.topo.pod, 'nft')), []);
  });
});

describe('the redirect is real', () => {
  for (const backend of BACKENDS) {
    it(`captures outbound and inbound TCP but not the proxy's own traffic (${label(backend)})`, async () => {
      const e = await environment(backend, `traffic-${backend}`);
      const add = await e.run('add', WEB);
      assert.equal(add.code, 0, add.stderr);
      const podIp = ((add.json as { ips: { address: string }[] }).ips[0]!.address).split('/')[0]!;

      // An app connecting to an address outside the pod lands on the outbound listener.
      const outbound = await h.probe({ listenNs: e.topo.pod, listenPort: 15001, connectNs: e.topo.pod, connectHost: GATEWAY, connectPort: 8080 });
      assert.equal(outbound.listener?.original_dst, `${GATEWAY}:8080`);

      // The proxy (uid 1337) reaches the real destination, here a listener on the node side.
      const proxy = await h.probe({ listenNs: e.topo.node, listenHost: GATEWAY, listenPort: 8081, connectNs: e.topo.pod, connectHost: GATEWAY, connectPort: 8081, uid: 1337, gid: 1337 });
      assert.equal(proxy.connect.connected, true, proxy.connect.error);
      assert.ok(proxy.listener, 'the uid 1337 connection reached the node-side listener');
      assert.equal(proxy.listener.local, `${GATEWAY}:8081`);

      // A client on the node connecting to the pod IP lands on the inbound listener.
      const inbound = await h.probe({ listenNs: e.topo.pod, listenPort: 15006, connectNs: e.topo.node, connectHost: podIp, connectPort: 8080 });
      assert.equal(inbound.listener?.original_dst, `${podIp}:8080`);
    });
  }
});
