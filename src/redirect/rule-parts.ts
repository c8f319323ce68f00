import { InvalidCaptureValue } from './errors.ts';
import type { Rule, TableRules } from './ruleset.ts';
import type { RedirectSettings } from './settings.ts';

/** The words both profiles build their rules from, as `iptables-save` prints them. */

export const INBOUND = 'ISTIO_INBOUND';
export const IN_REDIRECT = 'ISTIO_IN_REDIRECT';
export const OUTPUT = 'ISTIO_OUTPUT';
export const REDIRECT = 'ISTIO_REDIRECT';
export const OUTPUT_DNS = 'ISTIO_OUTPUT_DNS';
export const DIVERT = 'ISTIO_DIVERT';
export const TPROXY = 'ISTIO_TPROXY';
export const DNS_PORT = 53;
/** Envoy marks its connections back to the app with this (Istio's outbound mark) under TPROXY. */
export const OUTBOUND_MARK = 1338;

/** Per family: the proxy's source address for inbound passthrough traffic (Istio's convention), and localhost. */
export const ADDRESSES = {
  4: { passthroughSource: '127.0.0.6/32', localhost: '127.0.0.1/32', anyAddress: '0.0.0.0' },
  6: { passthroughSource: '::6/128', localhost: '::1/128', anyAddress: '::' },
} as const;

/**
 * The most rules one address family's rule set may hold. Annotations multiply (each include range
 * with each rerouted interface is a rule of its own in PREROUTING): beyond this, ADD and CHECK fail
 * with error 106 before anything is applied, and DEL, which deletes the jumps in built-in chains one
 * by one, stays far inside its time bound.
 */
export const MAX_RULES = 4096;

/** Error 106 for a rule set beyond MAX_RULES, checked before the rules are made where they multiply. */
export function requireWithinCap(count: number): void {
  if (count > MAX_RULES) {
    throw new InvalidCaptureValue('the capture annotations ask for too many rules', `${count} rules for one address family; at most ${MAX_RULES}`);
  }
}

/** CONNMARK's masks, which iptables-save prints even when the rule was written without them. */
export const CONNMARK_MASKS = ['--nfmask', '0xffffffff', '--ctmask', '0xffffffff'] as const;

/** Inbound traffic is captured at all: every port, or a non-empty list. */
export function captureInbound(settings: RedirectSettings): boolean {
  return settings.includeInboundPorts === '*' || settings.includeInboundPorts.length > 0;
}

export const rule = (chain: string, ...spec: string[]): Rule => ({ chain, spec });
export const hex = (n: number) => `0x${n.toString(16)}`;
/** `-d` of a prefix, as iptables-save shows it: a /0 matches everything and prints as nothing. */
export const destination = (cidr: { text: string; prefixLength: number }) => (cidr.prefixLength === 0 ? [] : ['-d', cidr.text]);
export const tcpPort = (port: number) => ['-p', 'tcp', '-m', 'tcp', '--dport', String(port)];
export const udpPort = (direction: '--dport' | '--sport', port: number) => ['-p', 'udp', '-m', 'udp', direction, String(port)];

/** DNS over UDP in separate conntrack zones (proxy ↔ upstream: 1, app ↔ proxy: 2), as Istio does, so
 * the redirected and the proxy's own queries never share a conntrack entry. */
export function dnsConntrackZones(settings: RedirectSettings): TableRules {
  const zone = (n: number) => ['-j', 'CT', '--zone', String(n)];
  const owners = [
    ['--uid-owner', String(settings.proxyUid)],
    ['--gid-owner', String(settings.proxyGid)],
  ];
  return {
    table: 'raw',
    chains: [OUTPUT_DNS, INBOUND],
    rules: [
      rule('PREROUTING', '-j', INBOUND),
      rule('OUTPUT', '-j', OUTPUT_DNS),
      ...owners.flatMap((owner) => [
        rule(OUTPUT_DNS, ...udpPort('--dport', DNS_PORT), '-m', 'owner', ...owner, ...zone(1)),
        rule(OUTPUT_DNS, ...udpPort('--sport', settings.dnsPort), '-m', 'owner', ...owner, ...zone(2)),
      ]),
      rule(OUTPUT_DNS, ...udpPort('--dport', DNS_PORT), ...zone(2)),
      rule(INBOUND, ...udpPort('--sport', DNS_PORT), ...zone(1)),
    ],
  };
}
