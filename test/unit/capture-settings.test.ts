import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseConfig } from '../../src/cni/config.ts';
import { CniError } from '../../src/cni/errors.ts';
import { InvalidCaptureValue } from '../../src/redirect/errors.ts';
import { parseCidr } from '../../src/redirect/cidr.ts';
import { renderCreate } from '../../src/redirect/restore.ts';
import { buildRuleSet } from '../../src/redirect/ruleset.ts';
import { CaptureDefaults, DEFAULT_SETTINGS } from '../../src/redirect/settings.ts';
import { ANNOTATIONS, MAX_ITEMS, settingsFromPod, type ProxyContainer } from '../../src/redirect/settings-from-pod.ts';

const DEFAULTS = CaptureDefaults.parse(undefined);
const IPV4 = ['10.200.0.5/24'];
const DUAL = ['10.200.0.5/24', 'fd00:200::5/64'];

function settings(annotations: Record<string, string> = {}, proxy: ProxyContainer = {}, podIps = IPV4, defaults = DEFAULTS) {
  return settingsFromPod({ annotations, proxy, podIps, defaults });
}
/** The `-A`/`-N` lines of one table of one family, as iptables-restore gets them. */
function lines(s: ReturnType<typeof settings>, family: 4 | 6 = 4, table = 'nat'): string[] {
  const text = renderCreate(buildRuleSet(s, family).filter((t) => t.table === table));
  return text.split('\n').filter((l) => l.startsWith('-'));
}
const chain = (all: string[], name: string) => all.filter((l) => l.startsWith(`-A ${name} `));

describe('CIDRs', () => {
  it('prints networks the way iptables-save does', () => {
    const cases: [string, string][] = [
      ['10.1.2.3/8', '10.0.0.0/8'],
      ['192.168.1.1/32', '192.168.1.1/32'],
      ['2001:DB8:0:0:1::1/64', '2001:db8::/64'],
      ['fe80::1:0:0:1/128', 'fe80::1:0:0:1/128'],
      ['1:0:0:2:0:0:0:3/128', '1:0:0:2::3/128'],
      ['::ffff:10.0.0.1/128', '::ffff:10.0.0.1/128'],
      ['::0.0.0.2/128', '::2/128'],
      ['::1.0.0.2/128', '::1.0.0.2/128'],
      ['1:2:3:4:5:6:7::/128', '1:2:3:4:5:6:7:0/128'],
    ];
    for (const [input, printed] of cases) assert.equal(parseCidr(input)?.text, printed, input);
  });
});

describe('settings from a pod', () => {
  it('gives the seed defaults for a pod with no capture annotations', () => {
    assert.deepEqual(settings(), DEFAULT_SETTINGS);
    assert.deepEqual(buildRuleSet(settings(), 6), []);
  });

  it('includeInboundPorts: an explicit list redirects exactly those ports and drops the exclusions', () => {
    const nat = lines(settings({ [ANNOTATIONS.includeInboundPorts]: ' 8080 , 9090', [ANNOTATIONS.excludeInboundPorts]: '9000' }));
    assert.deepEqual(chain(nat, 'ISTIO_INBOUND'), [
      '-A ISTIO_INBOUND -p tcp -m tcp --dport 8080 -j ISTIO_IN_REDIRECT',
      '-A ISTIO_INBOUND -p tcp -m tcp --dport 9090 -j ISTIO_IN_REDIRECT',
    ]);
    assert.ok(nat.includes('-A PREROUTING -p tcp -j ISTIO_INBOUND'));
  });

  it('includeInboundPorts: empty means no inbound capture, no ISTIO_INBOUND and no PREROUTING jump', () => {
    const nat = lines(settings({ [ANNOTATIONS.includeInboundPorts]: '' }));
    assert.deepEqual(nat.filter((l) => l.includes('INBOUND') || l.includes('PREROUTING')), []);
    // The app's calls to its own pod IP still reach the inbound listener.
    assert.ok(nat.includes('-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006'));
  });

  it('excludeInboundPorts: after ssh, before the status port that always stays excluded', () => {
    const nat = lines(settings({ [ANNOTATIONS.excludeInboundPorts]: '8443,15020, 9000' }));
    assert.deepEqual(chain(nat, 'ISTIO_INBOUND'), [
      '-A ISTIO_INBOUND -p tcp -m tcp --dport 22 -j RETURN',
      '-A ISTIO_INBOUND -p tcp -m tcp --dport 8443 -j RETURN',
      '-A ISTIO_INBOUND -p tcp -m tcp --dport 15020 -j RETURN',
      '-A ISTIO_INBOUND -p tcp -m tcp --dport 9000 -j RETURN',
      '-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT',
    ]);
  });

  it('includeOutboundIPRanges: a list redirects only those, per family, and then returns', () => {
    const s = settings({ [ANNOTATIONS.includeOutboundIpRanges]: '10.96.0.0/12,fd00:96::/108' }, {}, DUAL);
    assert.deepEqual(chain(lines(s), 'ISTIO_OUTPUT').slice(-2), ['-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN', '-A ISTIO_OUTPUT -d 10.96.0.0/12 -j ISTIO_REDIRECT']);
    assert.deepEqual(chain(lines(s, 6), 'ISTIO_OUTPUT').slice(-2), ['-A ISTIO_OUTPUT -d ::1/128 -j RETURN', '-A ISTIO_OUTPUT -d fd00:96::/108 -j ISTIO_REDIRECT']);
  });

  it('includeOutboundIPRanges: empty means no outbound capture', () => {
    const out = chain(lines(settings({ [ANNOTATIONS.includeOutboundIpRanges]: '' })), 'ISTIO_OUTPUT');
    assert.equal(out.filter((l) => l.endsWith('-j ISTIO_REDIRECT')).length, 0);
  });

  it('excludeOutboundIPRanges: RETURN after localhost and before the catch-all', () => {
    const out = chain(lines(settings({ [ANNOTATIONS.excludeOutboundIpRanges]: '10.1.2.3/16,fd00::/8' })), 'ISTIO_OUTPUT');
    assert.deepEqual(out.slice(-3), ['-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN', '-A ISTIO_OUTPUT -d 10.1.0.0/16 -j RETURN', '-A ISTIO_OUTPUT -j ISTIO_REDIRECT']);
  });

  it('includeOutboundIPRanges: a /0 prints as no -d', () => {
    const out = chain(lines(settings({ [ANNOTATIONS.includeOutboundIpRanges]: '0.0.0.0/0' })), 'ISTIO_OUTPUT');
    assert.equal(out.at(-1), '-A ISTIO_OUTPUT -j ISTIO_REDIRECT');
  });

  it('excludeOutboundPorts first in ISTIO_OUTPUT; includeOutboundPorts before the range rules', () => {
    const out = chain(
      lines(settings({ [ANNOTATIONS.excludeOutboundPorts]: '5432,6379', [ANNOTATIONS.includeOutboundPorts]: '8080', [ANNOTATIONS.includeOutboundIpRanges]: '' })),
      'ISTIO_OUTPUT',
    );
    assert.deepEqual(out.slice(0, 2), ['-A ISTIO_OUTPUT -p tcp -m tcp --dport 5432 -j RETURN', '-A ISTIO_OUTPUT -p tcp -m tcp --dport 6379 -j RETURN']);
    assert.equal(out.at(-1), '-A ISTIO_OUTPUT -p tcp -m tcp --dport 8080 -j ISTIO_REDIRECT');
  });

  it('uid/gid come from the istio-proxy securityContext when non-zero', () => {
    const custom = chain(lines(settings({}, { securityContext: { runAsUser: 2000, runAsGroup: 3000 } })), 'ISTIO_OUTPUT');
    assert.ok(custom.includes('-A ISTIO_OUTPUT -m owner --uid-owner 2000 -j RETURN'));
    assert.ok(custom.includes('-A ISTIO_OUTPUT -m owner --gid-owner 3000 -j RETURN'));
    const root = settings({}, { securityContext: { runAsUser: 0, runAsGroup: 0 } });
    assert.deepEqual([root.proxyUid, root.proxyGid], [1337, 1337]);
  });

  it('kubevirtInterfaces / reroute-virtual-interfaces send VM traffic to the outbound listener', () => {
    const nat = lines(settings({ [ANNOTATIONS.kubevirtInterfaces]: 'net1', [ANNOTATIONS.includeOutboundIpRanges]: '10.0.0.0/8,172.16.0.0/12' }));
    assert.deepEqual(chain(nat, 'PREROUTING'), [
      '-A PREROUTING -d 172.16.0.0/12 -i net1 -j ISTIO_REDIRECT',
      '-A PREROUTING -d 10.0.0.0/8 -i net1 -j ISTIO_REDIRECT',
      '-A PREROUTING -p tcp -j ISTIO_INBOUND',
    ]);
    assert.equal(chain(nat, 'ISTIO_INBOUND')[0], '-A ISTIO_INBOUND -i net1 -j RETURN');
    const both = settings({ [ANNOTATIONS.kubevirtInterfaces]: 'net1', [ANNOTATIONS.rerouteVirtualInterfaces]: 'vm0,vm1' });
    assert.deepEqual(chain(lines(both), 'PREROUTING').slice(0, 2), ['-A PREROUTING -i vm1 -j ISTIO_REDIRECT', '-A PREROUTING -i vm0 -j ISTIO_REDIRECT']);
  });

  it('IPv6: a dual-stack pod gets the same rules with ::6 and ::1; CIDRs go to their own family', () => {
    const s = settings({ [ANNOTATIONS.excludeOutboundIpRanges]: '10.0.0.0/8,fd00::/8' }, {}, DUAL);
    const v6 = lines(s, 6);
    assert.ok(v6.includes('-A ISTIO_OUTPUT -s ::6/128 -o lo -j RETURN'));
    assert.ok(v6.includes('-A ISTIO_OUTPUT ! -d ::1/128 -o lo -j ISTIO_IN_REDIRECT'));
    assert.ok(v6.includes('-A ISTIO_OUTPUT -d fd00::/8 -j RETURN'));
    assert.ok(!v6.some((l) => l.includes('10.0.0.0/8')));
    assert.ok(!lines(s).some((l) => l.includes('fd00::/8')));
  });

  it('DNS capture: TCP and UDP 53 to 15053 after the proxy exemptions, conntrack zones in raw', () => {
    const s = settings({}, { env: [{ name: 'ISTIO_META_DNS_CAPTURE', value: 'true' }] });
    const nat = lines(s);
    assert.ok(nat.includes('-A OUTPUT -j ISTIO_OUTPUT'));
    assert.deepEqual(chain(nat, 'ISTIO_OUTPUT_DNS'), [
      '-A ISTIO_OUTPUT_DNS -p tcp -m tcp --dport 53 -j REDIRECT --to-ports 15053',
      '-A ISTIO_OUTPUT_DNS -p udp -m udp --dport 53 -j REDIRECT --to-ports 15053',
    ]);
    const out = chain(nat, 'ISTIO_OUTPUT');
    assert.ok(out.indexOf('-A ISTIO_OUTPUT -j ISTIO_OUTPUT_DNS') > out.indexOf('-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN'));
    assert.ok(out.includes('-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -p tcp -m tcp ! --dport 53 -j ISTIO_IN_REDIRECT'));
    assert.ok(lines(s, 4, 'raw').includes('-A ISTIO_OUTPUT_DNS -p udp -m udp --dport 53 -m owner --uid-owner 1337 -j CT --zone 1'));
  });

  it('TPROXY: inbound through mangle with mark 1337, outbound still nat REDIRECT', () => {
    const s = settings({ [ANNOTATIONS.interceptionMode]: 'TPROXY' });
    const nat = lines(s);
    assert.ok(!nat.some((l) => l.includes('ISTIO_INBOUND')));
    const mangle = lines(s, 4, 'mangle');
    assert.ok(mangle.includes('-A PREROUTING -p tcp -j ISTIO_INBOUND'));
    assert.ok(mangle.includes('-A ISTIO_DIVERT -j MARK --set-xmark 0x539/0xffffffff'));
    assert.ok(mangle.includes('-A ISTIO_TPROXY ! -d 127.0.0.1/32 -p tcp -j TPROXY --on-port 15006 --on-ip 0.0.0.0 --tproxy-mark 0x539/0xffffffff'));
    assert.deepEqual(chain(mangle, 'ISTIO_INBOUND').slice(-2), [
      '-A ISTIO_INBOUND -p tcp -m conntrack --ctstate RELATED,ESTABLISHED -j ISTIO_DIVERT',
      '-A ISTIO_INBOUND -p tcp -j ISTIO_TPROXY',
    ]);
    assert.deepEqual(buildRuleSet(settings({ [ANNOTATIONS.interceptionMode]: 'NONE' })), []);
  });

  it('plugin-level defaults from the conflist entry', () => {
    const config = parseConfig(
      JSON.stringify({
        cniVersion: '1.0.0',
        capture: { inbound_port: 16006, outbound_port: 16001, proxy_uid: 7, proxy_gid: 8, exclude_inbound_ports: [15020, 15021], exclude_outbound_ports: [25], exclude_outbound_ip_ranges: ['169.254.169.254/32'] },
      }),
    );
    const nat = lines(settings({ [ANNOTATIONS.excludeOutboundPorts]: '26' }, {}, IPV4, config.capture));
    assert.ok(nat.includes('-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 16006'));
    assert.ok(nat.includes('-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 16001'));
    assert.ok(nat.includes('-A ISTIO_OUTPUT -m owner --uid-owner 7 -j RETURN'));
    assert.ok(nat.includes('-A ISTIO_INBOUND -p tcp -m tcp --dport 15021 -j RETURN'));
    assert.deepEqual(chain(nat, 'ISTIO_OUTPUT').slice(0, 2), ['-A ISTIO_OUTPUT -p tcp -m tcp --dport 26 -j RETURN', '-A ISTIO_OUTPUT -p tcp -m tcp --dport 25 -j RETURN']);
    assert.ok(nat.includes('-A ISTIO_OUTPUT -d 169.254.169.254/32 -j RETURN'));
    for (const bad of [{ inbound_port: 0 }, { proxy_uid: -1 }, { exclude_outbound_ip_ranges: ['10.0.0.0'] }, { exclude_outbound_ip_ranges: ['0.0.0.0/0'] }, { unknown_field: 1 }]) {
      assert.throws(() => parseConfig(JSON.stringify({ cniVersion: '1.0.0', capture: bad })), (e: CniError) => e.code === 7, JSON.stringify(bad));
    }
  });
});

/** Malformed values: each must be refused by the rule core naming the annotation and the value (the CNI layer's error 106). */
const MALFORMED: [string, string][] = [
  [ANNOTATIONS.includeInboundPorts, '0'],
  [ANNOTATIONS.includeInboundPorts, '65536'],
  [ANNOTATIONS.includeInboundPorts, '-1'],
  [ANNOTATIONS.includeInboundPorts, '80,'],
  [ANNOTATIONS.includeInboundPorts, ',80'],
  [ANNOTATIONS.includeInboundPorts, '80,,90'],
  [ANNOTATIONS.includeInboundPorts, '*,80'],
  [ANNOTATIONS.includeInboundPorts, '**'],
  [ANNOTATIONS.includeInboundPorts, '80-90'],
  [ANNOTATIONS.includeInboundPorts, '80 90'],
  [ANNOTATIONS.includeInboundPorts, '0x50'],
  [ANNOTATIONS.includeInboundPorts, '8e1'],
  [ANNOTATIONS.includeInboundPorts, '080'],
  [ANNOTATIONS.includeInboundPorts, '+80'],
  [ANNOTATIONS.includeInboundPorts, '80;reboot'],
  [ANNOTATIONS.includeInboundPorts, '80 -j ACCEPT'],
  [ANNOTATIONS.includeInboundPorts, '١٢٣'],
  [ANNOTATIONS.excludeInboundPorts, 'http'],
  [ANNOTATIONS.excludeInboundPorts, '*'],
  [ANNOTATIONS.excludeInboundPorts, '99999999999999999999'],
  [ANNOTATIONS.excludeInboundPorts, '15020\n-A INPUT -j DROP'],
  [ANNOTATIONS.excludeInboundPorts, '1.5'],
  [ANNOTATIONS.excludeOutboundPorts, '0'],
  [ANNOTATIONS.excludeOutboundPorts, '5432,abc'],
  [ANNOTATIONS.excludeOutboundPorts, '*'],
  [ANNOTATIONS.excludeOutboundPorts, '$(id)'],
  [ANNOTATIONS.includeOutboundPorts, '70000'],
  [ANNOTATIONS.includeOutboundPorts, ' , '],
  [ANNOTATIONS.includeOutboundPorts, '443/tcp'],
  [ANNOTATIONS.includeOutboundIpRanges, '10.0.0.0'],
  [ANNOTATIONS.includeOutboundIpRanges, '10.0.0.0/33'],
  [ANNOTATIONS.includeOutboundIpRanges, '10.0.0/8'],
  [ANNOTATIONS.includeOutboundIpRanges, '256.0.0.0/8'],
  [ANNOTATIONS.includeOutboundIpRanges, '010.0.0.0/8'],
  [ANNOTATIONS.includeOutboundIpRanges, '10.0.0.0/08'],
  [ANNOTATIONS.includeOutboundIpRanges, '10.0.0.0/-1'],
  [ANNOTATIONS.includeOutboundIpRanges, '10.0.0.0/8/8'],
  [ANNOTATIONS.includeOutboundIpRanges, '*,10.0.0.0/8'],
  [ANNOTATIONS.includeOutboundIpRanges, 'example.com/32'],
  [ANNOTATIONS.includeOutboundIpRanges, '10.0.0.0/8,'],
  [ANNOTATIONS.includeOutboundIpRanges, '10.0.0.0/8 -j ACCEPT'],
  [ANNOTATIONS.excludeOutboundIpRanges, '*'],
  [ANNOTATIONS.excludeOutboundIpRanges, '0.0.0.0/0'],
  [ANNOTATIONS.excludeOutboundIpRanges, '::/0'],
  [ANNOTATIONS.excludeOutboundIpRanges, '10.0.0.0/8,0.0.0.0/0'],
  [ANNOTATIONS.excludeOutboundIpRanges, 'fd00::/129'],
  [ANNOTATIONS.excludeOutboundIpRanges, 'fd00:::/8'],
  [ANNOTATIONS.excludeOutboundIpRanges, 'fe80::1%eth0/128'],
  [ANNOTATIONS.excludeOutboundIpRanges, '1:2:3:4:5:6:7:8:9/128'],
  [ANNOTATIONS.excludeOutboundIpRanges, 'fd00::g/64'],
  [ANNOTATIONS.excludeOutboundIpRanges, '12345::/16'],
  [ANNOTATIONS.excludeOutboundIpRanges, '::1.2.3/128'],
  [ANNOTATIONS.excludeOutboundIpRanges, '[fd00::]/8'],
  [ANNOTATIONS.kubevirtInterfaces, 'averyveryverylongname'],
  [ANNOTATIONS.kubevirtInterfaces, 'eth+'],
  [ANNOTATIONS.kubevirtInterfaces, 'eth0 -j ACCEPT'],
  [ANNOTATIONS.kubevirtInterfaces, '..'],
  [ANNOTATIONS.kubevirtInterfaces, 'a/b'],
  [ANNOTATIONS.kubevirtInterfaces, 'net1,,net2'],
  [ANNOTATIONS.rerouteVirtualInterfaces, 'vm:0'],
  [ANNOTATIONS.rerouteVirtualInterfaces, '!eth0'],
  [ANNOTATIONS.rerouteVirtualInterfaces, 'ｅｔｈ0'],
  [ANNOTATIONS.interceptionMode, 'redirect'],
  [ANNOTATIONS.interceptionMode, 'TPROXY '],
  [ANNOTATIONS.interceptionMode, ''],
  [ANNOTATIONS.interceptionMode, 'IPTABLES'],
];

describe('malformed annotation values', () => {
  it(`refuses all ${MALFORMED.length} of them, naming the annotation and the value`, () => {
    assert.ok(MALFORMED.length >= 50);
    for (const [annotation, value] of MALFORMED) {
      assert.throws(
        () => settings({ [annotation]: value }),
        (err: unknown) =>
          err instanceof InvalidCaptureValue && err.message.includes(annotation) && err.details.includes(JSON.stringify(value)),
        `${annotation}=${JSON.stringify(value)}`,
      );
    }
  });

  it('refuses a list of more than MAX_ITEMS items, quoting only the start of the value', () => {
    const value = Array.from({ length: MAX_ITEMS + 1 }, (_, i) => String(i + 1)).join(',');
    assert.throws(
      () => settings({ [ANNOTATIONS.excludeInboundPorts]: value }),
      (err: unknown) => err instanceof CniError && err.code === 106 && /1025 items; at most 1024/.test(err.details) && err.details.length < 400,
    );
    assert.equal(settings({ [ANNOTATIONS.includeInboundPorts]: value.split(',').slice(0, MAX_ITEMS).join(',') }).includeInboundPorts.length, MAX_ITEMS);
  });

  it('refuses a proxy uid or gid out of range: (uid_t)-1, negative, beyond 32 bits', () => {
    for (const securityContext of [{ runAsUser: -1 }, { runAsUser: 4294967295 }, { runAsGroup: 2 ** 32 }, { runAsGroup: -5 }]) {
      assert.throws(() => settings({}, { securityContext }), (err: unknown) => err instanceof CniError && err.code === 106, JSON.stringify(securityContext));
    }
    assert.equal(settings({}, { securityContext: { runAsUser: 4294967294 } }).proxyUid, 4294967294);
  });

  it('refuses a DNS capture flag that is not a boolean', () => {
    assert.throws(() => settings({}, { env: [{ name: 'ISTIO_META_DNS_CAPTURE', value: 'yes please' }] }), /ISTIO_META_DNS_CAPTURE/);
  });
});
