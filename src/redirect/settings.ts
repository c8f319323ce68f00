import { z } from 'zod';
import { parseCidr, type Cidr } from './cidr.ts';

export const Port = z.number().int().min(1).max(65535);
const Id = z.number().int().min(0).max(0xffffffff);
const CidrValue = z.custom<Cidr>((v) => typeof v === 'object' && v !== null && 'text' in v && 'family' in v);

/** `*` captures everything; a list captures only those; an empty list captures nothing. */
const PortSelection = z.union([z.literal('*'), z.array(Port)]);
const RangeSelection = z.union([z.literal('*'), z.array(CidrValue)]);

/**
 * Which istio-iptables the rules reproduce: `seed` is the seed's listing (Istio 1.3/1.4 proxies),
 * `istio-current` what current Istio's CNI plugin programs for a sidecar pod (HBONE tunnel port,
 * loopback rules per owner, status and telemetry ports, excludeInterfaces, INVALID drop).
 */
export const RulesProfile = z.enum(['seed', 'istio-current']);
export type RulesProfile = z.infer<typeof RulesProfile>;

/** Everything the rule builder needs to know about one pod; validated values only. */
export const RedirectSettings = z.object({
  profile: RulesProfile,
  /** REDIRECT (nat only), TPROXY (inbound through mangle), NONE (no rules at all). */
  interceptionMode: z.enum(['REDIRECT', 'TPROXY', 'NONE']),
  /** The proxy's own traffic leaves uncaptured: it runs as this uid/gid. */
  proxyUid: Id,
  proxyGid: Id,
  /** Envoy's inbound listener (ISTIO_IN_REDIRECT / TPROXY target). */
  inboundPort: Port,
  /** Envoy's outbound listener (ISTIO_REDIRECT target). */
  outboundPort: Port,
  /** Inbound ports sent to the proxy. */
  includeInboundPorts: PortSelection,
  /** Inbound ports left alone when all are captured, after the always-excluded ssh port 22. */
  excludeInboundPorts: z.array(Port),
  includeOutboundIpRanges: RangeSelection,
  excludeOutboundIpRanges: z.array(CidrValue),
  includeOutboundPorts: z.array(Port),
  excludeOutboundPorts: z.array(Port),
  /** Interfaces whose incoming traffic goes to the outbound listener (KubeVirt VMs). */
  rerouteInterfaces: z.array(z.string()),
  /** TCP and UDP port 53 go to the agent's DNS proxy on dnsPort. */
  dnsCapture: z.boolean(),
  dnsPort: Port,
  /** TPROXY: the mark of diverted packets and the routing table that delivers them locally. */
  tproxyMark: Id,
  tproxyRouteTable: z.number().int().min(1).max(0xfffffffe),
  /** Program ip6tables too (the pod has an IPv6 address). */
  ipv6: z.boolean(),
  /** istio-current: Envoy's HBONE tunnel port, never captured inbound nor on the proxy's loopback calls. */
  tunnelPort: Port,
  /** istio-current: interfaces whose traffic is never captured, either way. */
  excludeInterfaces: z.array(z.string()),
  /** istio-current: packets conntrack finds INVALID are dropped rather than answered with a reset. */
  dropInvalid: z.boolean(),
  /** istio-current: includeOutboundIPRanges names a loopback address, so the app's own calls over lo are captured too. */
  includesLoopback: z.boolean(),
});
export type RedirectSettings = z.infer<typeof RedirectSettings>;

/** Istio's defaults: the seed's rule set. */
export const DEFAULT_SETTINGS: RedirectSettings = {
  profile: 'seed',
  interceptionMode: 'REDIRECT',
  proxyUid: 1337,
  proxyGid: 1337,
  inboundPort: 15006,
  outboundPort: 15001,
  includeInboundPorts: '*',
  excludeInboundPorts: [15020],
  includeOutboundIpRanges: '*',
  excludeOutboundIpRanges: [],
  includeOutboundPorts: [],
  excludeOutboundPorts: [],
  rerouteInterfaces: [],
  dnsCapture: false,
  dnsPort: 15053,
  tproxyMark: 1337,
  tproxyRouteTable: 133,
  ipv6: false,
  tunnelPort: 15008,
  excludeInterfaces: [],
  dropInvalid: false,
  includesLoopback: false,
};

/** An excluded range: a CIDR, but not a /0, which would exclude every address (no capture at all). */
const ExcludedCidr = z.string().transform((text, ctx) => {
  const cidr = parseCidr(text);
  if (!cidr) ctx.addIssue({ code: 'custom', message: `${JSON.stringify(text)} is not a CIDR (address/length)` });
  else if (cidr.prefixLength === 0) ctx.addIssue({ code: 'custom', message: `${JSON.stringify(text)} excludes every address: capture would be off` });
  return cidr as Cidr;
});

/**
 * The conflist entry's `capture` object: node-wide defaults under the pod's annotations. Ports and ids
 * replace Istio's; the three exclude lists are always applied, in addition to what a pod asks for.
 */
export const CaptureDefaults = z
  .object({
    inbound_port: Port.default(DEFAULT_SETTINGS.inboundPort),
    outbound_port: Port.default(DEFAULT_SETTINGS.outboundPort),
    proxy_uid: Id.default(DEFAULT_SETTINGS.proxyUid),
    proxy_gid: Id.default(DEFAULT_SETTINGS.proxyGid),
    dns_port: Port.default(DEFAULT_SETTINGS.dnsPort),
    tunnel_port: Port.default(DEFAULT_SETTINGS.tunnelPort),
    exclude_inbound_ports: z.array(Port).default(DEFAULT_SETTINGS.excludeInboundPorts),
    exclude_outbound_ports: z.array(Port).default([]),
    exclude_outbound_ip_ranges: z.array(ExcludedCidr).default([]),
  })
  .strict()
  .prefault({});
export type CaptureDefaults = z.output<typeof CaptureDefaults>;
