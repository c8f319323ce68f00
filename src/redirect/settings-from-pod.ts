import { familyOfAddress, parseCidr, type Cidr } from './cidr.ts';
import { InvalidCaptureValue } from './errors.ts';
import { DEFAULT_SETTINGS, type CaptureDefaults, type RedirectSettings } from './settings.ts';

/** The pod annotations that shape traffic capture, as Istio names them. */
export const ANNOTATIONS = {
  includeInboundPorts: 'traffic.sidecar.istio.io/includeInboundPorts',
  excludeInboundPorts: 'traffic.sidecar.istio.io/excludeInboundPorts',
  includeOutboundIpRanges: 'traffic.sidecar.istio.io/includeOutboundIPRanges',
  excludeOutboundIpRanges: 'traffic.sidecar.istio.io/excludeOutboundIPRanges',
  includeOutboundPorts: 'traffic.sidecar.istio.io/includeOutboundPorts',
  excludeOutboundPorts: 'traffic.sidecar.istio.io/excludeOutboundPorts',
  kubevirtInterfaces: 'traffic.sidecar.istio.io/kubevirtInterfaces',
  rerouteVirtualInterfaces: 'istio.io/reroute-virtual-interfaces',
  interceptionMode: 'sidecar.istio.io/interceptionMode',
  excludeInterfaces: 'traffic.sidecar.istio.io/excludeInterfaces',
} as const;

export const DNS_CAPTURE_ENV = 'ISTIO_META_DNS_CAPTURE';

/** What of the istio-proxy container matters here. */
export interface ProxyContainer {
  image?: string | undefined;
  env?: { name: string; value?: string | undefined }[] | undefined;
  securityContext?: { runAsUser?: number | undefined; runAsGroup?: number | undefined } | undefined;
}

export interface PodCaptureInput {
  annotations: Readonly<Record<string, string>>;
  proxy: ProxyContainer;
  /** The pod's addresses from prevResult (`10.0.0.5/24`, `fd00::5/64`). */
  podIps: readonly string[];
  defaults: CaptureDefaults;
}

const DECIMAL = /^(0|[1-9][0-9]*)$/;
/** Narrower than the kernel (which forbids only `/`, `:`, whitespace and NUL): every name must be one
 * plain word in restore text, and `+` is iptables' wildcard. */
const INTERFACE_NAME = /^[A-Za-z0-9_.-]{1,15}$/;
/** Go's strconv.ParseBool, which Istio uses for its boolean settings. */
export const TRUE_WORDS = new Set(['1', 't', 'T', 'TRUE', 'true', 'True']);
const FALSE_WORDS = new Set(['0', 'f', 'F', 'FALSE', 'false', 'False']);

/** How much of a bad value an error quotes: an annotation may be 256 KiB. */
const QUOTED_CHARS = 200;

export function invalid(source: string, value: string, why: string): InvalidCaptureValue {
  const quoted = value.length > QUOTED_CHARS ? `${JSON.stringify(value.slice(0, QUOTED_CHARS))}… (${value.length} characters)` : JSON.stringify(value);
  return new InvalidCaptureValue(`invalid value for ${source}`, `${source}=${quoted}: ${why}`);
}

/**
 * The most items one list annotation may hold. Lists add rules, and two of them multiply (ranges ×
 * interfaces); the rule builder caps the total (MAX_RULES in ruleset.ts).
 */
export const MAX_ITEMS = 1024;

/** `text` (the value, or what a profile kept of it) split on commas, at most MAX_ITEMS items. */
export function splitItems(source: string, value: string, text: string): string[] {
  const list = text.split(',');
  if (list.length > MAX_ITEMS) throw invalid(source, value, `${list.length} items; at most ${MAX_ITEMS}`);
  return list;
}

/** Istio's list syntax: comma-separated, whitespace around the value and each item ignored; an empty
 * value is an empty list; an empty item (`80,,90`, `80,`) is an error. Duplicates are kept, as Istio does. */
function items(source: string, value: string): string[] {
  const trimmed = value.trim();
  if (trimmed === '') return [];
  const list = splitItems(source, value, trimmed);
  const trimmedItems = list.map((item) => item.trim());
  if (trimmedItems.includes('')) throw invalid(source, value, 'empty item in the comma-separated list');
  return trimmedItems;
}

function port(source: string, value: string, item: string): number {
  const n = DECIMAL.test(item) && item.length <= 5 ? Number(item) : NaN;
  if (!(n >= 1 && n <= 65535)) throw invalid(source, value, `${JSON.stringify(item)} is not a port (1-65535)`);
  return n;
}

function ports(source: string, value: string): number[] {
  return items(source, value).map((item) => port(source, value, item));
}

function portSelection(source: string, value: string): '*' | number[] {
  return value.trim() === '*' ? '*' : ports(source, value);
}

function cidrs(source: string, value: string): Cidr[] {
  return items(source, value).map((item) => {
    const cidr = parseCidr(item);
    if (!cidr) throw invalid(source, value, `${JSON.stringify(item)} is not a CIDR (address/length)`);
    return cidr;
  });
}

/** Excluding every address is no capture at all: refused, as `*` is (istio-iptables refuses it too). */
function excludedCidrs(source: string, value: string): Cidr[] {
  const list = cidrs(source, value);
  const everything = list.find((cidr) => cidr.prefixLength === 0);
  if (everything) throw invalid(source, value, `${everything.text} excludes every address: capture would be off, as with *`);
  return list;
}

function interfaces(source: string, value: string): string[] {
  return items(source, value).map((item) => {
    if (!INTERFACE_NAME.test(item) || item === '.' || item === '..') {
      throw invalid(source, value, `${JSON.stringify(item)} is not an interface name (1-15 of A-Z a-z 0-9 _ . -)`);
    }
    return item;
  });
}

export function interceptionMode(source: string, value: string): RedirectSettings['interceptionMode'] {
  if (value === 'REDIRECT' || value === 'TPROXY' || value === 'NONE') return value;
  throw invalid(source, value, 'must be REDIRECT, TPROXY or NONE');
}

function dnsCapture(proxy: ProxyContainer): boolean {
  const value = proxy.env?.find((e) => e.name === DNS_CAPTURE_ENV)?.value;
  if (value === undefined || FALSE_WORDS.has(value) || value === '') return false;
  if (TRUE_WORDS.has(value)) return true;
  throw invalid(`istio-proxy env ${DNS_CAPTURE_ENV}`, value, 'must be true or false');
}

/** The largest uid or gid: (uid_t)-1 means "none" to the kernel. */
const MAX_ID = 0xfffffffe;

/** A non-zero runAsUser/runAsGroup on istio-proxy is the proxy's identity; 0 or unset keeps the default. */
export function proxyId(field: 'runAsUser' | 'runAsGroup', id: number | undefined, fallback: number): number {
  if (id === undefined || id === 0) return fallback;
  if (!(Number.isSafeInteger(id) && id > 0 && id <= MAX_ID)) throw invalid(`istio-proxy securityContext.${field}`, String(id), `not a ${field === 'runAsUser' ? 'uid' : 'gid'} (0-${MAX_ID})`);
  return id;
}

/** The pod's ports, then the node's that the pod did not list. */
export function union(pods: readonly number[], nodes: readonly number[]): number[] {
  const listed = new Set(pods);
  return [...pods, ...nodes.filter((p) => !listed.has(p))];
}

/**
 * A pod's capture settings, from its annotations, its istio-proxy container and its addresses, over
 * the plugin's defaults. Every value is parsed into a port, a CIDR, a checked name or a fixed word;
 * the first one that is not fails with the annotation and the value named.
 */
export function settingsFromPod({ annotations, proxy, podIps, defaults }: PodCaptureInput): RedirectSettings {
  const read = <T>(key: keyof typeof ANNOTATIONS, parse: (source: string, value: string) => T, absent: T): T => {
    const value = annotations[ANNOTATIONS[key]];
    return value === undefined ? absent : parse(ANNOTATIONS[key], value);
  };
  const kubevirt = read('kubevirtInterfaces', interfaces, []);
  return {
    ...DEFAULT_SETTINGS,
    interceptionMode: read('interceptionMode', interceptionMode, 'REDIRECT'),
    proxyUid: proxyId('runAsUser', proxy.securityContext?.runAsUser, defaults.proxy_uid),
    proxyGid: proxyId('runAsGroup', proxy.securityContext?.runAsGroup, defaults.proxy_gid),
    inboundPort: defaults.inbound_port,
    outboundPort: defaults.outbound_port,
    includeInboundPorts: read('includeInboundPorts', portSelection, '*'),
    // The status port (a node default) stays excluded whatever the pod says.
    excludeInboundPorts: union(read('excludeInboundPorts', ports, []), defaults.exclude_inbound_ports),
    includeOutboundIpRanges: read('includeOutboundIpRanges', (s, v) => (v.trim() === '*' ? '*' : cidrs(s, v)), '*'),
    // `*` is not a CIDR here, and a /0 is refused: istio-iptables refuses to exclude everything too.
    excludeOutboundIpRanges: [...read('excludeOutboundIpRanges', excludedCidrs, []), ...defaults.exclude_outbound_ip_ranges],
    includeOutboundPorts: read('includeOutboundPorts', ports, []),
    excludeOutboundPorts: union(read('excludeOutboundPorts', ports, []), defaults.exclude_outbound_ports),
    // The newer annotation wins over the KubeVirt one, as in Istio.
    rerouteInterfaces: read('rerouteVirtualInterfaces', interfaces, kubevirt),
    dnsCapture: dnsCapture(proxy),
    dnsPort: defaults.dns_port,
    ipv6: podIps.some((ip) => familyOfAddress(ip) === 6),
  };
}
