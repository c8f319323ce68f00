/**
 * The istio-current profile through the whole chain (libcni: ptp + host-local, then the built
 * dist/istio-cni with `"rules_profile": "istio-current"`) on both iptables backends and on native
 * nftables: live connections redirected as a current proxy expects (IPv4 and IPv6, REDIRECT and
 * TPROXY on nftables), CHECK, a repeated ADD and DEL, including the profile's rules in built-in
 * chains. That the rules equal Istio's own is test/compat/'s job.
 */
import assert from 'node:assert/strict';
import { afterAll, describe, it } from 'vitest';
import * as h from '../harness/index.ts';

afterAll(h.cleanupAll);

const WEB = { pod: 'web-0', namespace: 'default' };
const GATEWAY = '10.200.0.1';
type Backend = 'nft' | 'legacy';

async function added(backend: Backend, tag: string, annotations: Record<string, string> = {}) {
  const pod = h.injectedPod(WEB.pod, WEB.namespace, { metadata: { annotations } });
  const e = await h.makeE2E({ tag, pods: [pod], conflist: { iptablesBackend: backend, istio: { rules_profile: 'istio-current' } } });
  const add = await e.run('add', WEB);
  assert.equal(add.code, 0, `${add.stdout}\n${add.stderr}`);
  const podIp = (add.json as { ips: { address: string }[] }).ips[0]!.address.split('/')[0]!;
  return { e, podIp };
}

/** Every table of the backend, rules only: what DEL must leave as it found it. */
async function allRules(ns: h.NetnsRef, backend: Backend): Promise<string[]> {
  const tables = await Promise.all(['nat', 'mangle', 'raw', 'filter'].map((t) => h.iptablesS(ns, backend, t)));
  return tables.flat().filter((l) => !l.startsWith('-P '));
}

/** A connection to `port` lands on its real listener and not on the inbound listener 15006. */
async function leftAlone(e: h.E2E, connect: { ns: h.NetnsRef; host: string; port: number; uid?: number }) {
  const inbound = await h.startOrigDstListener(e.topo.pod, { port: 15006, timeoutMs: 4_000 });
  try {
    const direct = await h.probe({
      listenNs: e.topo.pod,
      listenPort: connect.port,
      connectNs: connect.ns,
      connectHost: connect.host,
      ...(connect.uid === undefined ? {} : { uid: connect.uid, gid: connect.uid }),
    });
    await inbound.stop();
    return { direct: direct.listener, inbound: await inbound.result };
  } finally {
    await inbound.stop();
  }
}

/**
 * HBONE: inbound to the tunnel port reaches the proxy's tunnel listener itself, from outside and
 * from the proxy over lo; the health port 15021 is left alone too; and the proxy calling the pod's
 * own IP on an app port goes to the inbound listener (app -> VIP -> proxy -> app).
 */
async function assertProxyPortsAndHairpin(e: h.E2E, podIp: string): Promise<void> {
  for (const connect of [{ ns: e.topo.node, host: podIp, port: 15008 }, { ns: e.topo.pod, host: podIp, port: 15008, uid: 1337 }]) {
    const tunnel = await leftAlone(e, connect);
    assert.equal(tunnel.direct?.local, `${podIp}:15008`, JSON.stringify(connect));
    assert.equal(tunnel.inbound, null);
  }
  assert.equal((await leftAlone(e, { ns: e.topo.node, host: podIp, port: 15021 })).direct?.local, `${podIp}:15021`);
  const hairpin = await h.probe({ listenNs: e.topo.pod, listenPort: 15006, connectNs: e.topo.pod, connectHost: podIp, connectPort: 8080, uid: 1337, gid: 1337 });
  assert.equal(hairpin.listener?.original_dst, `${podIp}:8080`);
}

for (const backend of ['nft', 'legacy'] as const) {
  describe(`istio-current on iptables-${backend}`, () => {
    it('redirects like a current proxy expects: outbound to 15001, inbound to 15006, uid 1337 exempt, the tunnel port 15008 left alone', async () => {
      const { e, podIp } = await added(backend, `cur-traffic-${backend}`);
      const nat = await h.iptablesS(e.topo.pod, backend);
      assert.ok(nat.includes('-A ISTIO_INBOUND -p tcp -m tcp --dport 15008 -j RETURN'), nat.join('\n'));

      // The app's outbound connection lands on the outbound listener with its original destination.
      const outbound = await h.probe({ listenNs: e.topo.pod, listenPort: 15001, connectNs: e.topo.pod, connectHost: GATEWAY, connectPort: 8080 });
      assert.equal(outbound.listener?.original_dst, `${GATEWAY}:8080`);

      // The proxy (uid 1337) reaches the real destination.
      const proxy = await h.probe({ listenNs: e.topo.node, listenHost: GATEWAY, listenPort: 8081, connectNs: e.topo.pod, connectHost: GATEWAY, connectPort: 8081, uid: 1337, gid: 1337 });
      assert.equal(proxy.connect.connected, true, proxy.connect.error);
      assert.equal(proxy.listener?.local, `${GATEWAY}:8081`);

      // A client outside the pod connecting to the pod IP lands on the inbound listener.
      const inbound = await h.probe({ listenNs: e.topo.pod, listenPort: 15006, connectNs: e.topo.node, connectHost: podIp, connectPort: 8080 });
      assert.equal(inbound.listener?.original_dst, `${podIp}:8080`);

      await assertProxyPortsAndHairpin(e, podIp);
    });

    it('CHECK passes; a repeated ADD leaves one copy; DEL removes every rule, the ones in built-in chains too', async () => {
      const annotations = { 'sidecar.istio.io/interceptionMode': 'TPROXY', 'traffic.sidecar.istio.io/excludeInterfaces': 'eth1,net1', 'istio.io/reroute-virtual-interfaces': 'vm0' };
      const { e } = await added(backend, `cur-del-${backend}`, annotations);
      const programmed = await allRules(e.topo.pod, backend);
      for (const line of ['-A PREROUTING -i eth1 -j RETURN', '-A OUTPUT -o net1 -j RETURN', '-A PREROUTING -i vm0 -j RETURN', '-A OUTPUT -o lo -p tcp -m mark --mark 0x539 -j RETURN']) {
        assert.ok(programmed.includes(line), `${line}\n${programmed.join('\n')}`);
      }
      const check = await e.run('check', WEB);
      assert.equal(check.code, 0, check.stdout);

      const again = await e.runDirect('ADD', WEB, { prevResult: { cniVersion: '1.0.0', ips: [{ address: '10.200.0.9/24' }] } });
      assert.equal(again.code, 0, again.stdout);
      assert.deepEqual(await allRules(e.topo.pod, backend), programmed);

      await h.execInNetnsOk(e.topo.pod, [`/usr/sbin/iptables-${backend}`, '-t', 'mangle', '-D', 'OUTPUT', '-o', 'lo', '-p', 'tcp', '-m', 'mark', '--mark', '0x539', '-j', 'RETURN']);
      const broken = await e.run('check', WEB);
      assert.equal(broken.error?.code, 103);
      assert.match(broken.error?.details ?? '', /mangle: missing -A OUTPUT -o lo -p tcp -m mark --mark 0x539 -j RETURN/);

      const del = await e.run('del', WEB);
      assert.equal(del.code, 0, del.stderr);
      assert.deepEqual(await allRules(e.topo.pod, backend), []);
      assert.equal((await h.execInNetnsOk(e.topo.pod, [h.IP, '-4', 'rule', 'show'])).stdout.includes('lookup 133'), false);
    });
  });
}

describe('istio-current on native nftables', () => {
  const NAT = 'istio-proxy-nat';
  const MANGLE = 'istio-proxy-mangle';
  const profile = { rules_profile: 'istio-current' };

  it('redirects like a current proxy expects, IPv4 and IPv6: outbound to 15001 with its original destination, inbound to 15006, uid 1337 exempt, the tunnel port 15008 left alone', async () => {
    const pod = h.annotatedPod({}, (c) => (c.env as unknown[]).push({ name: 'ISTIO_DUAL_STACK', value: 'true' }));
    const { e, podIp, podIp6, gateway6 } = await h.addCaptured(pod, { backend: 'nftables', tag: 'cur-nft', subnet6: 'fd00:200::/64', istio: profile });
    assert.ok(podIp6 && gateway6, 'host-local gave the pod an IPv6 address and gateway');
    assert.equal((await h.nftChain(e.topo.pod, NAT, 'istio-inbound'))[0], 'tcp dport 15008 counter return');
    assert.ok(!(await h.nftChain(e.topo.pod, NAT, 'output')).some((l) => l.includes('nfproto')), 'both families are captured');
    assert.deepEqual(await h.ownedRules(e.topo.pod, 'nft'), [], 'no iptables rule of ours');
    // DAD may hold the new addresses back for a moment.
    await h.execInNetns(e.topo.pod, ['/usr/bin/sleep', '2']);

    for (const gateway of [GATEWAY, gateway6!]) {
      const shown = gateway.includes(':') ? `[${gateway}]` : gateway;
      assert.deepEqual(await h.redirectedTo(e, 15001, { host: gateway, port: 8080 }), { captured: `${shown}:8080`, reachedTarget: false }, gateway);
      assert.deepEqual(await h.redirectedTo(e, 15001, { host: gateway, port: 8081, uid: 1337 }), { captured: null, reachedTarget: true }, `${gateway}, uid 1337`);
    }
    const inbound = await h.probe({ listenNs: e.topo.pod, listenPort: 15006, connectNs: e.topo.node, connectHost: podIp, connectPort: 8080 });
    assert.equal(inbound.listener?.original_dst, `${podIp}:8080`);
    const inbound6 = await h.probe({ listenNs: e.topo.pod, listenHost: '::', listenPort: 15006, connectNs: e.topo.node, connectHost: podIp6!, connectPort: 8080 });
    assert.equal(inbound6.listener?.original_dst, `[${podIp6}]:8080`);

    await assertProxyPortsAndHairpin(e, podIp);

    const del = await e.run('del', WEB);
    assert.equal(del.code, 0, del.stdout);
    assert.deepEqual(await h.ownedRules(e.topo.pod, 'nftables'), []);
  });

  it('TPROXY: inbound reaches a transparent listener with its original destination; CHECK passes and names a deleted rule; a repeated ADD leaves one copy; DEL removes tables and routing', async () => {
    const annotations = { 'sidecar.istio.io/interceptionMode': 'TPROXY', 'traffic.sidecar.istio.io/excludeInterfaces': 'eth1,net1', 'istio.io/reroute-virtual-interfaces': 'vm0' };
    const { e, podIp } = await h.addCaptured(h.annotatedPod(annotations), { backend: 'nftables', tag: 'cur-nft-tproxy', istio: profile });
    const prerouting = await h.nftChain(e.topo.pod, NAT, 'prerouting');
    for (const line of ['iifname "vm0" counter jump istio-redirect', 'iifname "eth1" counter return']) assert.ok(prerouting.includes(line), `${line}\n${prerouting.join('\n')}`);
    assert.ok((await h.nftChain(e.topo.pod, MANGLE, 'output')).includes('oifname "lo" meta l4proto tcp meta mark 0x00000539 counter return'));
    assert.match((await h.execInNetnsOk(e.topo.pod, [h.IP, '-4', 'rule', 'show'])).stdout, /fwmark 0x539 lookup 133/);
    await h.execInNetns(e.topo.pod, ['/usr/bin/sleep', '1']);
    assert.deepEqual(await h.tproxyConnection(e, 15006, podIp, 8080), { local: `${podIp}:8080`, reply: 'tproxy-ok\n' });
    assert.deepEqual(await h.redirectedTo(e, 15001, { host: GATEWAY, port: 8080 }), { captured: `${GATEWAY}:8080`, reachedTarget: false });
    assert.deepEqual(await h.redirectedTo(e, 15001, { host: GATEWAY, port: 8081, uid: 1337 }), { captured: null, reachedTarget: true });

    const programmed = await h.ourNftTables(e.topo.pod);
    const again = await e.runDirect('ADD', WEB, { prevResult: { cniVersion: '1.0.0', ips: [{ address: '10.200.0.9/24' }] } });
    assert.equal(again.code, 0, again.stdout);
    assert.deepEqual(await h.ourNftTables(e.topo.pod), programmed);

    await h.nftDeleteRule(e.topo.pod, MANGLE, 'output', 'oifname "lo" meta l4proto tcp meta mark 0x00000539 counter return');
    const broken = await e.run('check', WEB);
    assert.equal(broken.error?.code, 103);
    assert.match(broken.error?.details ?? '', /istio-proxy-mangle output/);

    const del = await e.run('del', WEB);
    assert.equal(del.code, 0, del.stderr);
    assert.deepEqual(await h.ownedRules(e.topo.pod, 'nftables'), []);
    assert.doesNotMatch((await h.execInNetnsOk(e.topo.pod, [h.IP, '-4', 'rule', 'show'])).stdout, /lookup 133/);
  });
});

describe('rules_profile auto', () => {
  it('gives each pod the profile of its proxy version: the seed rules to a 1.4 proxy, current Istio\'s to a newer one', async () => {
    const withImage = (name: string, image: string) => {
      const pod = h.injectedPod(name, WEB.namespace);
      (pod.spec as { containers: { name: string; image: string }[] }).containers.find((c) => c.name === 'istio-proxy')!.image = image;
      return pod;
    };
    const pods = [withImage('old-0', 'docker.io/istio/proxyv2:1.4.3'), withImage('new-0', 'docker.io/istio/proxyv2:1.22.3')];
    const e = await h.makeE2E({ tag: 'cur-auto', pods, conflist: { iptablesBackend: 'nft', istio: { rules_profile: 'auto' } } });
    const inbound = async (pod: string) => {
      const ref = { pod, namespace: WEB.namespace };
      assert.equal((await e.run('add', ref)).code, 0);
      assert.equal((await e.run('check', ref)).code, 0);
      const rules = (await h.iptablesS(e.topo.pod, 'nft')).filter((l) => l.startsWith('-A ISTIO_INBOUND '));
      assert.equal((await e.run('del', ref)).code, 0);
      return rules;
    };
    assert.equal((await inbound('old-0'))[0], '-A ISTIO_INBOUND -p tcp -m tcp --dport 22 -j RETURN');
    assert.equal((await inbound('new-0'))[0], '-A ISTIO_INBOUND -p tcp -m tcp --dport 15008 -j RETURN');
  });
});

describe('istio-cni explain --profile', () => {
  it('prints the rules of the profile named, and refuses a profile that does not exist', async () => {
    const manifest = new URL('../fixtures/explain-pod.yaml', import.meta.url).pathname;
    const current = await h.run([h.DEFAULT_ISTIO_CNI_BIN, 'explain', manifest, '--profile', 'istio-current']);
    assert.equal(current.code, 0, current.stderr);
    assert.match(current.stdout, /^-A ISTIO_INBOUND -p tcp -m tcp --dport 15008 -j RETURN\n-A ISTIO_INBOUND -p tcp -m tcp --dport 9080 -j ISTIO_IN_REDIRECT$/m);
    const seed = await h.run([h.DEFAULT_ISTIO_CNI_BIN, 'explain', '--profile', 'seed', manifest]);
    assert.doesNotMatch(seed.stdout, /15008/);
    const bogus = await h.run([h.DEFAULT_ISTIO_CNI_BIN, 'explain', manifest, '--profile', 'current']);
    assert.equal(bogus.code, 2);
    assert.match(bogus.stderr, /--profile seed\|istio-current\|auto/);
  });
});
