/**
 * Capture annotations end to end: libcni runs ptp + host-local and then the built dist/istio-cni for a
 * pod whose annotations (or istio-proxy container) ask for something other than the defaults. Each test
 * checks the rules in the pod netns and makes real connections that must, or must not, be redirected.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import * as h from '../harness/index.ts';

after(h.cleanupAll);

const WEB = { pod: 'web-0', namespace: 'default' };
const GATEWAY = '10.200.0.1';
type Backend = 'nft' | 'legacy';
type Container = Record<string, unknown> & { name: string };

/** An injected pod with these annotations; `proxy` edits its istio-proxy container. */
function annotatedPod(annotations: Record<string, string>, proxy: (c: Container) => void = () => {}): h.Pod {
  const pod = h.injectedPod(WEB.pod, WEB.namespace, { metadata: { annotations } });
  const containers = (pod.spec as { containers: Container[] }).containers;
  proxy(containers.find((c) => c.name === 'istio-proxy')!);
  return pod;
}

async function added(pod: h.Pod, opts: { backend?: Backend; tag: string; subnet6?: string }) {
  const conflist: h.ConflistOptions = { iptablesBackend: opts.backend ?? 'nft' };
  if (opts.subnet6) conflist.subnet6 = opts.subnet6;
  const e = await h.makeE2E({ tag: opts.tag, pods: [pod], conflist });
  const add = await e.run('add', WEB);
  assert.equal(add.code, 0, `${add.stdout}\n${add.stderr}`);
  const ips = (add.json as { ips: { address: string }[] }).ips.map((i) => i.address.split('/')[0]!);
  const check = await e.run('check', WEB);
  assert.equal(check.code, 0, `CHECK after ADD: ${check.stdout}`);
  return { e, podIp: ips.find((ip) => !ip.includes(':'))!, podIp6: ips.find((ip) => ip.includes(':')) };
}

const chain = (lines: string[], name: string) => lines.filter((l) => l.startsWith(`-A ${name} `));
const ours = (lines: string[]) => lines.filter((l) => l.includes('ISTIO_'));

/** Did a connection land on a listener at `port` in the pod (redirected), or reach its real target? */
async function redirectedTo(e: h.E2E, port: number, target: { ns?: h.NetnsRef; host: string; port: number; uid?: number; gid?: number }) {
  const listener = await h.startOrigDstListener(e.topo.pod, { port, timeoutMs: 4_000 });
  try {
    const direct = await h.probe({
      listenNs: target.ns ?? e.topo.node,
      listenHost: target.host.includes(':') ? '::' : '0.0.0.0',
      listenPort: target.port,
      connectNs: e.topo.pod,
      connectHost: target.host,
      ...(target.uid !== undefined ? { uid: target.uid, gid: target.gid ?? target.uid } : {}),
    });
    await listener.stop();
    const captured = await listener.result;
    return { captured: captured?.original_dst ?? null, reachedTarget: direct.listener !== null };
  } catch (err) {
    await listener.stop();
    throw err;
  }
}

describe('inbound ports', () => {
  for (const backend of ['nft', 'legacy'] as const) {
    it(`includeInboundPorts "8080" redirects only 8080 (iptables-${backend})`, async () => {
      const { e, podIp } = await added(annotatedPod({ 'traffic.sidecar.istio.io/includeInboundPorts': '8080' }), { backend, tag: `inc-${backend}` });
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
    const { e, podIp } = await added(annotatedPod({ 'traffic.sidecar.istio.io/includeInboundPorts': '' }), { tag: 'noin' });
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
    const { e } = await added(pod, { tag: 'cidr' });
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
    const { e } = await added(annotatedPod({ 'traffic.sidecar.istio.io/excludeOutboundPorts': '8081,5432' }), { tag: 'oport' });
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
    const { e } = await added(pod, { tag: 'uid' });
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
    const { e } = await added(pod, { tag: 'dns' });
    const nat = await h.iptablesS(e.topo.pod, 'nft');
    assert.deepEqual(chain(nat, 'ISTIO_OUTPUT_DNS'), [
      '-A ISTIO_OUTPUT_DNS -p tcp -m tcp --dport 53 -j REDIRECT --to-ports 15053',
      '-A ISTIO_OUTPUT_DNS -p udp -m udp --dport 53 -j REDIRECT --to-ports 15053',
    ]);
    assert.ok(chain(await h.iptablesS(e.topo.pod, 'nft', 'raw'), 'ISTIO_OUTPUT_DNS').length > 0);
    assert.deepEqual(await redirectedTo(e, 15053, { host: GATEWAY, port: 53 }), { captured: `${GATEWAY}:53`, reachedTarget: false });
    // The proxy's own DNS queries go out.
    assert.deepEqual(await redirectedTo(e, 15053, { host: GATEWAY, port: 53, uid: 1337 }), { captured: null, reachedTarget: true });
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
