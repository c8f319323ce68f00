/**
 * Capture annotations end to end: libcni runs ptp + host-local and then the built dist/istio-cni for a
 * pod whose annotations (or istio-proxy container) ask for something other than the defaults. Each test
 * checks the rules in the pod netns and makes real connections that must, or must not, be redirected.
 */
import assert from 'node:assert/strict';
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { afterAll, describe, it } from 'vitest';
import * as h from '../harness/index.ts';

afterAll(h.cleanupAll);

const { WEB, GATEWAY, annotatedPod, redirectedTo, udpQueryLandsIn } = h;

const chain = (lines: string[], name: string) => lines.filter((l) => l.startsWith(`-A ${name} `));
const ours = (lines: string[]) => lines.filter((l) => l.includes('ISTIO_'));

describe('inbound ports', () => {
  for (const backend of ['nft', 'legacy'] as const) {
    it(`includeInboundPorts "8080" redirects only 8080 (iptables-${backend})`, async () => {
      const { e, podIp } = await h.addCaptured(annotatedPod({ 'traffic.sidecar.istio.io/includeInboundPorts': '8080' }), { backend, tag: `inc-${backend}` });
      const nat = await h.iptablesS(e.topo.pod, backend);
      assert.deepEqual(chain(nat, 'ISTIO_INBOUND'), ['-A ISTIO_INBOUND -p tcp -m tcp --dport 8080 -j ISTIO_IN_REDIRECT']);
      // An IPv4-only pod gets no ip6tables rules.
      assert.deepEqual(ours(await h.iptablesS(e.topo.pod, backend, 'nat', { ipv6: true })), []);

      const captured = await h.probe({ listenNs: e.topo.pod, listenPort: 15006, connectNs: e.topo.node, connectHost: podIp, connectPort: 8080 });
      assert.equal(captured.listener?.original_dst, `${podIp}:8080`);
      const direct = await h.probe({ listenNs: e.topo.pod, listenPort: 9090, connectNs: e.topo.node, connectHost: podIp });
      assert.equal(direct.listener?.local, `${podIp}:9090`, 'port 9090 is not captured: the app answers it');
    });
  }

  it('includeInboundPorts "" captures nothing inbound: no ISTIO_INBOUND, no PREROUTING jump', async () => {
    const { e, podIp } = await h.addCaptured(annotatedPod({ 'traffic.sidecar.istio.io/includeInboundPorts': '' }), { backend: 'nft', tag: 'noin' });
    const nat = await h.iptablesS(e.topo.pod, 'nft');
    assert.deepEqual(nat.filter((l) => l.includes('ISTIO_INBOUND') || l.startsWith('-A PREROUTING')), []);
    const direct = await h.probe({ listenNs: e.topo.pod, listenPort: 8080, connectNs: e.topo.node, connectHost: podIp });
    assert.equal(direct.listener?.local, `${podIp}:8080`);
    // Outbound is still captured.
    const out = await redirectedTo(e, 15001, { host: GATEWAY, port: 8080 });
    assert.equal(out.captured, `${GATEWAY}:8080`);
  });
});

describe('outbound', () => {
  it('includeOutboundIPRanges captures only those ranges, excludeOutboundIPRanges carves out of them', async () => {
    const pod = annotatedPod({
      'traffic.sidecar.istio.io/includeOutboundIPRanges': '10.201.0.0/16, 10.202.0.0/16',
      'traffic.sidecar.istio.io/excludeOutboundIPRanges': '10.202.0.0/24',
    });
    const { e } = await h.addCaptured(pod, { backend: 'nft', tag: 'cidr' });
    // Two more destinations, on the node side of the test topology only.
    for (const address of ['10.201.0.1/32', '10.202.0.1/32']) await h.execInNetnsOk(e.topo.node, [h.IP, 'addr', 'add', address, 'dev', 'lo']);
    const out = chain(await h.iptablesS(e.topo.pod, 'nft'), 'ISTIO_OUTPUT');
    assert.deepEqual(out.slice(-4), [
      '-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN',
      '-A ISTIO_OUTPUT -d 10.202.0.0/24 -j RETURN',
      '-A ISTIO_OUTPUT -d 10.201.0.0/16 -j ISTIO_REDIRECT',
      '-A ISTIO_OUTPUT -d 10.202.0.0/16 -j ISTIO_REDIRECT',
    ]);
    assert.deepEqual(await redirectedTo(e, 15001, { host: '10.201.0.1', port: 8080 }), { captured: '10.201.0.1:8080', reachedTarget: false });
    assert.deepEqual(await redirectedTo(e, 15001, { host: '10.202.0.1', port: 8081 }), { captured: null, reachedTarget: true });
    assert.deepEqual(await redirectedTo(e, 15001, { host: GATEWAY, port: 8082 }), { captured: null, reachedTarget: true });
  });

  it('excludeOutboundPorts leaves those ports alone and captures the rest', async () => {
    const { e } = await h.addCaptured(annotatedPod({ 'traffic.sidecar.istio.io/excludeOutboundPorts': '8081,5432' }), { backend: 'nft', tag: 'oport' });
    assert.deepEqual(chain(await h.iptablesS(e.topo.pod, 'nft'), 'ISTIO_OUTPUT').slice(0, 2), [
      '-A ISTIO_OUTPUT -p tcp -m tcp --dport 8081 -j RETURN',
      '-A ISTIO_OUTPUT -p tcp -m tcp --dport 5432 -j RETURN',
    ]);
    assert.deepEqual(await redirectedTo(e, 15001, { host: GATEWAY, port: 8081 }), { captured: null, reachedTarget: true });
    assert.deepEqual(await redirectedTo(e, 15001, { host: GATEWAY, port: 8080 }), { captured: `${GATEWAY}:8080`, reachedTarget: false });
  });

  it('the proxy identity comes from the istio-proxy securityContext', async () => {
    const pod = annotatedPod({}, (c) => {
      c.securityContext = { runAsUser: 2000, runAsGroup: 2001, runAsNonRoot: true };
    });
    const { e } = await h.addCaptured(pod, { backend: 'nft', tag: 'uid' });
    const out = chain(await h.iptablesS(e.topo.pod, 'nft'), 'ISTIO_OUTPUT');
    assert.ok(out.includes('-A ISTIO_OUTPUT -m owner --uid-owner 2000 -j RETURN'));
    assert.ok(out.includes('-A ISTIO_OUTPUT -m owner --gid-owner 2001 -j RETURN'));
    assert.ok(!out.some((l) => l.includes('1337')));
    assert.deepEqual(await redirectedTo(e, 15001, { host: GATEWAY, port: 8081, uid: 2000, gid: 2001 }), { captured: null, reachedTarget: true });
    assert.deepEqual(await redirectedTo(e, 15001, { host: GATEWAY, port: 8082, uid: 1337, gid: 1337 }), { captured: `${GATEWAY}:8082`, reachedTarget: false });
  });

  it('DNS capture sends TCP and UDP port 53 to the agent on 15053', async () => {
    const pod = annotatedPod({}, (c) => {
      (c.env as unknown[]).push({ name: 'ISTIO_META_DNS_CAPTURE', value: 'true' });
    });
    const { e } = await h.addCaptured(pod, { backend: 'nft', tag: 'dns' });
    const nat = await h.iptablesS(e.topo.pod, 'nft');
    assert.deepEqual(chain(nat, 'ISTIO_OUTPUT_DNS'), [
      '-A ISTIO_OUTPUT_DNS -p tcp -m tcp --dport 53 -j REDIRECT --to-ports 15053',
      '-A ISTIO_OUTPUT_DNS -p udp -m udp --dport 53 -j REDIRECT --to-ports 15053',
    ]);
    assert.ok(chain(await h.iptablesS(e.topo.pod, 'nft', 'raw'), 'ISTIO_OUTPUT_DNS').length > 0);
    assert.deepEqual(await redirectedTo(e, 15053, { host: GATEWAY, port: 53 }), { captured: `${GATEWAY}:53`, reachedTarget: false });
    // The proxy's own DNS queries go out.
    assert.deepEqual(await redirectedTo(e, 15053, { host: GATEWAY, port: 53, uid: 1337 }), { captured: null, reachedTarget: true });
    // UDP too: the app's query lands on the agent's port, the proxy's reaches the server.
    assert.equal(await udpQueryLandsIn(e.topo.pod, 15053, e.topo.pod, 'app-query'), 'app-query');
    assert.equal(await udpQueryLandsIn(e.topo.node, 53, e.topo.pod, 'proxy-query', 1337), 'proxy-query');
  });
});

describe('refused annotations', () => {
  const bad: Record<string, string>[] = [
    { 'traffic.sidecar.istio.io/includeInboundPorts': '80;reboot' },
    { 'traffic.sidecar.istio.io/excludeOutboundIPRanges': '10.0.0.0/33' },
    { 'traffic.sidecar.istio.io/kubevirtInterfaces': 'eth0 -j ACCEPT' },
    { 'sidecar.istio.io/interceptionMode': 'tproxy' },
  ];
  it('fails ADD with error 106 naming the annotation and value, and changes nothing in the netns', async () => {
    for (const [i, annotations] of bad.entries()) {
      const e = await h.makeE2E({ tag: `bad${i}`, pods: [annotatedPod(annotations)], conflist: { iptablesBackend: 'nft' } });
      const before = h.normalizeIptablesSave(await h.iptablesSave(e.topo.pod, 'nft', 'nat'));
      const add = await e.run('add', WEB);
      assert.notEqual(add.code, 0);
      assert.equal(add.error?.code, 106, add.stdout);
      const [key, value] = Object.entries(annotations)[0]!;
      assert.ok(add.error?.msg.includes(key) && (add.error.details ?? "").includes(JSON.stringify(value)), JSON.stringify(add.error));
      for (const table of ['nat', 'mangle', 'raw']) assert.deepEqual(ours(await h.iptablesS(e.topo.pod, 'nft', table)), [], table);
      assert.equal(h.normalizeIptablesSave(await h.iptablesSave(e.topo.pod, 'nft', 'nat')), before);
    }
  });
});

describe('IPv6', () => {
  it('a dual-stack pod gets ip6tables rules too, ::6 on lo, and its IPv6 traffic is redirected', async () => {
    const pod = annotatedPod({ 'traffic.sidecar.istio.io/excludeOutboundIPRanges': '10.201.0.0/16,fd00:201::/64' });
    const { e, podIp6, gateway6 } = await h.addCaptured(pod, { backend: 'nft', tag: 'v6', subnet6: 'fd00:200::/64' });
    assert.ok(podIp6 && gateway6, 'host-local gave the pod an IPv6 address and gateway');
    const v6 = await h.iptablesS(e.topo.pod, 'nft', 'nat', { ipv6: true });
    assert.ok(v6.includes('-A ISTIO_OUTPUT -s ::6/128 -o lo -j RETURN'));
    assert.ok(v6.includes('-A ISTIO_OUTPUT ! -d ::1/128 -o lo -j ISTIO_IN_REDIRECT'));
    assert.ok(v6.includes('-A ISTIO_OUTPUT -d fd00:201::/64 -j RETURN'));
    assert.ok(!v6.some((l) => l.includes('10.201.0.0')));
    assert.ok(!(await h.iptablesS(e.topo.pod, 'nft')).some((l) => l.includes('fd00:201::')));
    const lo = await h.ipAddr(e.topo.pod, 'lo');
    assert.ok(lo[0]?.addr_info?.some((a) => a.local === '::6'), 'the IPv6 passthrough source ::6 is on lo');

    // DAD may hold the new addresses back for a moment.
    await h.execInNetns(e.topo.pod, ['/usr/bin/sleep', '2']);
    assert.deepEqual(await redirectedTo(e, 15001, { host: gateway6!, port: 8080 }), { captured: `[${gateway6}]:8080`, reachedTarget: false });
    const inbound = await h.probe({ listenNs: e.topo.pod, listenHost: '::', listenPort: 15006, connectNs: e.topo.node, connectHost: podIp6!, connectPort: 8080 });
    assert.equal(inbound.listener?.original_dst, `[${podIp6}]:8080`);

    const del = await e.run('del', WEB);
    assert.equal(del.code, 0, del.stdout);
    assert.deepEqual(ours(await h.iptablesS(e.topo.pod, 'nft', 'nat', { ipv6: true })), []);
    assert.deepEqual(ours(await h.iptablesS(e.topo.pod, 'nft')), []);
  });

  it('rolls IPv4 back when the IPv6 half fails, so nothing is half-applied', async () => {
    const e = await h.makeE2E({ tag: 'rollback', pods: [h.injectedPod(WEB.pod, WEB.namespace), h.plainPod('plain-0', 'default')], conflist: { iptablesBackend: 'nft' } });
    // ptp sets the pod up (a plain pod: istio-cni programs nothing); then istio-cni alone gets a dual-stack prevResult.
    const plain = await e.run('add', { pod: 'plain-0', namespace: 'default' });
    assert.equal(plain.code, 0, plain.stdout);
    const prevResult = structuredClone(plain.json) as { ips: { address: string }[] };
    prevResult.ips.push({ address: 'fd00:200::5/64' });
    // With IPv6 off in the pod netns, the IPv6 half cannot be programmed.
    await h.execInNetnsOk(e.topo.pod, ['/usr/sbin/sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1']);
    const add = await e.runDirect('ADD', WEB, { prevResult });
    assert.notEqual(add.code, 0);
    assert.equal((add.json as { code?: number }).code, 102, add.stdout);
    assert.match((add.json as { msg: string }).msg, /::6/, 'it failed in the IPv6 step, after IPv4 was programmed');
    assert.deepEqual(ours(await h.iptablesS(e.topo.pod, 'nft')), [], 'the IPv4 rules were removed again');
    assert.deepEqual(ours(await h.iptablesS(e.topo.pod, 'nft', 'nat', { ipv6: true })), []);
  });
});

describe('TPROXY', () => {
  it('diverts inbound through mangle with mark 1337 and table 133 to a transparent listener; DEL removes rules and routing', async () => {
    const { e, podIp } = await h.addCaptured(annotatedPod({ 'sidecar.istio.io/interceptionMode': 'TPROXY' }), { backend: 'nft', tag: 'tproxy' });
    const mangle = await h.iptablesS(e.topo.pod, 'nft', 'mangle');
    assert.ok(mangle.includes('-A PREROUTING -p tcp -j ISTIO_INBOUND'));
    assert.ok(mangle.includes('-A ISTIO_TPROXY ! -d 127.0.0.1/32 -p tcp -j TPROXY --on-port 15006 --on-ip 0.0.0.0 --tproxy-mark 0x539/0xffffffff'));
    assert.deepEqual(chain(mangle, 'ISTIO_DIVERT'), ['-A ISTIO_DIVERT -j MARK --set-xmark 0x539/0xffffffff', '-A ISTIO_DIVERT -j ACCEPT']);
    assert.ok(!(await h.iptablesS(e.topo.pod, 'nft')).some((l) => l.includes('ISTIO_INBOUND')), 'no nat inbound rules');
    const rules = await h.execInNetnsOk(e.topo.pod, [h.IP, '-4', 'rule', 'show']);
    assert.match(rules.stdout, /fwmark 0x539 lookup 133/);
    const routes = await h.execInNetnsOk(e.topo.pod, [h.IP, '-4', 'route', 'show', 'table', '133']);
    assert.match(routes.stdout, /local default dev lo/);

    // A transparent listener on 15006 (as Envoy's) gets the node's connection to the pod IP, with the
    // original destination as its local address.
    assert.deepEqual(await h.tproxyConnection(e, 15006, podIp, 8080), { local: `${podIp}:8080`, reply: 'tproxy-ok\n' });

    const del = await e.run('del', WEB);
    assert.equal(del.code, 0, del.stdout);
    for (const table of ['nat', 'mangle']) assert.deepEqual(ours(await h.iptablesS(e.topo.pod, 'nft', table)), [], table);
    assert.doesNotMatch((await h.execInNetnsOk(e.topo.pod, [h.IP, '-4', 'rule', 'show'])).stdout, /lookup 133/);
  });
});

/** explain needs no privileges: it runs as nobody. */
const AS_NOBODY = ['/usr/bin/setpriv', '--reuid=65534', '--regid=65534', '--clear-groups'];

describe('istio-cni explain', () => {
  it('prints the restore text ADD would apply, without root or a netns', async () => {
    const manifest = new URL('../fixtures/explain-pod.yaml', import.meta.url).pathname;
    const out = await h.run([...AS_NOBODY, h.DEFAULT_ISTIO_CNI_BIN, 'explain', manifest]);
    assert.equal(out.code, 0, out.stderr);
    assert.match(out.stdout, /^-A ISTIO_INBOUND -p tcp -m tcp --dport 9080 -j ISTIO_IN_REDIRECT$/m);
    assert.match(out.stdout, /^-A ISTIO_OUTPUT -d 169\.254\.169\.254\/32 -j RETURN$/m);
    assert.doesNotMatch(out.stdout, /ip6tables/);
    const v6 = await h.run([...AS_NOBODY, h.DEFAULT_ISTIO_CNI_BIN, 'explain', manifest, '--ipv6']);
    assert.match(v6.stdout, /# IPv6: ip6tables-restore --noflush\n\*nat\n/);
    assert.match(v6.stdout, /^-A ISTIO_OUTPUT -s ::6\/128 -o lo -j RETURN$/m);
  });

  it('names the annotation and the value the rule core refuses', async () => {
    const manifest = join(h.makeTempDir('icni-explain-'), 'bad.yaml');
    const good = readFileSync(new URL('../fixtures/explain-pod.yaml', import.meta.url), 'utf8');
    writeFileSync(manifest, good.replace('includeInboundPorts: "9080"', 'includeInboundPorts: "9080,"'), { mode: 0o644 });
    chmodSync(dirname(manifest), 0o755);
    const out = await h.run([...AS_NOBODY, h.DEFAULT_ISTIO_CNI_BIN, 'explain', manifest]);
    assert.equal(out.code, 1, out.stdout);
    assert.equal(out.stdout, '');
    assert.equal(out.stderr, 'istio-cni explain: invalid value for traffic.sidecar.istio.io/includeInboundPorts: traffic.sidecar.istio.io/includeInboundPorts="9080,": empty item in the comma-separated list\n');
  });
});
