import { familyOfAddress, parseCidr, type Cidr } from './cidr.ts';
import { ANNOTATIONS, DNS_CAPTURE_ENV, interceptionMode, invalid, proxyId, splitItems, TRUE_WORDS, union, type PodCaptureInput, type ProxyContainer } from './settings-from-pod.ts';
import { DEFAULT_SETTINGS, type RedirectSettings } from './settings.ts';

/**
 * The `istio-current` profile's reading of a pod: the values current Istio's CNI plugin takes from the
 * same annotations and istio-proxy environment, and its defaults. Values Istio accepts only because
 * iptables happens to read them (a port list that is all blanks, `*` among ports) are refused, as
 * Istio's ADD fails on them too; values Istio accepts that mean something else to iptables (a port
 * with a leading zero is octal there) or nothing (port 0) are refused on purpose (README).
 */

/** The status, health and Prometheus ports: Istio's CNI plugin always leaves them alone inbound. */
const PROXY_INBOUND_PORTS = ['15020', '15021', '15090'];
/** Istio's default for excludeOutboundPorts: the status port. */
const STATUS_PORT = 15020;
const DUAL_STACK_ENV = 'ISTIO_DUAL_STACK';
const INVALID_DROP_ENV = 'INVALID_DROP';
/** The istio-proxy variables this profile reads besides the seed's. */
export const ISTIO_CURRENT_ENV = [DUAL_STACK_ENV, INVALID_DROP_ENV] as const;

/** One list item: blanks around it are fine (iptables splits words on them), anything else is not. */
const PORT_ITEM = /^[ \t]*(0|[1-9][0-9]{0,4})[ \t]*$/;
const INTERFACE_ITEM = /^[ \t]*([A-Za-z][A-Za-z0-9_.-]{0,14})[ \t]*$/;
/** Go's strings.TrimSpace, which Istio applies to the whole excludeInboundPorts value. */
const GO_SPACE = /^[\t\n\v\f\r \u0085\u00a0]+|[\t\n\v\f\r \u0085\u00a0]+$/g;

function portItem(source: string, value: string, item: string): number {
  const digits = PORT_ITEM.exec(item)?.[1];
  const n = digits === undefined ? NaN : Number(digits);
  if (!(n >= 1 && n <= 65535)) throw invalid(source, value, `${JSON.stringify(item)} is not a port (1-65535, no leading zero)`);
  return n;
}

/** Comma-separated ports; an empty value is an empty list. */
function portList(source: string, value: string): number[] {
  return value === '' ? [] : splitItems(source, value, value).map((item) => portItem(source, value, item));
}

/**
 * excludeInboundPorts: Istio trims the value, appends the proxy's own ports and drops repeated items,
 * comparing them as written (`80,80` is one rule, `80, 80` two). They are applied only when every
 * inbound port is captured: `*`, which Istio lets through and iptables then refuses, is refused there
 * and nowhere else.
 */
function inboundExclusions(source: string, value: string | undefined, nodePorts: readonly number[], applied: boolean): number[] {
  const trimmed = (value ?? '').replace(GO_SPACE, '');
  if (value === '*' && applied) throw invalid(source, value, '"*" is no port: list the ports to leave alone');
  const written = trimmed === '' || value === '*' ? [] : splitItems(source, value ?? '', trimmed);
  const distinct = [...new Set([...written, ...PROXY_INBOUND_PORTS])];
  return union(distinct.map((item) => portItem(source, value ?? '', item)), nodePorts);
}

function cidrList(source: string, value: string): Cidr[] {
  if (value === '') return [];
  return splitItems(source, value, value).map((item) => {
    const cidr = parseCidr(item);
    if (!cidr) throw invalid(source, value, `${JSON.stringify(item)} is not a CIDR (address/length, nothing around it)`);
    return cidr;
  });
}

function interfaceList(source: string, value: string): string[] {
  if (value === '') return [];
  return splitItems(source, value, value).map((item) => {
    const name = INTERFACE_ITEM.exec(item)?.[1];
    if (name === undefined) throw invalid(source, value, `${JSON.stringify(item)} is not an interface name (a letter, then up to 14 of A-Z a-z 0-9 _ . -)`);
    return name;
  });
}

/** An istio-proxy environment variable as Istio reads it: the last entry of that name, Go's ParseBool, anything else false. */
function proxyFlag(proxy: ProxyContainer, name: string): boolean {
  const entries = (proxy.env ?? []).filter((e) => e.name === name);
  return TRUE_WORDS.has(entries.at(-1)?.value ?? '');
}

/**
 * Istio takes the pod's family from its first address that is not loopback or link-local, IPv4 ones
 * listed first: a dual-stack pod gets IPv6 rules only with ISTIO_DUAL_STACK, an IPv6-only pod always.
 */
function programIpv6(podIps: readonly string[], dualStack: boolean): boolean {
  const families = podIps.map(familyOfAddress);
  return families.includes(6) && (dualStack || !families.includes(4));
}

export function istioCurrentSettings({ annotations, proxy, podIps, defaults }: PodCaptureInput): RedirectSettings {
  const read = <T>(key: keyof typeof ANNOTATIONS, parse: (source: string, value: string) => T, absent: T): T => {
    const value = annotations[ANNOTATIONS[key]];
    return value === undefined ? absent : parse(ANNOTATIONS[key], value);
  };
  const includeRanges = read('includeOutboundIpRanges', (s, v) => (v === '*' ? '*' : cidrList(s, v)), '*');
  const includeInbound = read('includeInboundPorts', (s, v) => (v === '*' ? '*' : portList(s, v)), '*');
  // The newer annotation wins; the KubeVirt one is not even read when it is there.
  const reroute = annotations[ANNOTATIONS.rerouteVirtualInterfaces] !== undefined ? 'rerouteVirtualInterfaces' : 'kubevirtInterfaces';
  return {
    ...DEFAULT_SETTINGS,
    profile: 'istio-current',
    interceptionMode: read('interceptionMode', interceptionMode, 'REDIRECT'),
    proxyUid: proxyId('runAsUser', proxy.securityContext?.runAsUser, defaults.proxy_uid),
    proxyGid: proxyId('runAsGroup', proxy.securityContext?.runAsGroup, defaults.proxy_gid),
    inboundPort: defaults.inbound_port,
    outboundPort: defaults.outbound_port,
    tunnelPort: defaults.tunnel_port,
    includeInboundPorts: includeInbound,
    excludeInboundPorts: inboundExclusions(ANNOTATIONS.excludeInboundPorts, annotations[ANNOTATIONS.excludeInboundPorts], defaults.exclude_inbound_ports, includeInbound === '*'),
    includeOutboundIpRanges: includeRanges,
    excludeOutboundIpRanges: [...read('excludeOutboundIpRanges', cidrList, []), ...defaults.exclude_outbound_ip_ranges],
    includesLoopback: includeRanges !== '*' && includeRanges.some((cidr) => cidr.loopback),
    includeOutboundPorts: read('includeOutboundPorts', portList, []),
    excludeOutboundPorts: union(read('excludeOutboundPorts', portList, [STATUS_PORT]), defaults.exclude_outbound_ports),
    rerouteInterfaces: read(reroute, interfaceList, []),
    excludeInterfaces: read('excludeInterfaces', interfaceList, []),
    dnsCapture: proxyFlag(proxy, DNS_CAPTURE_ENV),
    dropInvalid: proxyFlag(proxy, INVALID_DROP_ENV),
    dnsPort: defaults.dns_port,
    ipv6: programIpv6(podIps, proxyFlag(proxy, DUAL_STACK_ENV)),
  };
}
