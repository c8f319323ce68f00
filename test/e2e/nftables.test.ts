/**
 * Native nftables (`"iptables_backend": "nftables"`) end to end, through the built dist/istio-cni:
 * the pod's capture as inet tables written in one `nft -f` transaction per ADD, with no iptables
 * program run; DEL deleting our tables by name and nothing else; CHECK naming the first difference;
 * and real connections for each interception mode and address family. (The seed rules, repeated
 * ADD, CHECK and DEL through libcni are in chain.test.ts, which runs on every backend.)
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, it } from 'vitest';
import fc from 'fast-check';
import * as h from '../harness/index.ts';
import { redirectSettings } from '../harness/redirect-settings.ts';
import type { RedirectSettings } from '../../src/redirect/settings.ts';
import { forbidXtables, makeMountNs, recordNft, type MountNs } from '../hostile/mountns.ts';

afterAll(h.cleanupAll);

const { WEB, GATEWAY, annotatedPod, redirectedTo, udpQueryLandsIn } = h;
const BACKEND = 'nftables';
const NAT = 'istio-proxy-nat';

/** One verb of the plugin for WEB, run by hand in the node netns inside the mount namespace `mnt`. */
async function runIn(mnt: MountNs, e: h.E2E, command: string, prevResult?: unknown) {
  const env = { CNI_COMMAND: command, CNI_CONTAINERID: 'c1', CNI_NETNS: e.topo.pod.path, CNI_IFNAME: 'eth0', CNI_ARGS: h.formatCniArgs(e.cniArgsFor(WEB)), CNI_PATH: e.cniPath };
  return h.run(mnt.argv([h.DEFAULT_ISTIO_CNI_BIN], e.topo.node), { env, input: JSON.stringify(e.pluginStdin(prevResult)), timeoutMs: 30_000 });
}

/** Someone else's nftables state in the pod netns: a table of ours by name but of family ip, and an inet table. */
const FOREIGN = [
  'add table ip istio-proxy-nat',
  'add chain ip istio-proxy-nat output { type nat hook output priority 100; }',
  'add rule ip istio-proxy-nat output tcp dport 9999 counter accept',
  'add table inet keep',
  'add chain inet keep input { type filter hook input priority 0; }',
  'add rule inet keep input tcp dport 9999 counter accept',
].join('\n');

describe('native nftables: one transaction, our tables only', () => {
  it('ADD is one `nft -f` and no iptables program; a repeated ADD replaces the tables in one more; DEL deletes ours by name', async () => {
    const e = await h.makeE2E({ tag: 'nft-tx', pods: [h.injectedPod(WEB.pod, WEB.namespace)], conflist: { iptablesBackend: BACKEND } });
    const mnt = await makeMountNs();
    const calls = await recordNft(mnt);
    const xtablesRan = await forbidXtables(mnt);
    await h.execInNetnsOk(e.topo.pod, [h.NFT, '-f', '-'], { input: FOREIGN });
    const foreign = [await h.nftTable(e.topo.pod, 'istio-proxy-nat', 'ip'), await h.nftTable(e.topo.pod, 'keep')];

    const add = await runIn(mnt, e, 'ADD');
    assert.equal(add.code, 0, add.stdout);
    assert.deepEqual(await h.natRules(e.topo.pod, BACKEND), h.seedRules(BACKEND));
    assert.deepEqual(calls().map((c) => c.args), [['-f', '-']]);

    // The pod now asks for other rules (as after an annotation change): the next ADD replaces them.
    e.api!.setPod(annotatedPod({ 'traffic.sidecar.istio.io/includeInboundPorts': '8080' }, (c) => (c.env as unknown[]).push({ name: 'ISTIO_META_DNS_CAPTURE', value: 'true' })));
    const again = await runIn(mnt, e, 'ADD');
    assert.equal(again.code, 0, again.stdout);
    assert.deepEqual(calls().map((c) => c.args), [['-f', '-'], ['-f', '-']]);
    assert.deepEqual(await h.nftChain(e.topo.pod, NAT, 'istio-inbound'), ['tcp dport 8080 counter jump istio-in-redirect']);
    assert.ok((await h.nftChain(e.topo.pod, NAT, 'istio-output-dns')).includes('udp dport 53 counter redirect to :15053'));
    assert.deepEqual((await h.nftTables(e.topo.pod)).sort(), ['inet istio-proxy-nat', 'inet istio-proxy-raw', 'inet keep', 'ip istio-proxy-nat']);

    assert.equal((await runIn(mnt, e, 'CHECK')).code, 0);
    const del = await runIn(mnt, e, 'DEL');
    assert.equal(del.code, 0, del.stdout);
    assert.deepEqual(await h.ownedRules(e.topo.pod, BACKEND), []);
    assert.deepEqual([await h.nftTable(e.topo.pod, 'istio-proxy-nat', 'ip'), await h.nftTable(e.topo.pod, 'keep')], foreign, 'the other tables are untouched');
    // DEL read the ruleset, then sent a script of our table names only: nothing it read went back to nft.
    const [, , check, list, removal] = calls();
    assert.deepEqual([check?.args, list?.args, removal?.args], [['-j', 'list', 'ruleset'], ['-j', 'list', 'ruleset'], ['-f', '-']]);
    const names = ['istio-proxy-nat', 'istio-proxy-mangle', 'istio-proxy-raw'];
    assert.deepEqual(removal?.script?.trim().split('\n'), names.flatMap((t) => [`add table inet ${t}`, `delete table inet ${t}`]));
    assert.equal(calls().length, 5);

    const second = await runIn(mnt, e, 'DEL');
    assert.equal(second.code, 0, second.stdout);
    assert.equal(calls().length, 6, 'a DEL with nothing of ours lists and sends nothing');
    assert.equal(existsSync(xtablesRan), false, 'no iptables program ran');
  });

  it('a failed transaction leaves no rule of ours, on a fresh netns and over an earlier ADD', async () => {
    const e = await h.makeE2E({ tag: 'nft-fail', pods: [h.injectedPod(WEB.pod, WEB.namespace)], conflist: { iptablesBackend: BACKEND } });
    await h.execInNetnsOk(e.topo.pod, [h.NFT, '-f', '-'], { input: FOREIGN });
    const words = 'Error: Could not process rule: No such file or directory\n';
    const fresh = await makeMountNs();
    await recordNft(fresh, { failTransactions: 1, failWith: words });
    const failed = await runIn(fresh, e, 'ADD');
    assert.equal(failed.code, 1);
    assert.deepEqual(JSON.parse(failed.stdout).code, 102);
    assert.match(JSON.parse(failed.stdout).details, /Could not process rule/);
    assert.deepEqual(await h.ownedRules(e.topo.pod, BACKEND), []);

    assert.equal((await e.runDirect('ADD', WEB)).code, 0);
    const over = await makeMountNs();
    await recordNft(over, { failTransactions: 1, failWith: words });
    assert.equal((await runIn(over, e, 'ADD')).code, 1);
    assert.deepEqual(await h.ownedRules(e.topo.pod, BACKEND), [], 'the earlier rules were removed, not left half-replaced');
    assert.deepEqual((await h.nftTables(e.topo.pod)).sort(), ['inet keep', 'ip istio-proxy-nat']);
  });

  it('CHECK names the first difference in a chain: a rule someone added, a chain someone removed', async () => {
    const { e } = await h.addCaptured(h.injectedPod(WEB.pod, WEB.namespace), { backend: BACKEND, tag: 'nft-check' });
    await h.execInNetnsOk(e.topo.pod, [h.NFT, 'insert', 'rule', 'inet', NAT, 'istio-output', 'tcp', 'dport', '443', 'return']);
    const inserted = await e.run('check', WEB);
    assert.equal(inserted.error?.code, 103, inserted.stdout);
    assert.match(inserted.error?.details ?? '', /istio-proxy-nat istio-output rule 1: expected "ip saddr 127\.0\.0\.6 oifname \\"lo\\" counter return", found "tcp dport 443 return"/);

    await h.execInNetnsOk(e.topo.pod, [h.NFT, 'flush', 'chain', 'inet', NAT, 'istio-inbound']);
    await h.execInNetnsOk(e.topo.pod, [h.NFT, 'flush', 'chain', 'inet', NAT, 'prerouting']);
    await h.execInNetnsOk(e.topo.pod, [h.NFT, 'delete', 'chain', 'inet', NAT, 'istio-inbound']);
    const removed = await e.run('check', WEB);
    assert.match(removed.error?.details ?? '', /istio-proxy-nat: missing chain istio-inbound/);
    assert.match(removed.error?.details ?? '', /istio-proxy-nat prerouting rule 1: missing "meta nfproto ipv6 counter return"/);
  });
});

/**
 * src/netns/capture.ts's ADD, CHECK, DEL and CHECK again of `settings` in `netnsPath` (opened as the
 * plugin opens CNI_NETNS), run under the Bun the executable is compiled with (src/netns spawns with
 * Bun.spawn): CHECK's differences after ADD, and after DEL against no rules at all.
 */
async function captureRoundTrip(netnsPath: string, settings: RedirectSettings): Promise<{ applied: string[]; removed: string[] }> {
  const script = `import { applyCapture, captureDifferences, removeCapture } from ${JSON.stringify(join(h.REPO_ROOT, 'src', 'netns', 'capture.ts'))};
import { openPodNetns } from ${JSON.stringify(join(h.REPO_ROOT, 'src', 'netns', 'netns.ts'))};
const [ns, settings] = [openPodNetns(${JSON.stringify(netnsPath)}), ${JSON.stringify(settings)}];
await applyCapture(ns, ${JSON.stringify(BACKEND)}, settings);
const applied = await captureDifferences(ns, ${JSON.stringify(BACKEND)}, settings);
await removeCapture(ns, ${JSON.stringify(BACKEND)}, settings);
process.stdout.write(JSON.stringify({ applied, removed: await captureDifferences(ns, ${JSON.stringify(BACKEND)}, undefined) }));`;
  const r = await h.runOk([h.BUN_RUNTIME, '-e', script], { timeoutMs: 60_000 });
  return JSON.parse(r.stdout) as { applied: string[]; removed: string[] };
}

describe('native nftables: every setting the annotations can give', () => {
  it('the kernel takes the transaction, CHECK finds exactly what ADD wrote, DEL leaves nothing', async () => {
    const ns = await h.createNetns({ tag: 'nft-prop', loUp: true });
    await fc.assert(
      fc.asyncProperty(redirectSettings, async (settings) => {
        assert.deepEqual(await captureRoundTrip(ns.path, settings), { applied: [], removed: [] });
        assert.deepEqual(await h.ownedRules(ns, BACKEND), []);
      }),
      { numRuns: 60 },
    );
  });
});

describe('native nftables: live traffic', () => {
  it('an IPv4-only pod: outbound on 15001 with its original destination, inbound on 15006, the proxy exempt, IPv6 left alone', async () => {
    const { e, podIp } = await h.addCaptured(h.injectedPod(WEB.pod, WEB.namespace), { backend: BACKEND, tag: 'nft-v4' });
    assert.deepEqual(await redirectedTo(e, 15001, { host: GATEWAY, port: 8080 }), { captured: `${GATEWAY}:8080`, reachedTarget: false });
    assert.deepEqual(await redirectedTo(e, 15001, { host: GATEWAY, port: 8081, uid: 1337 }), { captured: null, reachedTarget: true });
    const inbound = await h.probe({ listenNs: e.topo.pod, listenPort: 15006, connectNs: e.topo.node, connectHost: podIp, connectPort: 8080 });
    assert.equal(inbound.listener?.original_dst, `${podIp}:8080`);
    // As with iptables, where an IPv4-only pod gets no ip6tables rules, its IPv6 traffic is not captured.
    assert.deepEqual(await redirectedTo(e, 15001, { ns: e.topo.pod, host: '::1', port: 8082 }), { captured: null, reachedTarget: true });
  });

  it('a dual-stack pod: IPv6 outbound on 15001 and inbound on 15006, the proxy and excluded ranges exempt', async () => {
    const pod = annotatedPod({ 'traffic.sidecar.istio.io/excludeOutboundIPRanges': '10.201.0.0/16,fd00:201::/64' });
    const { e, podIp, podIp6, gateway6 } = await h.addCaptured(pod, { backend: BACKEND, tag: 'nft-v6', subnet6: 'fd00:200::/64' });
    assert.ok(podIp6 && gateway6, 'host-local gave the pod an IPv6 address and gateway');
    const output = await h.nftChain(e.topo.pod, NAT, 'istio-output');
    assert.ok(output.includes('ip6 daddr fd00:201::/64 counter return') && output.includes('ip daddr 10.201.0.0/16 counter return'));
    assert.ok(!(await h.nftChain(e.topo.pod, NAT, 'output')).some((l) => l.includes('nfproto')), 'both families are captured');
    await h.execInNetnsOk(e.topo.node, [h.IP, '-6', 'addr', 'add', 'fd00:201::1/128', 'dev', 'lo']);
    // DAD may hold the new addresses back for a moment.
    await h.execInNetns(e.topo.pod, ['/usr/bin/sleep', '2']);

    assert.deepEqual(await redirectedTo(e, 15001, { host: gateway6!, port: 8080 }), { captured: `[${gateway6}]:8080`, reachedTarget: false });
    assert.deepEqual(await redirectedTo(e, 15001, { host: gateway6!, port: 8081, uid: 1337 }), { captured: null, reachedTarget: true });
    assert.deepEqual(await redirectedTo(e, 15001, { host: 'fd00:201::1', port: 8083 }), { captured: null, reachedTarget: true });
    assert.deepEqual(await redirectedTo(e, 15001, { host: GATEWAY, port: 8084 }), { captured: `${GATEWAY}:8084`, reachedTarget: false });
    const inbound6 = await h.probe({ listenNs: e.topo.pod, listenHost: '::', listenPort: 15006, connectNs: e.topo.node, connectHost: podIp6!, connectPort: 8080 });
    assert.equal(inbound6.listener?.original_dst, `[${podIp6}]:8080`);
    const inbound4 = await h.probe({ listenNs: e.topo.pod, listenPort: 15006, connectNs: e.topo.node, connectHost: podIp, connectPort: 8080 });
    assert.equal(inbound4.listener?.original_dst, `${podIp}:8080`);

    const del = await e.run('del', WEB);
    assert.equal(del.code, 0, del.stdout);
    assert.deepEqual(await h.ownedRules(e.topo.pod, BACKEND), []);
  });

  it('TPROXY, IPv4 and IPv6: inbound reaches a transparent listener with its original destination; outbound is redirected; DEL removes tables and routing', async () => {
    const pod = annotatedPod({ 'sidecar.istio.io/interceptionMode': 'TPROXY' });
    const { e, podIp, podIp6, gateway6 } = await h.addCaptured(pod, { backend: BACKEND, tag: 'nft-tproxy', subnet6: 'fd00:200::/64' });
    assert.deepEqual(await h.nftChain(e.topo.pod, 'istio-proxy-mangle', 'istio-tproxy'), [
      'ip daddr != 127.0.0.1 meta l4proto tcp counter tproxy ip to :15006 meta mark set 0x00000539 accept',
      'ip6 daddr != ::1 meta l4proto tcp counter tproxy ip6 to :15006 meta mark set 0x00000539 accept',
    ]);
    for (const family of ['-4', '-6']) {
      assert.match((await h.execInNetnsOk(e.topo.pod, [h.IP, family, 'rule', 'show'])).stdout, /fwmark 0x539 lookup 133/);
    }
    await h.execInNetns(e.topo.pod, ['/usr/bin/sleep', '2']);
    assert.deepEqual(await h.tproxyConnection(e, 15006, podIp, 8080), { local: `${podIp}:8080`, reply: 'tproxy-ok\n' });
    assert.deepEqual(await h.tproxyConnection(e, 15006, podIp6!, 8080), { local: `[${podIp6}]:8080`, reply: 'tproxy-ok\n' });
    assert.deepEqual(await redirectedTo(e, 15001, { host: GATEWAY, port: 8080 }), { captured: `${GATEWAY}:8080`, reachedTarget: false });
    assert.deepEqual(await redirectedTo(e, 15001, { host: gateway6!, port: 8080 }), { captured: `[${gateway6}]:8080`, reachedTarget: false });

    const del = await e.run('del', WEB);
    assert.equal(del.code, 0, del.stdout);
    assert.deepEqual(await h.ownedRules(e.topo.pod, BACKEND), []);
    for (const family of ['-4', '-6']) {
      assert.doesNotMatch((await h.execInNetnsOk(e.topo.pod, [h.IP, family, 'rule', 'show'])).stdout, /lookup 133/);
    }
  });

  it('DNS capture: TCP and UDP port 53 to the agent on 15053, the proxy\'s own queries out', async () => {
    const pod = annotatedPod({}, (c) => (c.env as unknown[]).push({ name: 'ISTIO_META_DNS_CAPTURE', value: 'true' }));
    const { e } = await h.addCaptured(pod, { backend: BACKEND, tag: 'nft-dns' });
    assert.deepEqual(await h.nftChain(e.topo.pod, NAT, 'istio-output-dns'), ['tcp dport 53 counter redirect to :15053', 'udp dport 53 counter redirect to :15053']);
    assert.ok((await h.nftChain(e.topo.pod, 'istio-proxy-raw', 'istio-output-dns')).includes('udp dport 53 meta skuid 1337 counter ct zone set 1'));
    assert.deepEqual(await redirectedTo(e, 15053, { host: GATEWAY, port: 53 }), { captured: `${GATEWAY}:53`, reachedTarget: false });
    assert.deepEqual(await redirectedTo(e, 15053, { host: GATEWAY, port: 53, uid: 1337 }), { captured: null, reachedTarget: true });
    assert.equal(await udpQueryLandsIn(e.topo.pod, 15053, e.topo.pod, 'app-query'), 'app-query');
    assert.equal(await udpQueryLandsIn(e.topo.node, 53, e.topo.pod, 'proxy-query', 1337), 'proxy-query');
  });

  it('port and range annotations: only the included inbound port, excluded outbound ports and ranges leave directly', async () => {
    const pod = annotatedPod({
      'traffic.sidecar.istio.io/includeInboundPorts': '8080',
      'traffic.sidecar.istio.io/excludeOutboundPorts': '8081',
      'traffic.sidecar.istio.io/includeOutboundIPRanges': '10.200.0.0/24',
      'traffic.sidecar.istio.io/includeOutboundPorts': '8085',
    }, (c) => void (c.securityContext = { runAsUser: 2000, runAsGroup: 2001 }));
    const { e, podIp } = await h.addCaptured(pod, { backend: BACKEND, tag: 'nft-ann' });
    await h.execInNetnsOk(e.topo.node, [h.IP, 'addr', 'add', '10.201.0.1/32', 'dev', 'lo']);
    const inbound = await h.probe({ listenNs: e.topo.pod, listenPort: 15006, connectNs: e.topo.node, connectHost: podIp, connectPort: 8080 });
    assert.equal(inbound.listener?.original_dst, `${podIp}:8080`);
    const direct = await h.probe({ listenNs: e.topo.pod, listenPort: 9090, connectNs: e.topo.node, connectHost: podIp });
    assert.equal(direct.listener?.local, `${podIp}:9090`, 'port 9090 is not captured');
    assert.deepEqual(await redirectedTo(e, 15001, { host: GATEWAY, port: 8081 }), { captured: null, reachedTarget: true });
    assert.deepEqual(await redirectedTo(e, 15001, { host: GATEWAY, port: 8082 }), { captured: `${GATEWAY}:8082`, reachedTarget: false });
    assert.deepEqual(await redirectedTo(e, 15001, { host: '10.201.0.1', port: 8083 }), { captured: null, reachedTarget: true });
    assert.deepEqual(await redirectedTo(e, 15001, { host: '10.201.0.1', port: 8085 }), { captured: '10.201.0.1:8085', reachedTarget: false });
    assert.deepEqual(await redirectedTo(e, 15001, { host: GATEWAY, port: 8086, uid: 2000, gid: 2001 }), { captured: null, reachedTarget: true });
  });
});

describe('istio-cni explain --backend nftables', () => {
  it('prints the nft script ADD would apply, without root or a netns', async () => {
    const manifest = new URL('../fixtures/explain-pod.yaml', import.meta.url).pathname;
    const asNobody = ['/usr/bin/setpriv', '--reuid=65534', '--regid=65534', '--clear-groups'];
    const out = await h.run([...asNobody, h.DEFAULT_ISTIO_CNI_BIN, 'explain', manifest, '--backend', 'nftables']);
    assert.equal(out.code, 0, out.stderr);
    assert.match(out.stdout, /^# IPv4: nft -f - \(one transaction\)$/m);
    assert.match(out.stdout, /^add rule inet istio-proxy-nat istio-inbound tcp dport 9080 counter jump istio-in-redirect$/m);
    assert.match(out.stdout, /^add rule inet istio-proxy-nat istio-output ip daddr 169\.254\.169\.254 counter return$/m);
    assert.doesNotMatch(out.stdout, /iptables|^-A /m);
    const v6 = await h.run([...asNobody, h.DEFAULT_ISTIO_CNI_BIN, 'explain', manifest, '--ipv6', '--backend', 'nftables']);
    assert.match(v6.stdout, /^add rule inet istio-proxy-nat istio-output ip6 saddr ::6 oifname "lo" counter return$/m);
    // Either profile: current Istio's rules as nft writes them (the flags before the manifest too).
    const current = await h.run([...asNobody, h.DEFAULT_ISTIO_CNI_BIN, 'explain', '--backend', 'nftables', '--profile', 'istio-current', manifest]);
    assert.equal(current.code, 0, current.stderr);
    assert.match(current.stdout, /^add rule inet istio-proxy-nat istio-inbound tcp dport 15008 counter return\nadd rule inet istio-proxy-nat istio-inbound tcp dport 9080 counter jump istio-in-redirect$/m);
    const bad = await h.run([h.DEFAULT_ISTIO_CNI_BIN, 'explain', manifest, '--backend', 'ebpf']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /^istio-cni explain: --backend: /);
    const two = await h.run([h.DEFAULT_ISTIO_CNI_BIN, 'explain', manifest, manifest]);
    assert.equal(two.code, 2);
    assert.match(two.stderr, /^istio-cni explain: one pod manifest, not 2\nusage: /);
  });
});
