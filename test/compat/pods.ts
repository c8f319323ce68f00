/**
 * Generated injected pods for the differential test: every capture annotation Istio reads, absent, as
 * the injector writes it, or generated (lists with duplicates, blanks, `*`, empty, IPv4 and IPv6 CIDRs,
 * loopback, values both sides should refuse), the istio-proxy settings (uid/gid, DNS capture, INVALID
 * drop, dual stack) and the pod's addresses. Values that the two sides are known to read differently
 * carry a tag; the listed differences (listed.ts) name the tags they explain.
 */
import fc from 'fast-check';
import type { NodeCapture } from './differential.ts';

export type Tag =
  /** A port written as 0: Istio passes it to iptables (a rule that matches nothing), we refuse it. */
  | 'port-zero'
  /** A port with a leading zero: Istio accepts it and iptables reads it as octal (080 is 64), we refuse it. */
  | 'port-leading-zero'
  /** A port after a vertical tab, form feed or carriage return: Istio passes it to iptables, which skips them; we refuse it. */
  | 'exotic-whitespace'
  /** interceptionMode NONE: Istio's plugin refuses it, we program nothing. */
  | 'mode-none'
  /** Blanks around a CIDR or a `*`: the seed profile trims them, Istio refuses. */
  | 'blank-around-cidr'
  | 'blank-around-wildcard'
  /** A port list of blanks only: the seed profile reads an empty list, Istio passes the blanks to iptables, which fails. */
  | 'blank-port-list'
  /** `*` in excludeInboundPorts: Istio accepts it unless it is applied (then iptables fails); the seed profile refuses it. */
  | 'exclude-inbound-wildcard'
  /** An interface name not starting with a letter: the seed profile accepts it, Istio refuses. */
  | 'interface-not-letter-first'
  /** An invalid kubevirtInterfaces beside reroute-virtual-interfaces: Istio never reads it, the seed profile refuses it. */
  | 'kubevirt-shadowed-invalid'
  /** An invalid excludeInterfaces: the seed profile ignores the annotation, Istio refuses it. */
  | 'exclude-interfaces-invalid'
  /** ISTIO_META_DNS_CAPTURE that is no Go boolean: Istio reads false, the seed profile refuses it. */
  | 'dns-capture-not-bool'
  /** A /0 in excludeOutboundIPRanges (every address): Istio excludes everything, the seed profile refuses it. */
  | 'exclude-every-address';

export type Addresses = 'v4' | 'v6' | 'dual';

export interface GeneratedPod {
  annotations: Record<string, string>;
  /** istio-proxy's env entries that matter here (more entries of the same name: the last one counts for Istio). */
  env: { name: string; value?: string }[];
  runAsUser?: number;
  runAsGroup?: number;
  addresses: Addresses;
  tags: Tag[];
}

interface Value {
  text: string;
  tags: Tag[];
}
const plain = (text: string): Value => ({ text, tags: [] });
const tagged = (tag: Tag) => (text: string): Value => ({ text, tags: [tag] });
const joined = (values: Value[]): Value => ({ text: values.map((v) => v.text).join(','), tags: values.flatMap((v) => v.tags) });

const BLANKS = fc.constantFrom(' ', '  ', '\t');
const wellKnownPort = fc.constantFrom(22, 53, 80, 443, 8080, 9080, 15001, 15006, 15008, 15020, 15021, 15053, 15090, 1, 65535);
const portNumber = fc.oneof({ weight: 3, arbitrary: wellKnownPort }, { weight: 2, arbitrary: fc.integer({ min: 1, max: 65535 }) });
const octet = fc.integer({ min: 0, max: 255 });
const v4Cidr = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom('10.0.0.0/8', '192.168.0.0/16', '169.254.169.254/32', '172.16.0.0/12', '0.0.0.0/0', '10.1.2.3/8', '100.64.0.0/10') },
  { weight: 3, arbitrary: fc.tuple(octet, octet, octet, octet, fc.integer({ min: 0, max: 32 })).map(([a, b, c, d, l]) => `${a}.${b}.${c}.${d}/${l}`) },
  { weight: 1, arbitrary: fc.constantFrom('127.0.0.1/32', '127.0.0.0/8', '127.1.2.3/16') },
);
const hextet = fc.integer({ min: 0, max: 0xffff }).map((n) => n.toString(16));
const v6Cidr = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom('fd00::/8', '2001:db8::/32', '::/0', '::ffff:10.0.0.0/104', 'fe80::1/64', '2001:DB8:0:0:1::1/64', '1:0:0:2:0:0:0:3/128') },
  { weight: 2, arbitrary: fc.tuple(fc.array(hextet, { minLength: 8, maxLength: 8 }), fc.integer({ min: 0, max: 128 })).map(([g, l]) => `${g.join(':')}/${l}`) },
  { weight: 1, arbitrary: fc.constantFrom('::1/128', '::ffff:127.0.0.1/128') },
);

/**
 * The annotations' and variables' values. `odd` is the weight of values one side or both refuse or
 * read differently: 0 for a pod the injector and a careful user would write.
 */
function values(odd: number) {
  const portItem: fc.Arbitrary<Value> = fc.oneof(
    { weight: 12, arbitrary: portNumber.map((p) => plain(String(p))) },
    { weight: 2, arbitrary: fc.tuple(BLANKS, portNumber, fc.constantFrom('', ' ', '\t')).map(([a, p, b]) => plain(`${a}${p}${b}`)) },
    { weight: odd, arbitrary: fc.constant(tagged('port-zero')('0')) },
    { weight: odd, arbitrary: fc.integer({ min: 1, max: 999 }).map((p) => tagged('port-leading-zero')(`0${p}`)) },
    { weight: odd, arbitrary: fc.tuple(fc.constantFrom('\v', '\f', '\r'), portNumber).map(([c, p]) => tagged('exotic-whitespace')(`${c}${p}`)) },
    // Refused by both.
    { weight: odd, arbitrary: fc.constantFrom('65536', '-1', '80a', 'http', '', '1-80', '+80', '0x50', '8 0').map(plain) },
  );
  const portItems = fc.array(portItem, { minLength: 1, maxLength: 5 }).map(joined);
  /** A list that repeats one port, the way a user pastes the defaults again. */
  const repeatedPorts = fc.tuple(portNumber, fc.constantFrom(',', ', ', ' ,')).map(([p, sep]) => plain(`${p}${sep}${p}`));
  const portList: fc.Arbitrary<Value> = fc.oneof(
    { weight: 8, arbitrary: portItems },
    { weight: 2, arbitrary: repeatedPorts },
    { weight: 1, arbitrary: fc.constant(plain('')) },
    { weight: odd, arbitrary: BLANKS.map(tagged('blank-port-list')) },
  );
  const cidrItem: fc.Arbitrary<Value> = fc.oneof(
    { weight: 6, arbitrary: v4Cidr.map(plain) },
    { weight: 4, arbitrary: v6Cidr.map(plain) },
    { weight: odd, arbitrary: fc.tuple(BLANKS, v4Cidr).map(([b, c]) => tagged('blank-around-cidr')(`${b}${c}`)) },
    // Refused by both.
    { weight: odd, arbitrary: fc.constantFrom('10.0.0.0', '10.0.0.0/33', '010.0.0.0/8', 'fd00::/129', 'fd00::1%eth0/64', 'foo', '', '10.0.0.0/08', '*').map(plain) },
  );
  const cidrList = fc.oneof(
    { weight: 8, arbitrary: fc.array(cidrItem, { minLength: 1, maxLength: 4 }).map(joined) },
    { weight: 1, arbitrary: fc.constant(plain('')) },
  );
  const interfaceName = fc.oneof(
    { weight: 4, arbitrary: fc.constantFrom('eth1', 'net1', 'vnet0', 'tap0.100', 'br-int', 'veth_a1', 'k').map(plain) },
    { weight: 2, arbitrary: fc.stringMatching(/^[a-z][a-z0-9_.-]{0,14}$/).map(plain) },
    { weight: 1, arbitrary: fc.tuple(BLANKS, fc.constantFrom('eth1', 'net2')).map(([b, n]) => plain(`${b}${n}`)) },
    { weight: odd, arbitrary: fc.constantFrom('0eth', '_eth1', '9net').map(tagged('interface-not-letter-first')) },
    // Refused by both.
    { weight: odd, arbitrary: fc.constantFrom('eth+', 'abcdefghijklmnop', 'et h', '', 'eth/1').map(plain) },
  );
  const boolWord = fc.oneof(
    { weight: 6, arbitrary: fc.constantFrom('true', 'false', '1', '0', 't', 'F', 'TRUE', 'False', '').map(plain) },
    { weight: odd, arbitrary: fc.constantFrom('yes', 'on', 'tRuE', ' true').map(tagged('dns-capture-not-bool')) },
  );
  return {
    interceptionMode: fc.oneof(
      { weight: 6, arbitrary: fc.constantFrom('REDIRECT', 'TPROXY').map(plain) },
      { weight: odd, arbitrary: fc.constant(tagged('mode-none')('NONE')) },
      { weight: odd, arbitrary: fc.constantFrom('redirect', '', 'TPROXY ').map(plain) },
    ),
    includeInboundPorts: fc.oneof(
      { weight: 6, arbitrary: portList },
      { weight: 4, arbitrary: fc.constant(plain('*')) },
      { weight: odd, arbitrary: fc.constantFrom(' *', '* ', ' * ').map(tagged('blank-around-wildcard')) },
      { weight: odd, arbitrary: fc.constantFrom('*,80', '80,*').map(plain) },
    ),
    excludeInboundPorts: fc.oneof(
      { weight: 8, arbitrary: portList },
      { weight: 2, arbitrary: fc.constantFrom('15020', '15020,15021,15090', '15090,15021,15020', '15021, 15020').map(plain) },
      { weight: odd, arbitrary: fc.constant(tagged('exclude-inbound-wildcard')('*')) },
    ),
    /** `*` among outbound ports: Istio passes it to iptables, which refuses it; so do we. */
    outboundPorts: fc.oneof({ weight: 9, arbitrary: portList }, { weight: odd, arbitrary: fc.constant(plain('*')) }),
    includeRanges: fc.oneof(
      { weight: 5, arbitrary: cidrList },
      { weight: 4, arbitrary: fc.constant(plain('*')) },
      { weight: odd, arbitrary: fc.constantFrom(' *', '* ').map(tagged('blank-around-wildcard')) },
    ),
    excludeRanges: cidrList,
    interfaceList: fc.oneof(
      { weight: 6, arbitrary: fc.array(interfaceName, { minLength: 1, maxLength: 3 }).map(joined) },
      { weight: 1, arbitrary: fc.constant(plain('')) },
    ),
    dnsCapture: boolWord,
    flag: boolWord.map((v) => plain(v.text)),
  };
}

const A = {
  interceptionMode: 'sidecar.istio.io/interceptionMode',
  includeInboundPorts: 'traffic.sidecar.istio.io/includeInboundPorts',
  excludeInboundPorts: 'traffic.sidecar.istio.io/excludeInboundPorts',
  includeOutboundIPRanges: 'traffic.sidecar.istio.io/includeOutboundIPRanges',
  excludeOutboundIPRanges: 'traffic.sidecar.istio.io/excludeOutboundIPRanges',
  includeOutboundPorts: 'traffic.sidecar.istio.io/includeOutboundPorts',
  excludeOutboundPorts: 'traffic.sidecar.istio.io/excludeOutboundPorts',
  excludeInterfaces: 'traffic.sidecar.istio.io/excludeInterfaces',
  kubevirtInterfaces: 'traffic.sidecar.istio.io/kubevirtInterfaces',
  rerouteVirtualInterfaces: 'istio.io/reroute-virtual-interfaces',
} as const;

/** What the sidecar injector itself writes in CNI mode, with its default values. */
const INJECTOR_WRITES: Partial<Record<keyof typeof A, string>> = {
  interceptionMode: 'REDIRECT',
  includeInboundPorts: '*',
  excludeInboundPorts: '15020',
  includeOutboundIPRanges: '*',
};

/** An annotation: absent, the injector's value, or a generated one (often absent: most pods set few). */
function annotation(key: keyof typeof A, generated: fc.Arbitrary<Value>): fc.Arbitrary<[string, Value] | undefined> {
  const injector = INJECTOR_WRITES[key];
  return fc.oneof(
    { weight: 4, arbitrary: fc.constant(undefined) },
    { weight: injector === undefined ? 0 : 3, arbitrary: fc.constant([A[key], plain(injector ?? '')] as [string, Value]) },
    { weight: 3, arbitrary: generated.map((v) => [A[key], v] as [string, Value]) },
  );
}

type EnvEntry = { name: string; value: string; tags: Tag[] };
const envEntry = (name: string, value: fc.Arbitrary<Value>): fc.Arbitrary<EnvEntry[]> =>
  fc.oneof(
    { weight: 3, arbitrary: fc.constant<EnvEntry[]>([]) },
    { weight: 3, arbitrary: value.map((v) => [{ name, value: v.text, tags: v.tags }]) },
    // Listed twice: the last one counts for Istio.
    { weight: 1, arbitrary: fc.tuple(value, value).map(([a, b]) => [{ name, value: a.text, tags: a.tags }, { name, value: b.text, tags: b.tags }]) },
  );

const proxyId = fc.option(fc.oneof(fc.constant(0), fc.constant(1337), fc.integer({ min: 1000, max: 65_000 })), { nil: undefined });

function pods(odd: number): fc.Arbitrary<GeneratedPod> {
  const v = values(odd);
  return fc
    .record({
      annotations: fc.tuple(
        annotation('interceptionMode', v.interceptionMode),
        annotation('includeInboundPorts', v.includeInboundPorts),
        annotation('excludeInboundPorts', v.excludeInboundPorts),
        annotation('includeOutboundIPRanges', v.includeRanges),
        annotation('excludeOutboundIPRanges', v.excludeRanges),
        annotation('includeOutboundPorts', v.outboundPorts),
        annotation('excludeOutboundPorts', v.outboundPorts),
        annotation('excludeInterfaces', v.interfaceList),
        annotation('kubevirtInterfaces', v.interfaceList),
        annotation('rerouteVirtualInterfaces', v.interfaceList),
      ),
      dns: envEntry('ISTIO_META_DNS_CAPTURE', v.dnsCapture),
      invalidDrop: envEntry('INVALID_DROP', v.flag),
      dualStack: envEntry('ISTIO_DUAL_STACK', v.flag),
      runAsUser: proxyId,
      runAsGroup: proxyId,
      addresses: fc.constantFrom<Addresses>('v4', 'v4', 'v6', 'dual', 'dual'),
    })
    .map((r) => {
      const present = r.annotations.filter((a): a is [string, Value] => a !== undefined);
      const annotations = Object.fromEntries(present.map(([k, value]) => [k, value.text]));
      const env = [...r.dns, ...r.invalidDrop, ...r.dualStack];
      const tags = [...present.flatMap(([, value]) => value.tags), ...env.flatMap((e) => e.tags)];
      if (present.some(([k, value]) => k === A.excludeInterfaces && refusedByIstio(value.text))) tags.push('exclude-interfaces-invalid');
      if (annotations[A.rerouteVirtualInterfaces] !== undefined && annotations[A.kubevirtInterfaces] !== undefined) tags.push('kubevirt-shadowed-invalid');
      if ((annotations[A.excludeOutboundIPRanges] ?? '').split(',').some((item) => item.trim().endsWith('/0'))) tags.push('exclude-every-address');
      const pod: GeneratedPod = { annotations, env: env.map(({ name, value }) => ({ name, value })), addresses: r.addresses, tags: [...new Set(tags)] };
      if (r.runAsUser !== undefined) pod.runAsUser = r.runAsUser;
      if (r.runAsGroup !== undefined) pod.runAsGroup = r.runAsGroup;
      return pod;
    });
}

/** Most pods are ones a user would write; a third carry values that are refused or read differently. */
export const generatedPod: fc.Arbitrary<GeneratedPod> = fc.oneof({ weight: 2, arbitrary: pods(0) }, { weight: 1, arbitrary: pods(1) });

/** Istio's check of an interface list (its validator's rules, restated): where the seed profile, which ignores excludeInterfaces, differs. */
function refusedByIstio(list: string): boolean {
  if (list === '') return false;
  return list.split(',').some((item) => !/^[A-Za-z][A-Za-z0-9_.-]{0,14}$/.test(item.trim()));
}

/** Node-wide `capture` settings of our conflist entry: Istio's defaults or others. */
export const nodeCapture: fc.Arbitrary<NodeCapture> = fc.record({
  inbound_port: fc.oneof(fc.constant(15006), portNumber),
  outbound_port: fc.oneof(fc.constant(15001), portNumber),
  tunnel_port: fc.oneof(fc.constant(15008), portNumber),
  proxy_uid: fc.oneof(fc.constant(1337), fc.integer({ min: 1, max: 65_000 })),
  proxy_gid: fc.oneof(fc.constant(1337), fc.integer({ min: 1, max: 65_000 })),
  exclude_inbound_ports: fc.oneof(fc.constant<number[]>([15020]), fc.constant<number[]>([]), fc.array(portNumber, { maxLength: 3 })),
  exclude_outbound_ports: fc.array(portNumber, { maxLength: 2 }),
  exclude_outbound_ip_ranges: fc.array(fc.oneof(v4Cidr, v6Cidr), { maxLength: 2 }),
});
