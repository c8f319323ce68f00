import type { Cidr, Family } from './cidr.ts';
import { ADDRESSES, captureInbound, CONNMARK_MASKS, destination, DIVERT, dnsConntrackZones, DNS_PORT, hex, IN_REDIRECT, INBOUND, OUTBOUND_MARK, OUTPUT, OUTPUT_DNS, REDIRECT, requireWithinCap, rule, tcpPort, TPROXY, udpPort } from './rule-parts.ts';
import type { Rule, RuleSet, Table, TableRules } from './ruleset.ts';
import type { RedirectSettings } from './settings.ts';

/**
 * The `istio-current` profile: what current Istio's CNI plugin (istio-iptables in CNI mode) leaves in
 * a sidecar pod's netns, rule for rule and in the order the kernel holds them, for one address family.
 * Unlike the seed profile, some rules live in the built-in chains, where Istio puts them: interfaces
 * left alone (`-i NAME -j RETURN` in PREROUTING, `-o NAME -j RETURN` in OUTPUT) and TPROXY's mark
 * keeping in mangle PREROUTING/OUTPUT. `ownsBuiltinRule` recognises them for DEL and CHECK.
 */
export function istioCurrentRuleSet(settings: RedirectSettings, family: Family): RuleSet {
  const tables: TableRules[] = [natRules(settings, family)];
  const mangle = mangleRules(settings, family);
  if (mangle.rules.length > 0) tables.push(mangle);
  if (settings.dnsCapture) tables.push(dnsConntrackZones(settings));
  return tables;
}

const DROP_CHAIN = 'ISTIO_DROP';

const ofFamily = (cidrs: readonly Cidr[], family: Family) => cidrs.filter((c) => c.family === family);

/** Inbound traffic to these ports stays with its destination under `*`: the pod's exclusions, then the proxy's own ports. */
function inboundExclusions(settings: RedirectSettings, chain: string): Rule[] {
  return settings.excludeInboundPorts.map((port) => rule(chain, ...tcpPort(port), '-j', 'RETURN'));
}

function natRules(settings: RedirectSettings, family: Family): TableRules {
  const { passthroughSource, localhost } = ADDRESSES[family];
  const { proxyUid, proxyGid, tunnelPort, dnsCapture: dns } = settings;
  const redirectInbound = settings.interceptionMode === 'REDIRECT' && captureInbound(settings);
  const include = settings.includeOutboundIpRanges;

  // Istio inserts the VM interfaces' rules at the head of PREROUTING, each before the last: the
  // redirects (one per interface and included range) come first, newest first, then the returns.
  const rerouteRanges: (Cidr | undefined)[] = include === '*' ? [undefined] : ofFamily(include, family);
  requireWithinCap(rerouteRanges.length * settings.rerouteInterfaces.length);
  const rerouteRedirects = rerouteRanges
    .flatMap((cidr) => settings.rerouteInterfaces.map((name) => rule('PREROUTING', ...(cidr ? destination(cidr) : []), '-i', name, '-j', REDIRECT)))
    .reverse();
  const rerouteReturns = [...settings.rerouteInterfaces].reverse().map((name) => rule('PREROUTING', '-i', name, '-j', 'RETURN'));

  const ports = settings.includeInboundPorts;
  const inbound = [rule(INBOUND, ...tcpPort(tunnelPort), '-j', 'RETURN')];
  if (redirectInbound && ports === '*') inbound.push(...inboundExclusions(settings, INBOUND), rule(INBOUND, '-p', 'tcp', '-j', IN_REDIRECT));
  else if (redirectInbound && ports !== '*') inbound.push(...ports.map((port) => rule(INBOUND, ...tcpPort(port), '-j', IN_REDIRECT)));

  const output: Rule[] = settings.excludeOutboundPorts.flatMap((port) => [
    rule(OUTPUT, ...tcpPort(port), '-j', 'RETURN'),
    rule(OUTPUT, ...udpPort('--dport', port), '-j', 'RETURN'),
  ]);
  // Inbound traffic the proxy passes through to the app comes from 127.0.0.6 / ::6: leave it.
  output.push(rule(OUTPUT, '-s', passthroughSource, '-o', 'lo', '-j', 'RETURN'));
  const owners: [string, number][] = [['--uid-owner', proxyUid], ['--gid-owner', proxyGid]];
  for (const [owner, id] of owners) {
    // The proxy calling a pod address over lo (app -> proxy -> VIP -> proxy -> app) is inbound
    // traffic, except to the tunnel port and, with DNS capture, to a resolver on port 53 (uid only).
    const notPorts = dns && owner === '--uid-owner' ? ['-m', 'multiport', '!', '--dports', `${DNS_PORT},${tunnelPort}`] : ['-m', 'tcp', '!', '--dport', String(tunnelPort)];
    output.push(rule(OUTPUT, '!', '-d', localhost, '-o', 'lo', '-p', 'tcp', ...notPorts, '-m', 'owner', owner, String(id), '-j', IN_REDIRECT));
    // Anyone else's traffic over lo stays local, unless the pod asked for loopback to be captured
    // (DNS to a resolver on lo is still captured below).
    if (!settings.includesLoopback) {
      const notDns = dns ? ['-p', 'tcp', '-m', 'tcp', '!', '--dport', String(DNS_PORT)] : [];
      output.push(rule(OUTPUT, '-o', 'lo', ...notDns, '-m', 'owner', '!', owner, String(id), '-j', 'RETURN'));
    }
    output.push(rule(OUTPUT, '-m', 'owner', owner, String(id), '-j', 'RETURN'));
  }
  if (dns) output.push(rule(OUTPUT, '-j', OUTPUT_DNS));
  output.push(rule(OUTPUT, '-d', localhost, '-j', 'RETURN'));
  for (const cidr of ofFamily(settings.excludeOutboundIpRanges, family)) output.push(rule(OUTPUT, ...destination(cidr), '-j', 'RETURN'));
  for (const port of settings.includeOutboundPorts) output.push(rule(OUTPUT, ...tcpPort(port), '-j', REDIRECT));
  if (include === '*') output.push(rule(OUTPUT, '-j', REDIRECT));
  else for (const cidr of ofFamily(include, family)) output.push(rule(OUTPUT, ...destination(cidr), '-j', REDIRECT));

  return {
    table: 'nat',
    chains: [INBOUND, REDIRECT, IN_REDIRECT, OUTPUT, ...(dns ? [OUTPUT_DNS] : [])],
    rules: [
      ...rerouteRedirects,
      ...rerouteReturns,
      ...interfaceReturns(settings, 'nat'),
      ...(redirectInbound ? [rule('PREROUTING', '-p', 'tcp', '-j', INBOUND)] : []),
      rule('OUTPUT', '-j', OUTPUT),
      ...inbound,
      rule(REDIRECT, '-p', 'tcp', '-j', 'REDIRECT', '--to-ports', String(settings.outboundPort)),
      rule(IN_REDIRECT, '-p', 'tcp', '-j', 'REDIRECT', '--to-ports', String(settings.inboundPort)),
      ...output,
      ...(dns
        ? [
            rule(OUTPUT_DNS, ...tcpPort(DNS_PORT), '-j', 'REDIRECT', '--to-ports', String(settings.dnsPort)),
            rule(OUTPUT_DNS, ...udpPort('--dport', DNS_PORT), '-j', 'REDIRECT', '--to-ports', String(settings.dnsPort)),
          ]
        : []),
    ],
  };
}

/** Excluded interfaces return early in the built-in chains: in nat, and in mangle too under TPROXY. */
function interfaceReturns(settings: RedirectSettings, table: Table): Rule[] {
  if (table === 'mangle' && settings.interceptionMode !== 'TPROXY') return [];
  return [
    ...settings.excludeInterfaces.map((name) => rule('PREROUTING', '-i', name, '-j', 'RETURN')),
    ...settings.excludeInterfaces.map((name) => rule('OUTPUT', '-o', name, '-j', 'RETURN')),
  ];
}

/**
 * mangle: INVALID packets dropped (when asked), and TPROXY: inbound TCP diverted to the inbound
 * listener with its original addresses, the proxy's packets to the app marked so that the `ip rule`
 * for the mark routes replies back to lo.
 */
function mangleRules(settings: RedirectSettings, family: Family): TableRules {
  const { passthroughSource, localhost, anyAddress } = ADDRESSES[family];
  const tproxy = settings.interceptionMode === 'TPROXY';
  const divert = tproxy && captureInbound(settings);
  const mark = hex(settings.tproxyMark);
  const fullMark = `${mark}/0xffffffff`;
  const chains: string[] = [];
  const rules: Rule[] = interfaceReturns(settings, 'mangle');

  if (settings.dropInvalid) {
    chains.push(DROP_CHAIN);
    rules.push(rule('PREROUTING', '-m', 'conntrack', '--ctstate', 'INVALID', '-j', DROP_CHAIN), rule(DROP_CHAIN, '-j', 'DROP'));
  }
  if (divert) {
    chains.push(DIVERT, TPROXY);
    rules.push(
      rule('PREROUTING', '-p', 'tcp', '-j', INBOUND),
      rule(DIVERT, '-j', 'MARK', '--set-xmark', fullMark),
      rule(DIVERT, '-j', 'ACCEPT'),
      rule(TPROXY, '!', '-d', localhost, '-p', 'tcp', '-j', 'TPROXY', '--on-port', String(settings.inboundPort), '--on-ip', anyAddress, '--tproxy-mark', fullMark),
    );
  }
  if (!tproxy) return { table: 'mangle', chains, rules };

  chains.push(INBOUND);
  const established = ['-m', 'conntrack', '--ctstate', 'RELATED,ESTABLISHED', '-j', DIVERT];
  const proxyToApp = (owner: string, id: number) =>
    rule('OUTPUT', '!', '-d', localhost, '-o', 'lo', '-p', 'tcp', '-m', 'owner', owner, String(id), '-j', 'MARK', '--set-xmark', `${hex(OUTBOUND_MARK)}/0xffffffff`);
  rules.push(
    rule('PREROUTING', '-p', 'tcp', '-m', 'mark', '--mark', mark, '-j', 'CONNMARK', '--save-mark', ...CONNMARK_MASKS),
    rule('OUTPUT', '-o', 'lo', '-p', 'tcp', '-m', 'mark', '--mark', mark, '-j', 'RETURN'),
    proxyToApp('--uid-owner', settings.proxyUid),
    proxyToApp('--gid-owner', settings.proxyGid),
    rule('OUTPUT', '-p', 'tcp', '-m', 'connmark', '--mark', mark, '-j', 'CONNMARK', '--restore-mark', ...CONNMARK_MASKS),
    // Already diverted, the proxy's passthrough to the app, and the app's own calls over lo: not diverted.
    rule(INBOUND, '-p', 'tcp', '-m', 'mark', '--mark', mark, '-j', 'RETURN'),
    rule(INBOUND, '-s', passthroughSource, '-i', 'lo', '-p', 'tcp', '-j', 'RETURN'),
    rule(INBOUND, '-i', 'lo', '-p', 'tcp', '-m', 'mark', '!', '--mark', hex(OUTBOUND_MARK), '-j', 'RETURN'),
  );
  const ports = settings.includeInboundPorts;
  if (divert && ports === '*') {
    rules.push(...inboundExclusions(settings, INBOUND), rule(INBOUND, '-p', 'tcp', ...established), rule(INBOUND, '-p', 'tcp', '-j', TPROXY));
  } else if (divert && ports !== '*') {
    for (const port of ports) {
      rules.push(rule(INBOUND, ...tcpPort(port), ...established), rule(INBOUND, ...tcpPort(port), '-j', TPROXY));
    }
  }
  return { table: 'mangle', chains, rules };
}

/**
 * The rules of this profile that sit in built-in chains without jumping to a chain of ours, as
 * iptables-save prints them: DEL and CHECK count them as ours. Their shapes are fixed words around an
 * interface name or a proxy uid/gid.
 */
const BUILTIN_SHAPES: Record<string, RegExp[]> = {
  nat: [/^-A PREROUTING -i [A-Za-z][A-Za-z0-9_.-]{0,14} -j RETURN$/, /^-A OUTPUT -o [A-Za-z][A-Za-z0-9_.-]{0,14} -j RETURN$/],
  mangle: [
    /^-A PREROUTING -i [A-Za-z][A-Za-z0-9_.-]{0,14} -j RETURN$/,
    /^-A OUTPUT -o [A-Za-z][A-Za-z0-9_.-]{0,14} -j RETURN$/,
    /^-A PREROUTING -p tcp -m mark --mark 0x539 -j CONNMARK --save-mark --nfmask 0xffffffff --ctmask 0xffffffff$/,
    /^-A OUTPUT -o lo -p tcp -m mark --mark 0x539 -j RETURN$/,
    /^-A OUTPUT ! -d (127\.0\.0\.1\/32|::1\/128) -o lo -p tcp -m owner --[ug]id-owner [0-9]{1,10} -j MARK --set-xmark 0x53a\/0xffffffff$/,
    /^-A OUTPUT -p tcp -m connmark --mark 0x539 -j CONNMARK --restore-mark --nfmask 0xffffffff --ctmask 0xffffffff$/,
  ],
};

export function ownsBuiltinRule(table: string, line: string): boolean {
  return (BUILTIN_SHAPES[table] ?? []).some((shape) => shape.test(line));
}
