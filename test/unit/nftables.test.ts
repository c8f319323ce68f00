import assert from 'node:assert/strict';
import { describe, it } from 'vitest';
import fc from 'fast-check';
import { parseCidr } from '../../src/redirect/cidr.ts';
import { nftDifferences, ownedNftables, parseNftListing } from '../../src/redirect/nftables-listing.ts';
import { renderNftRemoval, renderNftScript, ruleText, toNftables, translateRule, type NftRuleSet } from '../../src/redirect/nftables.ts';
import { buildRuleSet } from '../../src/redirect/ruleset.ts';
import { DEFAULT_SETTINGS, type RedirectSettings } from '../../src/redirect/settings.ts';
import { redirectSettings } from '../harness/redirect-settings.ts';

const both = (s: RedirectSettings) => toNftables(buildRuleSet(s, 4), buildRuleSet(s, 6));
const script = (s: RedirectSettings) => renderNftScript(both(s));
const TABLES = ['istio-proxy-nat', 'istio-proxy-mangle', 'istio-proxy-raw'];
const REPLACE_HEAD = TABLES.flatMap((t) => [`add table inet ${t}`, `delete table inet ${t}`]);

describe('nftables rendering of the seed rule set', () => {
  it('gives a default pod one inet table in Istio\'s layout, its IPv6 left alone, after deleting any earlier table of ours', () => {
    assert.deepEqual(script(DEFAULT_SETTINGS).trim().split('\n'), [
      ...REPLACE_HEAD,
      'add table inet istio-proxy-nat',
      'add chain inet istio-proxy-nat prerouting { type nat hook prerouting priority -100; policy accept; }',
      'add chain inet istio-proxy-nat output { type nat hook output priority -100; policy accept; }',
      'add chain inet istio-proxy-nat istio-inbound',
      'add chain inet istio-proxy-nat istio-in-redirect',
      'add chain inet istio-proxy-nat istio-output',
      'add chain inet istio-proxy-nat istio-redirect',
      'add rule inet istio-proxy-nat prerouting meta nfproto ipv6 counter return',
      'add rule inet istio-proxy-nat prerouting meta l4proto tcp counter jump istio-inbound',
      'add rule inet istio-proxy-nat output meta nfproto ipv6 counter return',
      'add rule inet istio-proxy-nat output meta l4proto tcp counter jump istio-output',
      'add rule inet istio-proxy-nat istio-inbound tcp dport 22 counter return',
      'add rule inet istio-proxy-nat istio-inbound tcp dport 15020 counter return',
      'add rule inet istio-proxy-nat istio-inbound meta l4proto tcp counter jump istio-in-redirect',
      'add rule inet istio-proxy-nat istio-in-redirect meta l4proto tcp counter redirect to :15006',
      'add rule inet istio-proxy-nat istio-output ip saddr 127.0.0.6 oifname "lo" counter return',
      'add rule inet istio-proxy-nat istio-output ip daddr != 127.0.0.1 oifname "lo" counter jump istio-in-redirect',
      'add rule inet istio-proxy-nat istio-output meta skuid 1337 counter return',
      'add rule inet istio-proxy-nat istio-output meta skgid 1337 counter return',
      'add rule inet istio-proxy-nat istio-output ip daddr 127.0.0.1 counter return',
      'add rule inet istio-proxy-nat istio-output counter jump istio-redirect',
      'add rule inet istio-proxy-nat istio-redirect meta l4proto tcp counter redirect to :15001',
    ]);
  });

  it('writes a dual-stack pod\'s rules once where both families share them, each family\'s own in its order', () => {
    const output = both({ ...DEFAULT_SETTINGS, ipv6: true })[0]!.rules.filter((r) => r.chain === 'istio-output').map(ruleText);
    assert.deepEqual(output, [
      'ip saddr 127.0.0.6 oifname "lo" counter return',
      'ip daddr != 127.0.0.1 oifname "lo" counter jump istio-in-redirect',
      'ip6 saddr ::6 oifname "lo" counter return',
      'ip6 daddr != ::1 oifname "lo" counter jump istio-in-redirect',
      'meta skuid 1337 counter return',
      'meta skgid 1337 counter return',
      'ip daddr 127.0.0.1 counter return',
      'ip6 daddr ::1 counter return',
      'counter jump istio-redirect',
    ]);
    assert.ok(!script({ ...DEFAULT_SETTINGS, ipv6: true }).includes('nfproto'), 'both families pass the same base chains');
  });

  it('limits every rule to its family when the families\' shared rules differ', () => {
    // 0.0.0.0/0 matches all of IPv4 and prints as no address (as in iptables): IPv4's capture-all rule
    // has no IPv6 twin, so written once for both it would capture IPv6 too.
    const s: RedirectSettings = { ...DEFAULT_SETTINGS, ipv6: true, includeOutboundIpRanges: [parseCidr('0.0.0.0/0')!] };
    const output = both(s)[0]!.rules.filter((r) => r.chain === 'istio-output').map(ruleText);
    assert.ok(output.includes('meta nfproto ipv4 counter jump istio-redirect'));
    assert.ok(output.includes('meta nfproto ipv4 meta skuid 1337 counter return') && output.includes('meta nfproto ipv6 meta skuid 1337 counter return'));
    assert.deepEqual(output.filter((r) => r.includes('jump istio-redirect')), ['meta nfproto ipv4 counter jump istio-redirect']);
  });

  it('puts TPROXY in istio-proxy-mangle with the hooks and priorities of iptables\' mangle, and DNS zones in istio-proxy-raw', () => {
    const tables = both({ ...DEFAULT_SETTINGS, interceptionMode: 'TPROXY', dnsCapture: true });
    assert.deepEqual(tables.map((t) => t.name), TABLES);
    const mangle = tables[1]!;
    assert.deepEqual(mangle.chains.filter((c) => c.base).map((c) => [c.name, c.base]), [
      ['prerouting', { type: 'filter', hook: 'prerouting', prio: -150 }],
      ['output', { type: 'route', hook: 'output', prio: -150 }],
    ]);
    const rules = mangle.rules.map((r) => `${r.chain}: ${ruleText(r)}`);
    assert.ok(rules.includes('istio-tproxy: ip daddr != 127.0.0.1 meta l4proto tcp counter tproxy ip to :15006 meta mark set 1337 accept'));
    assert.ok(rules.includes('istio-inbound: meta l4proto tcp ct state established,related counter jump istio-divert'));
    assert.ok(rules.includes('istio-output: meta l4proto tcp ct mark 1337 counter meta mark set ct mark'));
    assert.deepEqual(tables[2]!.chains.filter((c) => c.base).map((c) => c.base?.prio), [-300, -300]);
  });

  it('gives mode NONE no table, and removal deletes our three tables by name only', () => {
    assert.deepEqual(both({ ...DEFAULT_SETTINGS, interceptionMode: 'NONE' }), []);
    assert.deepEqual(renderNftRemoval().trim().split('\n'), REPLACE_HEAD);
  });
});

describe('translating iptables words', () => {
  const cases: [string[], 4 | 6, string][] = [
    [['-p', 'tcp', '-m', 'tcp', '--dport', '80', '-j', 'RETURN'], 4, 'tcp dport 80 return'],
    [['-p', 'udp', '-m', 'udp', '--sport', '15053', '-m', 'owner', '--gid-owner', '7', '-j', 'CT', '--zone', '2'], 4, 'udp sport 15053 meta skgid 7 ct zone set 2'],
    [['!', '-d', '::1/128', '-o', 'lo', '-p', 'tcp', '-m', 'multiport', '!', '--dports', '53,15008', '-m', 'owner', '!', '--uid-owner', '3', '-j', 'ISTIO_IN_REDIRECT'], 6, 'ip6 daddr != ::1 oifname "lo" tcp dport != { 53, 15008 } meta skuid != 3 jump istio-in-redirect'],
    [['-d', '10.1.0.0/16', '-i', 'net1', '-j', 'ISTIO_REDIRECT'], 4, 'ip daddr 10.1.0.0/16 iifname "net1" jump istio-redirect'],
    [['-m', 'conntrack', '--ctstate', 'INVALID', '-j', 'ISTIO_DROP'], 4, 'ct state invalid jump istio-drop'],
    [['-j', 'DROP'], 4, 'drop'],
    [['-p', 'tcp', '-m', 'mark', '!', '--mark', '0x53a', '-j', 'MARK', '--set-xmark', '0x539/0xffffffff'], 4, 'meta l4proto tcp meta mark != 1338 meta mark set 1337'],
    [['-p', 'tcp', '-m', 'connmark', '--mark', '0x539', '-j', 'CONNMARK', '--restore-mark', '--nfmask', '0xffffffff', '--ctmask', '0xffffffff'], 4, 'meta l4proto tcp ct mark 1337 meta mark set ct mark'],
    [['!', '-d', '::1/128', '-p', 'tcp', '-j', 'TPROXY', '--on-port', '15006', '--on-ip', '::', '--tproxy-mark', '0x539/0xffffffff'], 6, 'ip6 daddr != ::1 meta l4proto tcp tproxy ip6 to :15006 meta mark set 1337 accept'],
  ];
  for (const [spec, family, nft] of cases) {
    it(`${spec.join(' ')} → ${nft}`, () => {
      assert.equal(ruleText({ chain: 'c', expr: translateRule({ chain: 'ISTIO_OUTPUT', spec }, family) }), nft);
    });
  }

  it('refuses a word it does not know rather than guess', () => {
    const refused = [
      ['-m', 'comment', '--comment', 'x', '-j', 'RETURN'],
      ['-p', 'icmp', '-j', 'RETURN'],
      ['-j', 'SNAT', '--to-source', '1.2.3.4'],
      ['-j', 'MARK', '--set-xmark', '0x1/0xff'],
      ['-m', 'conntrack', '!', '--ctstate', 'NEW', '-j', 'RETURN'],
      ['--dport', '80', '-j', 'RETURN'],
      ['-d', 'fd00::/8', '-j', 'RETURN'],
      ['-p', 'tcp', '-j', 'TPROXY', '--on-port', '15006', '--on-ip', '10.0.0.1'],
      ['-p', 'tcp', '-g', 'ISTIO_REDIRECT'],
    ];
    for (const spec of refused) assert.throws(() => translateRule({ chain: 'ISTIO_OUTPUT', spec }, 4), /nftables/, spec.join(' '));
  });

  it('never renders a value that could end the statement: a name or an address outside its pattern throws', () => {
    const ruleSet = (right: string): NftRuleSet => [{ name: 'istio-proxy-nat', chains: [{ name: 'istio-output' }], rules: [{ chain: 'istio-output', expr: [{ match: { op: '==', left: { meta: { key: 'oifname' } }, right } }, { return: null }] }] }];
    assert.throws(() => renderNftScript(ruleSet('eth0"; flush ruleset; "')), /refusing to render/);
    assert.throws(() => renderNftScript(ruleSet('eth0\nadd table ip x')), /refusing to render/);
    assert.throws(() => renderNftScript([{ name: 'istio-proxy-nat; flush ruleset', chains: [], rules: [] }]), /refusing to render/);
  });
});

describe('any valid settings', () => {
  const LINE = /^(add|delete) table inet istio-proxy-(nat|mangle|raw)$|^add chain inet istio-proxy-(nat|mangle|raw) [a-z-]+( \{ type (nat|filter|route) hook (prerouting|output) priority -?\d+; policy accept; \})?$|^add rule inet istio-proxy-(nat|mangle|raw) [a-z-]+ [^;{}\n]*(\{ [0-9, ]+ \}[^;{}\n]*)?$/;
  it('render to a script of add/delete lines for our tables only, with one counter per rule', () => {
    fc.assert(
      fc.property(redirectSettings, (s) => {
        const lines = script(s).trim().split('\n');
        for (const line of lines) assert.match(line, LINE);
        for (const line of lines.filter((l) => l.startsWith('add rule '))) assert.equal(line.split(' counter').length, 2, line);
      }),
      { numRuns: 300 },
    );
  });

  it('leave the other family alone, at the head of every base chain, when the pod has one family', () => {
    fc.assert(
      fc.property(redirectSettings, (s) => {
        if (s.ipv6 || s.interceptionMode === 'NONE') return;
        for (const table of both(s)) {
          for (const chain of table.chains.filter((c) => c.base)) {
            assert.equal(ruleText(table.rules.find((r) => r.chain === chain.name)!), 'meta nfproto ipv6 counter return');
          }
        }
      }),
      { numRuns: 200 },
    );
  });
});

/** `nft -j list ruleset` as nft prints our tables (handles, counters with their counts): what CHECK reads. */
function nftListingOf(tables: NftRuleSet, extra: Record<string, unknown>[] = []): string {
  const items: Record<string, unknown>[] = [{ metainfo: { version: '1.0.6', release_name: 'Lester Gooch #5', json_schema_version: 1 } }];
  let handle = 1;
  for (const t of tables) {
    items.push({ table: { family: 'inet', name: t.name, handle: handle++ } });
    for (const c of t.chains) items.push({ chain: { family: 'inet', table: t.name, name: c.name, handle: handle++, ...(c.base ? { ...c.base, policy: 'accept' } : {}) } });
    for (const r of t.rules) {
      const expr = r.expr.map((e) => ('counter' in e ? { counter: { packets: 7, bytes: 420 } } : e));
      items.push({ rule: { family: 'inet', table: t.name, chain: r.chain, handle: handle++, expr } });
    }
  }
  return JSON.stringify({ nftables: [...items, ...extra] });
}

describe('reading `nft -j list ruleset` back', () => {
  const expected = both(DEFAULT_SETTINGS);
  /** The listing nft prints for `tables`, with counts, handles and someone else's table; `edit` changes its items. */
  function listing(tables: NftRuleSet, edit: (items: Record<string, unknown>[]) => void = () => {}): string {
    const items = (JSON.parse(nftListingOf(tables, [{ table: { family: 'ip', name: 'istio-proxy-nat', handle: 90 } }, { rule: { family: 'ip', table: 'istio-proxy-nat', chain: 'output', handle: 99, expr: [{ accept: null }] } }])) as { nftables: Record<string, unknown>[] }).nftables;
    edit(items);
    return JSON.stringify({ nftables: items });
  }
  const ruleAt = (items: Record<string, unknown>[], chain: string, n: number) => items.filter((i) => (i.rule as { chain?: string; family?: string } | undefined)?.chain === chain && (i.rule as { family: string }).family === 'inet')[n]!;

  it('finds no difference in a listing of exactly our rules, whatever the counters say and whatever else the netns holds', () => {
    assert.deepEqual(nftDifferences(expected, parseNftListing(listing(expected))), []);
    assert.deepEqual(ownedNftables(parseNftListing(listing(expected))), { tables: ['istio-proxy-nat'], tproxy: false });
  });

  it('names the first rule that differs in each chain, a missing or extra chain or table, and a chain hooked differently', () => {
    const changed = listing(expected, (items) => {
      (ruleAt(items, 'istio-output', 2).rule as { expr: unknown[] }).expr = [{ match: { op: '==', left: { meta: { key: 'skuid' } }, right: 0 } }, { return: null }];
      items.splice(items.indexOf(ruleAt(items, 'istio-inbound', 0)), 1);
      const output = items.find((i) => (i.chain as { name?: string } | undefined)?.name === 'output')!.chain as { prio: number };
      output.prio = 0;
      items.push({ chain: { family: 'inet', table: 'istio-proxy-nat', name: 'istio-extra', handle: 100 } });
      items.push({ table: { family: 'inet', name: 'istio-proxy-raw', handle: 101 } });
    });
    assert.deepEqual(nftDifferences(expected, parseNftListing(changed)), [
      'istio-proxy-nat output: expected type nat hook output priority -100 policy accept, found type nat hook output priority 0 policy accept',
      'istio-proxy-nat istio-inbound rule 1: expected "tcp dport 22 counter return", found "tcp dport 15020 counter return"',
      'istio-proxy-nat istio-output rule 3: expected "meta skuid 1337 counter return", found "meta skuid 0 return"',
      'istio-proxy-nat: unexpected chain istio-extra',
      'unexpected table inet istio-proxy-raw',
    ]);
    assert.deepEqual(nftDifferences([], parseNftListing(listing(expected))), ['unexpected table inet istio-proxy-nat']);
    assert.deepEqual(nftDifferences(expected, parseNftListing(listing([]))), ['missing table inet istio-proxy-nat']);
  });

  it('takes the listing as untrusted: odd shapes are skipped, hostile strings are quoted and cut short, a non-listing is refused', () => {
    const hostile = listing(expected, (items) => {
      items.push({ rule: { family: 'inet', table: 'istio-proxy-nat', chain: 'istio-redirect', expr: [{ match: { op: '==', left: { meta: { key: 'iifname' } }, right: `x"; flush ruleset; ${'A'.repeat(500)}` } }, { accept: null }] } });
      items.push({ rule: 'not an object' }, { chain: { family: 'inet' } }, { table: null }, { '__proto__': { polluted: true } });
    });
    const found = nftDifferences(expected, parseNftListing(hostile));
    assert.equal(found.length, 1);
    assert.match(found[0]!, /^istio-proxy-nat istio-redirect rule 2: unexpected "/);
    assert.ok(found[0]!.length < 300, 'the quoted rule is cut short');
    assert.equal(({} as Record<string, unknown>).polluted, undefined);
    for (const text of ['', 'nft: not json', '{"nftables": 3}', '[]']) assert.throws(() => parseNftListing(text), Error, text);
  });

  it('tells DEL whether TPROXY\'s routing was ours to remove', () => {
    const tproxy = both({ ...DEFAULT_SETTINGS, interceptionMode: 'TPROXY' });
    assert.deepEqual(ownedNftables(parseNftListing(listing(tproxy))), { tables: ['istio-proxy-nat', 'istio-proxy-mangle'], tproxy: true });
  });
});
