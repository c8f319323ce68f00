/**
 * rules_profile: the conflist field, `auto`'s choice from the proxy image, how the istio-current
 * profile reads a pod (Istio's CNI plugin's defaults and list syntax), and DEL's and CHECK's view of
 * its rules in built-in chains. That its rules equal Istio's line for line is the differential test's
 * job (test/compat/); here the reading of values that test can only sample.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseConfig } from '../../src/cni/config.ts';
import { CniError } from '../../src/cni/errors.ts';
import { InvalidCaptureValue } from '../../src/redirect/errors.ts';
import { captureSettingsFor, profileForProxy } from '../../src/redirect/profile.ts';
import { differences, ownedState, parseSave, renderCreate, renderRemoval } from '../../src/redirect/restore.ts';
import { buildRuleSet } from '../../src/redirect/ruleset.ts';
import { CaptureDefaults } from '../../src/redirect/settings.ts';
import { ANNOTATIONS, settingsFromPod, type ProxyContainer } from '../../src/redirect/settings-from-pod.ts';

const DEFAULTS = CaptureDefaults.parse(undefined);
const IPV4 = ['10.200.0.5/24'];

function current(annotations: Record<string, string> = {}, proxy: ProxyContainer = {}, podIps = IPV4) {
  return captureSettingsFor({ annotations, proxy, podIps, defaults: DEFAULTS }, 'istio-current');
}
function lines(s: ReturnType<typeof current>, family: 4 | 6 = 4, table = 'nat'): string[] {
  return renderCreate(buildRuleSet(s, family).filter((t) => t.table === table))
    .split('\n')
    .filter((l) => l.startsWith('-'));
}
const chain = (all: string[], name: string) => all.filter((l) => l.startsWith(`-A ${name} `));
// The rule core's own error, which the CNI layer reports as 106 (src/main.ts).
const refuses = (fn: () => unknown, annotation: string) =>
  assert.throws(fn, (e) => e instanceof InvalidCaptureValue && e.message.includes(annotation), annotation);

describe('rules_profile in the conflist', () => {
  it('defaults to seed and accepts istio-current and auto; anything else is error 7', () => {
    assert.equal(parseConfig('{"cniVersion":"1.0.0"}').rulesProfile, 'seed');
    for (const p of ['seed', 'istio-current', 'auto']) assert.equal(parseConfig(JSON.stringify({ cniVersion: '1.0.0', rules_profile: p })).rulesProfile, p);
    for (const bad of ['current', 'Istio-Current', '', 1]) {
      assert.throws(() => parseConfig(JSON.stringify({ cniVersion: '1.0.0', rules_profile: bad })), (e: CniError) => e.code === 7 && /rules_profile/.test(e.details));
    }
  });

  it('seed gives exactly what the seed-only plugin gave', () => {
    const input = { annotations: { [ANNOTATIONS.excludeOutboundPorts]: '9000' }, proxy: {}, podIps: IPV4, defaults: DEFAULTS };
    assert.deepEqual(captureSettingsFor(input, 'seed'), settingsFromPod(input));
  });
});

describe('auto: the profile from the proxy image', () => {
  it('seed for Istio 1.4 and older, istio-current for newer or unknown versions', () => {
    const cases: [string | undefined, string][] = [
      ['docker.io/istio/proxyv2:1.4.3', 'seed'],
      ['docker.io/istio/proxyv2:1.3.0-distroless', 'seed'],
      ['localhost:5000/istio/proxyv2:1.4.0', 'seed'],
      ['gcr.io/istio-release/proxyv2:v1.0.6', 'seed'],
      ['docker.io/istio/proxyv2:1.5.0', 'istio-current'],
      ['docker.io/istio/proxyv2:1.22.3', 'istio-current'],
      ['gcr.io/istio-testing/proxyv2:1.31-dev', 'istio-current'],
      ['docker.io/istio/proxyv2:latest', 'istio-current'],
      ['docker.io/istio/proxyv2@sha256:0123456789abcdef', 'istio-current'],
      ['localhost:5000/proxyv2', 'istio-current'],
      [undefined, 'istio-current'],
    ];
    for (const [image, profile] of cases) assert.equal(profileForProxy(image === undefined ? {} : { image }), profile, image);
  });

  it('reads the proxy of each pod: an old one keeps the seed rules', () => {
    const input = (image: string) => ({ annotations: {}, proxy: { image }, podIps: IPV4, defaults: DEFAULTS });
    assert.equal(captureSettingsFor(input('docker.io/istio/proxyv2:1.4.3'), 'auto').profile, 'seed');
    assert.equal(captureSettingsFor(input('docker.io/istio/proxyv2:1.22.3'), 'auto').profile, 'istio-current');
  });
});

describe('istio-current: reading a pod as Istio CNI plugin does', () => {
  it('leaves the tunnel, status, health and Prometheus ports alone inbound, and the status port outbound', () => {
    const nat = lines(current());
    assert.deepEqual(chain(nat, 'ISTIO_INBOUND'), [
      '-A ISTIO_INBOUND -p tcp -m tcp --dport 15008 -j RETURN',
      '-A ISTIO_INBOUND -p tcp -m tcp --dport 15020 -j RETURN',
      '-A ISTIO_INBOUND -p tcp -m tcp --dport 15021 -j RETURN',
      '-A ISTIO_INBOUND -p tcp -m tcp --dport 15090 -j RETURN',
      '-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT',
    ]);
    assert.deepEqual(chain(nat, 'ISTIO_OUTPUT').slice(0, 2), ['-A ISTIO_OUTPUT -p tcp -m tcp --dport 15020 -j RETURN', '-A ISTIO_OUTPUT -p udp -m udp --dport 15020 -j RETURN']);
    assert.deepEqual(chain(lines(current({ [ANNOTATIONS.excludeOutboundPorts]: '' })), 'ISTIO_OUTPUT')[0], '-A ISTIO_OUTPUT -s 127.0.0.6/32 -o lo -j RETURN');
  });

  it('excludeInboundPorts: repeated items are dropped as written, so only an identical repeat is one rule', () => {
    assert.deepEqual(current({ [ANNOTATIONS.excludeInboundPorts]: '80,80,15020' }).excludeInboundPorts, [80, 15020, 15021, 15090]);
    assert.deepEqual(current({ [ANNOTATIONS.excludeInboundPorts]: ' 80, 80 ' }).excludeInboundPorts, [80, 80, 15020, 15021, 15090]);
    assert.deepEqual(current({ [ANNOTATIONS.excludeInboundPorts]: '  ' }).excludeInboundPorts, [15020, 15021, 15090]);
  });

  it('excludeInboundPorts "*": refused where it would be applied, ignored where it would not', () => {
    refuses(() => current({ [ANNOTATIONS.excludeInboundPorts]: '*' }), ANNOTATIONS.excludeInboundPorts);
    assert.deepEqual(current({ [ANNOTATIONS.excludeInboundPorts]: '*', [ANNOTATIONS.includeInboundPorts]: '8080' }).includeInboundPorts, [8080]);
  });

  it('lists: blanks around items are fine; blanks alone, blanks around `*` or a CIDR, port 0 and leading zeros are refused', () => {
    assert.deepEqual(current({ [ANNOTATIONS.includeInboundPorts]: ' 80 ,\t90' }).includeInboundPorts, [80, 90]);
    assert.deepEqual(current({ [ANNOTATIONS.includeInboundPorts]: '' }).includeInboundPorts, []);
    for (const [annotation, value] of [
      [ANNOTATIONS.includeInboundPorts, '  '],
      [ANNOTATIONS.includeInboundPorts, ' *'],
      [ANNOTATIONS.includeInboundPorts, '0'],
      [ANNOTATIONS.excludeOutboundPorts, '080'],
      [ANNOTATIONS.excludeOutboundPorts, '*'],
      [ANNOTATIONS.includeOutboundPorts, ' '],
      [ANNOTATIONS.includeOutboundIpRanges, ' 10.0.0.0/8'],
      [ANNOTATIONS.includeOutboundIpRanges, '* '],
      [ANNOTATIONS.excludeOutboundIpRanges, '*'],
      [ANNOTATIONS.excludeInterfaces, '0eth'],
      [ANNOTATIONS.excludeInterfaces, ' '],
      [ANNOTATIONS.rerouteVirtualInterfaces, 'eth+'],
    ] as const) {
      refuses(() => current({ [annotation]: value }), annotation);
    }
  });

  it('reroute-virtual-interfaces wins and the KubeVirt annotation is then not even read', () => {
    assert.deepEqual(current({ [ANNOTATIONS.rerouteVirtualInterfaces]: 'vm0', [ANNOTATIONS.kubevirtInterfaces]: '0bad' }).rerouteInterfaces, ['vm0']);
    refuses(() => current({ [ANNOTATIONS.kubevirtInterfaces]: '0bad' }), ANNOTATIONS.kubevirtInterfaces);
  });

  it('istio-proxy flags are Go booleans, the last entry counts, anything else is false', () => {
    const env = (...values: string[]) => ({ env: values.map((value) => ({ name: 'ISTIO_META_DNS_CAPTURE', value })) });
    assert.equal(current({}, env('true')).dnsCapture, true);
    assert.equal(current({}, env('T')).dnsCapture, true);
    assert.equal(current({}, env('yes')).dnsCapture, false);
    assert.equal(current({}, env('true', 'false')).dnsCapture, false);
    assert.equal(current({}, { env: [{ name: 'INVALID_DROP', value: '1' }] }).dropInvalid, true);
    assert.deepEqual(lines(current({}, { env: [{ name: 'INVALID_DROP', value: '1' }] }), 4, 'mangle'), [
      '-N ISTIO_DROP',
      '-A PREROUTING -m conntrack --ctstate INVALID -j ISTIO_DROP',
      '-A ISTIO_DROP -j DROP',
    ]);
  });

  it('IPv6 rules: always for an IPv6-only pod, for a dual-stack one only with ISTIO_DUAL_STACK', () => {
    assert.equal(current({}, {}, ['fd00::5/64']).ipv6, true);
    assert.equal(current({}, {}, ['10.0.0.5/24', 'fd00::5/64']).ipv6, false);
    assert.equal(current({}, { env: [{ name: 'ISTIO_DUAL_STACK', value: 'true' }] }, ['10.0.0.5/24', 'fd00::5/64']).ipv6, true);
  });

  it('a loopback address among the included ranges captures the app\'s own calls over lo', () => {
    const returns = (s: ReturnType<typeof current>) => chain(lines(s), 'ISTIO_OUTPUT').filter((l) => l.includes('! --uid-owner') || l.includes('! --gid-owner'));
    assert.equal(returns(current({ [ANNOTATIONS.includeOutboundIpRanges]: '10.0.0.0/8' })).length, 2);
    for (const loopback of ['127.0.0.1/32', '127.1.2.3/0', '::1/128', '::ffff:127.0.0.1/128']) {
      assert.deepEqual(returns(current({ [ANNOTATIONS.includeOutboundIpRanges]: `10.0.0.0/8,${loopback}` })), [], loopback);
    }
  });

  it('NONE: no rules (Istio\'s plugin refuses the pod instead, README)', () => {
    assert.deepEqual(buildRuleSet(current({ [ANNOTATIONS.interceptionMode]: 'NONE' })), []);
  });
});

describe('istio-current rules in built-in chains are ours for DEL and CHECK', () => {
  const tproxy = current({ [ANNOTATIONS.interceptionMode]: 'TPROXY', [ANNOTATIONS.excludeInterfaces]: 'eth1', [ANNOTATIONS.rerouteVirtualInterfaces]: 'vm0' });
  /** The netns after ADD as iptables-save prints it, with someone else's rules around ours. */
  const save = (table: 'nat' | 'mangle') => {
    const t = buildRuleSet(tproxy).find((x) => x.table === table)!;
    const builtin = ['PREROUTING', 'INPUT', 'OUTPUT', 'POSTROUTING'];
    const foreign = ['-A PREROUTING -i eth9 -j ACCEPT', '-A OUTPUT -o eth9 -j DNAT --to-destination 10.0.0.1', '-A POSTROUTING -o eth1 -j RETURN'];
    return [`*${table}`, ...builtin.map((c) => `:${c} ACCEPT [0:0]`), ...t.chains.map((c) => `:${c} - [0:0]`), ...foreign, ...t.rules.map((r) => `-A ${r.chain} ${r.spec.join(' ')}`), 'COMMIT', ''].join('\n');
  };

  it('CHECK finds the programmed state as expected, and names a missing one', () => {
    const state = parseSave(save('nat') + save('mangle'));
    assert.deepEqual(differences(buildRuleSet(tproxy), state), []);
    const without = parseSave((save('nat') + save('mangle')).replace('-A OUTPUT -o eth1 -j RETURN\n', ''));
    assert.deepEqual(differences(buildRuleSet(tproxy), without), ['nat: missing -A OUTPUT -o eth1 -j RETURN']);
  });

  it('DEL removes them by position and leaves everyone else\'s rules', () => {
    for (const table of ['nat', 'mangle'] as const) {
      const text = save(table);
      const chains = new Map<string, string[]>();
      for (const line of text.split('\n').filter((l) => l.startsWith('-A '))) {
        const chain = line.split(' ')[1]!;
        chains.set(chain, [...(chains.get(chain) ?? []), line]);
      }
      // Apply the removal's `-D CHAIN N` lines as iptables-restore would, one after another.
      for (const line of renderRemoval(parseSave(text)).split('\n').filter((l) => l.startsWith('-D '))) {
        const [, chain, position] = line.split(' ');
        assert.match(position!, /^[0-9]+$/, line);
        chains.get(chain!)!.splice(Number(position) - 1, 1);
      }
      const left = ['PREROUTING', 'OUTPUT', 'POSTROUTING'].flatMap((c) => chains.get(c) ?? []);
      assert.deepEqual(left, ['-A PREROUTING -i eth9 -j ACCEPT', '-A OUTPUT -o eth9 -j DNAT --to-destination 10.0.0.1', '-A POSTROUTING -o eth1 -j RETURN'], table);
    }
    const owned = ownedState(parseSave(save('mangle'))).get('mangle')!;
    assert.ok(owned.jumps.map((j) => j.line).includes('-A OUTPUT ! -d 127.0.0.1/32 -o lo -p tcp -m owner --gid-owner 1337 -j MARK --set-xmark 0x53a/0xffffffff'));
  });
});
