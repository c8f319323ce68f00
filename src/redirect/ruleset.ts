import type { Family } from './cidr.ts';
import { ADDRESSES, captureInbound, CONNMARK_MASKS, destination, DIVERT, dnsConntrackZones, DNS_PORT, hex, IN_REDIRECT, INBOUND, OUTBOUND_MARK, OUTPUT, OUTPUT_DNS, REDIRECT, requireWithinCap, rule, tcpPort, TPROXY, udpPort } from './rule-parts.ts';
import { istioCurrentRuleSet } from './ruleset-istio-current.ts';
import type { RedirectSettings } from './settings.ts';

export type Table = 'nat' | 'mangle' | 'raw';

/** One rule as data: its chain and the match/target words exactly as `iptables-save` prints them. */
export interface Rule {
  chain: string;
  spec: readonly string[];
}

export interface TableRules {
  table: Table;
  /** Chains this plugin owns; created on ADD, removed on DEL. */
  chains: readonly string[];
  rules: readonly Rule[];
}

export type RuleSet = readonly TableRules[];

/** Every chain the plugin creates carries this prefix; anything else in the netns is not ours. */
export const CHAIN_PREFIX = 'ISTIO_';

const SSH_PORT = 22;

/**
 * The rules istio-iptables programs for a sidecar pod with these settings, for one address family, in
 * the settings' profile. The default settings give the seed's nat rule set. An IPv6 rule set is empty
 * unless the pod has an IPv6 address; interception mode NONE gives no rules at all.
 */
export function buildRuleSet(settings: RedirectSettings, family: Family = 4): RuleSet {
  if (settings.interceptionMode === 'NONE' || (family === 6 && !settings.ipv6)) return [];
  const tables = settings.profile === 'istio-current' ? istioCurrentRuleSet(settings, family) : seedRuleSet(settings, family);
  requireWithinCap(tables.reduce((count, t) => count + t.rules.length, 0));
  return tables;
}

function seedRuleSet(settings: RedirectSettings, family: Family): TableRules[] {
  const tables: TableRules[] = [natRules(settings, family)];
  // With no inbound capture there is nothing to divert: TPROXY then needs no mangle rules.
  if (settings.interceptionMode === 'TPROXY' && captureInbound(settings)) tables.push(mangleRules(settings, family));
  if (settings.dnsCapture) tables.push(dnsConntrackZones(settings));
  return tables;
}

/**
 * TPROXY's policy routing (an `ip rule` for the mark, a local default route to lo): current Istio adds
 * it only when inbound traffic is diverted, the seed profile whenever TPROXY is asked for.
 */
export function usesTproxyRouting(settings: RedirectSettings): boolean {
  if (settings.interceptionMode !== 'TPROXY') return false;
  return settings.profile === 'seed' || captureInbound(settings);
}

/** Traffic arriving on a rerouted (VM) interface leaves ISTIO_INBOUND untouched: it is outbound traffic. */
function rerouteReturns(settings: RedirectSettings): Rule[] {
  return settings.rerouteInterfaces.map((name) => rule(INBOUND, '-i', name, '-j', 'RETURN'));
}

function natRules(settings: RedirectSettings, family: Family): TableRules {
  const { passthroughSource, localhost } = ADDRESSES[family];
  const redirectInbound = settings.interceptionMode === 'REDIRECT' && captureInbound(settings);
  const inRange = (cidrs: RedirectSettings['excludeOutboundIpRanges']) => cidrs.filter((c) => c.family === family);

  const inbound: Rule[] = [];
  if (redirectInbound) {
    inbound.push(...rerouteReturns(settings));
    if (settings.includeInboundPorts === '*') {
      for (const port of [SSH_PORT, ...settings.excludeInboundPorts]) inbound.push(rule(INBOUND, ...tcpPort(port), '-j', 'RETURN'));
      inbound.push(rule(INBOUND, '-p', 'tcp', '-j', IN_REDIRECT));
    } else {
      for (const port of settings.includeInboundPorts) inbound.push(rule(INBOUND, ...tcpPort(port), '-j', IN_REDIRECT));
    }
  }

  // VM interfaces: Istio inserts each at the head of PREROUTING, so the last one generated comes first.
  const reroutes: Rule[] = [];
  const include = settings.includeOutboundIpRanges;
  const ranges = include === '*' ? [undefined] : inRange(include);
  requireWithinCap(ranges.length * settings.rerouteInterfaces.length);
  for (const cidr of ranges) {
    for (const name of settings.rerouteInterfaces) {
      reroutes.push(rule('PREROUTING', ...(cidr ? destination(cidr) : []), '-i', name, '-j', REDIRECT));
    }
  }
  reroutes.reverse();

  const dns = settings.dnsCapture;
  const output: Rule[] = [];
  for (const port of settings.excludeOutboundPorts) {
    output.push(rule(OUTPUT, ...tcpPort(port), '-j', 'RETURN'));
    // UDP reaches ISTIO_OUTPUT only when DNS is captured.
    if (dns) output.push(rule(OUTPUT, ...udpPort('--dport', port), '-j', 'RETURN'));
  }
  // Inbound traffic the proxy passes through to the app comes from 127.0.0.6 / ::6: leave it.
  output.push(rule(OUTPUT, '-s', passthroughSource, '-o', 'lo', '-j', 'RETURN'));
  // The app calling its own pod IP over lo is inbound traffic: send it to the inbound listener
  // (DNS to a resolver on such an address goes to the DNS proxy instead).
  output.push(
    dns
      ? rule(OUTPUT, '!', '-d', localhost, '-o', 'lo', '-p', 'tcp', '-m', 'tcp', '!', '--dport', String(DNS_PORT), '-j', IN_REDIRECT)
      : rule(OUTPUT, '!', '-d', localhost, '-o', 'lo', '-j', IN_REDIRECT),
  );
  output.push(rule(OUTPUT, '-m', 'owner', '--uid-owner', String(settings.proxyUid), '-j', 'RETURN'));
  output.push(rule(OUTPUT, '-m', 'owner', '--gid-owner', String(settings.proxyGid), '-j', 'RETURN'));
  if (dns) output.push(rule(OUTPUT, '-j', OUTPUT_DNS));
  output.push(rule(OUTPUT, '-d', localhost, '-j', 'RETURN'));
  for (const cidr of inRange(settings.excludeOutboundIpRanges)) output.push(rule(OUTPUT, ...destination(cidr), '-j', 'RETURN'));
  for (const port of settings.includeOutboundPorts) output.push(rule(OUTPUT, ...tcpPort(port), '-j', REDIRECT));
  if (include === '*') output.push(rule(OUTPUT, '-j', REDIRECT));
  else for (const cidr of inRange(include)) output.push(rule(OUTPUT, ...destination(cidr), '-j', REDIRECT));

  return {
    table: 'nat',
    chains: [...(redirectInbound ? [INBOUND] : []), IN_REDIRECT, OUTPUT, REDIRECT, ...(dns ? [OUTPUT_DNS] : [])],
    rules: [
      ...reroutes,
      ...(redirectInbound ? [rule('PREROUTING', '-p', 'tcp', '-j', INBOUND)] : []),
      // With DNS capture UDP must reach ISTIO_OUTPUT too, as in Istio.
      dns ? rule('OUTPUT', '-j', OUTPUT) : rule('OUTPUT', '-p', 'tcp', '-j', OUTPUT),
      ...inbound,
      rule(IN_REDIRECT, '-p', 'tcp', '-j', 'REDIRECT', '--to-ports', String(settings.inboundPort)),
      ...output,
      rule(REDIRECT, '-p', 'tcp', '-j', 'REDIRECT', '--to-ports', String(settings.outboundPort)),
      ...(dns
        ? [
            rule(OUTPUT_DNS, '-p', 'tcp', '-m', 'tcp', '--dport', String(DNS_PORT), '-j', 'REDIRECT', '--to-ports', String(settings.dnsPort)),
            rule(OUTPUT_DNS, '-p', 'udp', '-m', 'udp', '--dport', String(DNS_PORT), '-j', 'REDIRECT', '--to-ports', String(settings.dnsPort)),
          ]
        : []),
    ],
  };
}

/**
 * TPROXY: inbound TCP is diverted in mangle PREROUTING to the inbound listener with its original
 * addresses kept; packets of established connections are marked so that the `ip rule` for the mark
 * routes them to lo. Istio's mark-keeping rules in the built-in chains live here in chains of ours
 * (first in ISTIO_INBOUND, and in a mangle ISTIO_OUTPUT), so that DEL and CHECK can tell them apart.
 */
function mangleRules(settings: RedirectSettings, family: Family): TableRules {
  const { passthroughSource, localhost } = ADDRESSES[family];
  const mark = hex(settings.tproxyMark);
  const fullMark = `${mark}/0xffffffff`;
  const established = ['-m', 'conntrack', '--ctstate', 'RELATED,ESTABLISHED', '-j', DIVERT];

  const inbound: Rule[] = [
    rule(INBOUND, '-p', 'tcp', '-m', 'mark', '--mark', mark, '-j', 'CONNMARK', '--save-mark', ...CONNMARK_MASKS),
    // Already diverted: do not divert again.
    rule(INBOUND, '-p', 'tcp', '-m', 'mark', '--mark', mark, '-j', 'RETURN'),
    // The proxy's passthrough connections to the app, and the app's own calls over lo.
    rule(INBOUND, '-s', passthroughSource, '-i', 'lo', '-p', 'tcp', '-j', 'RETURN'),
    rule(INBOUND, '-i', 'lo', '-p', 'tcp', '-m', 'mark', '!', '--mark', hex(OUTBOUND_MARK), '-j', 'RETURN'),
    ...rerouteReturns(settings),
  ];
  if (settings.includeInboundPorts === '*') {
    for (const port of [SSH_PORT, ...settings.excludeInboundPorts]) inbound.push(rule(INBOUND, ...tcpPort(port), '-j', 'RETURN'));
    inbound.push(rule(INBOUND, '-p', 'tcp', ...established), rule(INBOUND, '-p', 'tcp', '-j', TPROXY));
  } else {
    for (const port of settings.includeInboundPorts) {
      inbound.push(rule(INBOUND, ...tcpPort(port), ...established), rule(INBOUND, ...tcpPort(port), '-j', TPROXY));
    }
  }
  const proxyToApp = (owner: string[]) =>
    rule(OUTPUT, '!', '-d', localhost, '-o', 'lo', '-p', 'tcp', '-m', 'owner', ...owner, '-j', 'MARK', '--set-xmark', `${hex(OUTBOUND_MARK)}/0xffffffff`);
  return {
    table: 'mangle',
    chains: [DIVERT, TPROXY, INBOUND, OUTPUT],
    rules: [
      rule('PREROUTING', '-p', 'tcp', '-j', INBOUND),
      rule('OUTPUT', '-p', 'tcp', '-j', OUTPUT),
      rule(DIVERT, '-j', 'MARK', '--set-xmark', fullMark),
      rule(DIVERT, '-j', 'ACCEPT'),
      rule(TPROXY, '!', '-d', localhost, '-p', 'tcp', '-j', 'TPROXY', '--on-port', String(settings.inboundPort), '--on-ip', ADDRESSES[family].anyAddress, '--tproxy-mark', fullMark),
      ...inbound,
      rule(OUTPUT, '-o', 'lo', '-p', 'tcp', '-m', 'mark', '--mark', mark, '-j', 'RETURN'),
      proxyToApp(['--uid-owner', String(settings.proxyUid)]),
      proxyToApp(['--gid-owner', String(settings.proxyGid)]),
      rule(OUTPUT, '-p', 'tcp', '-m', 'connmark', '--mark', mark, '-j', 'CONNMARK', '--restore-mark', ...CONNMARK_MASKS),
    ],
  };
}
