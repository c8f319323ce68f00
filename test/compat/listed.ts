/**
 * Every difference between our ADD and Istio's that the differential test accepts, each with its
 * reason; docs/compatibility.md's tables are these (scripts/compat.ts --update-docs writes them).
 */
import type { Difference, Profile } from './differential.ts';
import type { NftDifference } from './nft-state.ts';
import type { GeneratedPod, Tag } from './pods.ts';

export interface Refusal {
  /** Who refuses the pod that the other one accepts. */
  refusedBy: 'ours' | 'istio';
  why: string;
}

const PORT_ZERO: Refusal = {
  refusedBy: 'ours',
  why: 'A port written `0`: Istio passes it to iptables, which takes it (a rule for port 0, which no connection uses). A 0 in a port list is a typo; we refuse the pod (error 106) rather than program a rule that does nothing.',
};
const LEADING_ZERO: Refusal = {
  refusedBy: 'ours',
  why: 'A port with a leading zero (`080`): Istio checks it as decimal 80 but hands the text to iptables, which reads it as octal (64) or refuses it (`089`). We refuse it rather than capture or exclude a port the pod did not name.',
};
const MODE_NONE: Refusal = {
  refusedBy: 'istio',
  why: '`sidecar.istio.io/interceptionMode: NONE`: Istio\'s CNI plugin accepts only REDIRECT and TPROXY and fails the ADD, although NONE is a valid mode (the injector takes it and adds no capture). We program nothing, as NONE asks.',
};

export const REFUSALS: Record<Profile, Partial<Record<Tag, Refusal>>> = {
  'istio-current': {
    'port-zero': PORT_ZERO,
    'port-leading-zero': LEADING_ZERO,
    'mode-none': MODE_NONE,
    'exotic-whitespace': {
      refusedBy: 'ours',
      why: 'A list item with a vertical tab, form feed or carriage return before it (`\\v80`): Istio trims them when it checks the value but hands the item to iptables as written, which skips them before a port (and keeps them in an interface name). We take blanks and tabs only, as iptables splits words on them.',
    },
  },
  seed: {
    'port-zero': PORT_ZERO,
    'port-leading-zero': LEADING_ZERO,
    'mode-none': MODE_NONE,
    'blank-around-cidr': { refusedBy: 'istio', why: 'Blanks around a CIDR: the seed profile trims them; Istio parses the item as written and refuses it.' },
    'blank-around-wildcard': { refusedBy: 'istio', why: 'Blanks around `*` (includeInboundPorts, includeOutboundIPRanges): the seed profile trims them; Istio takes only `*` itself as the wildcard and refuses the rest.' },
    'blank-port-list': { refusedBy: 'istio', why: 'A port list of blanks only: the seed profile reads it as empty; Istio passes the blanks to iptables, which fails.' },
    'exclude-inbound-wildcard': { refusedBy: 'ours', why: '`*` in excludeInboundPorts: the seed profile refuses it; Istio accepts it when the exclusions are not applied (an inbound port list) and fails in iptables when they are.' },
    'interface-not-letter-first': { refusedBy: 'istio', why: 'An interface name starting with a digit, `_` or `.`: valid for the kernel and for the seed profile; Istio wants a letter first.' },
    'kubevirt-shadowed-invalid': { refusedBy: 'ours', why: 'An invalid kubevirtInterfaces beside reroute-virtual-interfaces: the seed profile checks both; Istio never reads the older annotation when the newer one is there.' },
    'exclude-interfaces-invalid': { refusedBy: 'istio', why: 'An invalid excludeInterfaces: the seed profile does not read the annotation (the seed has no such rules); Istio refuses it.' },
    'dns-capture-not-bool': { refusedBy: 'ours', why: 'ISTIO_META_DNS_CAPTURE that is no Go boolean (`yes`): the seed profile refuses it; Istio logs a warning and reads false.' },
    'exclude-every-address': { refusedBy: 'ours', why: 'A `/0` in excludeOutboundIPRanges (`0.0.0.0/0`, `::/0`): every address leaves uncaptured. The seed profile refuses it, as it refuses `*` (which istio-iptables refuses too); Istio programs a RETURN for every address, which turns outbound capture off.' },
  },
};

export interface RuleDifference {
  id: string;
  /** Matches the difference line (`<where> <kind>: <line>`). */
  pattern: RegExp;
  /** The pods it can come from; any pod when absent. */
  when?: (pod: GeneratedPod) => boolean;
  why: string;
}

const annotated = (...keys: string[]) => (pod: GeneratedPod) => keys.some((k) => pod.annotations[k] !== undefined);
const envNamed = (name: string, atLeast = 1) => (pod: GeneratedPod) => pod.env.filter((e) => e.name === name).length >= atLeast;
const TPROXY = (pod: GeneratedPod) => pod.annotations['sidecar.istio.io/interceptionMode'] === 'TPROXY';
const INTERFACES = ['traffic.sidecar.istio.io/excludeInterfaces', 'traffic.sidecar.istio.io/kubevirtInterfaces', 'istio.io/reroute-virtual-interfaces'];

const ANY = '(only-ours|only-istio)';
/** Most specific first: the first that matches names the difference. */
export const SEED_RULE_DIFFERENCES: RuleDifference[] = [
  { id: 'ssh-port', pattern: /only-ours: -A ISTIO_INBOUND -p tcp -m tcp --dport 22 -j RETURN$/, why: 'The seed\'s listing leaves ssh (22) alone inbound; current Istio no longer does.' },
  { id: 'tunnel-port', pattern: /only-istio: -A ISTIO_INBOUND -p tcp -m tcp --dport 15008 -j RETURN$/, why: 'Istio leaves the HBONE tunnel port 15008 alone inbound (the proxy listens there itself); the seed predates it.' },
  { id: 'proxy-ports-inbound', pattern: /only-istio: -A ISTIO_INBOUND -p tcp -m tcp --dport (15020|15021|15090) -j RETURN$/, why: 'Istio\'s plugin always leaves the status (15020), health (15021) and Prometheus (15090) ports alone inbound; the seed\'s listing only 15020.' },
  { id: 'repeated-inbound-exclusions', pattern: new RegExp(`${ANY}: -A ISTIO_INBOUND -p tcp -m tcp --dport \\d+ -j RETURN$`), when: annotated('traffic.sidecar.istio.io/excludeInboundPorts'), why: 'A port excluded twice (`80,80`): Istio drops the repeat when both are written alike, the seed profile keeps every item.' },
  { id: 'inbound-chain-always', pattern: /nat only-istio: :ISTIO_INBOUND -$/, why: 'Istio always creates nat ISTIO_INBOUND (it holds the tunnel-port rule), even when no inbound traffic is captured there (TPROXY, or includeInboundPorts empty).' },
  { id: 'output-jump', pattern: new RegExp(`nat ${ANY}: -A OUTPUT (-p tcp )?-j ISTIO_OUTPUT$`), why: 'Istio sends every protocol to ISTIO_OUTPUT (UDP must reach the port exclusions and DNS capture); the seed\'s listing only TCP.' },
  { id: 'status-port-outbound', pattern: /only-istio: -A ISTIO_OUTPUT -p (tcp -m tcp|udp -m udp) --dport 15020 -j RETURN$/, why: 'Without excludeOutboundPorts, Istio\'s plugin leaves the status port 15020 alone outbound.' },
  { id: 'udp-outbound-exclusions', pattern: /only-istio: -A ISTIO_OUTPUT -p udp -m udp --dport \d+ -j RETURN$/, why: 'Istio leaves each excluded outbound port alone for UDP too; the seed profile only with DNS capture (UDP reaches ISTIO_OUTPUT only then).' },
  { id: 'loopback-to-inbound', pattern: new RegExp(`${ANY}: -A ISTIO_OUTPUT ! -d (127\\.0\\.0\\.1/32|::1/128) -o lo .*-j ISTIO_IN_REDIRECT$`), why: 'Connections over lo to a pod address: the seed sends all of them to the inbound listener; Istio only the proxy\'s own (its uid or gid: app -> VIP -> proxy -> app), and not to the tunnel port, nor to 53 with DNS capture.' },
  { id: 'loopback-return', pattern: /only-istio: -A ISTIO_OUTPUT -o lo (-p tcp -m tcp ! --dport 53 )?-m owner ! --[ug]id-owner \d+ -j RETURN$/, why: 'Istio lets everyone else\'s traffic over lo go to its destination (the app calling its own pod IP), unless includeOutboundIPRanges names a loopback address.' },
  { id: 'interface-returns', pattern: new RegExp(`(nat|mangle) only-istio: -A (PREROUTING -i|OUTPUT -o) \\S+ -j RETURN$`), when: annotated(...INTERFACES), why: 'excludeInterfaces (which the seed profile does not read) and VM interfaces: Istio returns early for them in PREROUTING/OUTPUT (mangle too under TPROXY).' },
  { id: 'vm-interface-return', pattern: /only-ours: -A ISTIO_INBOUND -i \S+ -j RETURN$/, when: annotated(...INTERFACES.slice(1)), why: 'VM interfaces (reroute-virtual-interfaces): the seed profile returns from ISTIO_INBOUND, a chain of ours; Istio from PREROUTING.' },
  { id: 'dns-capture-read', pattern: new RegExp(`(raw ${ANY}: .*|nat ${ANY}: (:ISTIO_OUTPUT_DNS -|-A ISTIO_OUTPUT_DNS .*|-A ISTIO_OUTPUT -j ISTIO_OUTPUT_DNS))$`), when: envNamed('ISTIO_META_DNS_CAPTURE', 2), why: 'ISTIO_META_DNS_CAPTURE listed twice on istio-proxy: the seed profile reads the first entry, Istio the last.' },
  { id: 'invalid-drop', pattern: /mangle only-istio: (:ISTIO_DROP -|-A PREROUTING -m conntrack --ctstate INVALID -j ISTIO_DROP|-A ISTIO_DROP -j DROP)$/, when: envNamed('INVALID_DROP'), why: 'INVALID_DROP on istio-proxy: Istio drops packets conntrack finds INVALID (instead of answering them with a reset); the seed profile does not read it.' },
  { id: 'tproxy-chains', pattern: new RegExp(`mangle ${ANY}: .*`), when: TPROXY, why: 'TPROXY: Istio keeps its mark rules in mangle PREROUTING and OUTPUT; the seed profile keeps them in chains of ours (first in mangle ISTIO_INBOUND, and a mangle ISTIO_OUTPUT), so that DEL and CHECK can tell them from anyone else\'s.' },
  { id: 'tproxy-routing', pattern: /^ip -[46] (rule|route table 133) only-ours: /, when: TPROXY, why: 'TPROXY with no inbound capture: the seed profile still adds the mark\'s ip rule and local route; Istio only when it diverts inbound traffic.' },
  { id: 'builtin-chain-declared', pattern: new RegExp(`${ANY}: :(PREROUTING|INPUT|FORWARD|OUTPUT|POSTROUTING) ACCEPT$`), why: 'A table only one side uses, because of a difference listed in it.' },
];

/** Not a line: the whole IPv6 half, which only one side programs. */
export const SEED_IPV6_ONLY_OURS: RuleDifference = {
  id: 'dual-stack-ipv6',
  pattern: /^(ip6tables-save|ip -6 )/,
  when: (pod) => pod.addresses === 'dual',
  why: 'A dual-stack pod: the seed profile programs ip6tables whenever the pod has an IPv6 address; Istio takes the family of the pod\'s first address (IPv4 first) and adds IPv6 rules only with ISTIO_DUAL_STACK on istio-proxy (or for an IPv6-only pod).',
};

export function listedRuleDifference(d: Difference, pod: GeneratedPod): string | undefined {
  const text = `${d.where} ${d.kind}: ${d.line}`;
  return SEED_RULE_DIFFERENCES.find((r) => r.pattern.test(text) && (r.when?.(pod) ?? true))?.id;
}

/** A difference between our native nftables tables and those of Istio's native nftables mode. */
export interface NftablesDifference {
  id: string;
  /** `all`: every difference found for the pod. */
  is: (d: NftDifference, pod: GeneratedPod, all: readonly NftDifference[]) => boolean;
  why: string;
}

/** The IPv6 half of an IPv4-only pod: returned at the hooked chain, never walks the others. */
const ipv6Guard = (d: NftDifference) => d.kind === 'only-ours' && /^istio-proxy-[a-z]+\/(prerouting|output) \(IPv6\)$/.test(d.where) && d.line === 'meta nfproto ipv6 counter return';

/** An outbound range annotation with an item covering a whole family (`0.0.0.0/0`, `::/0`, `10.1.2.3/0`). */
const wholeFamilyRange = (pod: GeneratedPod) =>
  ['traffic.sidecar.istio.io/includeOutboundIPRanges', 'traffic.sidecar.istio.io/excludeOutboundIPRanges'].some((k) => (pod.annotations[k] ?? '').split(',').some((item) => /\/0$/.test(item.trim())));

/** A rule without its family matches: ours' `meta nfproto ipv4`, Istio's `ip daddr 0.0.0.0/0`. */
const withoutFamilyMatch = (line: string) => line.replace(/^meta nfproto ipv[46] /, '').replace(/\bip6? daddr \S+\/0 /, '');

/** Where the istio-current rules in nftables form differ from Istio's native nftables mode. */
export const NFTABLES_DIFFERENCES: NftablesDifference[] = [
  {
    id: 'ipv4-only-pod-ipv6',
    is: ipv6Guard,
    why: 'A pod without IPv6 capture: our hooked chains first return IPv6 packets (`meta nfproto ipv6 return`), as with iptables, where such a pod gets no ip6tables rules at all; Istio\'s native mode, whose inet tables see both families, captures its IPv6 too.',
  },
  {
    id: 'invalid-drop-protocols',
    is: (d) => d.where.startsWith('istio-proxy-mangle/prerouting') && d.line === (d.kind === 'only-ours' ? 'ct state invalid counter jump istio-drop' : 'meta l4proto tcp ct state invalid counter jump istio-drop'),
    why: 'INVALID_DROP: Istio\'s native mode drops only TCP packets conntrack finds INVALID, its iptables mode (and the istio-current profile, which is that rule set) every protocol\'s.',
  },
  {
    id: 'whole-family-range',
    is: (d, pod, all) => {
      // The ranges are matched in nat's istio-output, and with VM interfaces in its prerouting.
      if (!wholeFamilyRange(pod) || !/^istio-proxy-nat\/(prerouting|istio-output) /.test(d.where) || d.kind === 'hook') return false;
      const counterpart = all.some((o) => o.where === d.where && o.kind !== d.kind && o.kind !== 'hook' && withoutFamilyMatch(o.line) === withoutFamilyMatch(d.line));
      // Our rule written without a family in a chain the other family never reaches.
      const unreached = d.kind === 'only-ours' && d.where.endsWith('(IPv6)') && all.some(ipv6Guard);
      return counterpart || unreached;
    },
    why: 'An outbound range covering a whole family (`0.0.0.0/0`, `::/0`): the rule set carries it as iptables-save prints it, with no address, so our rule has no family match (a pod of one family: that family alone reaches the chain) or, when the families\' rules then differ, each rule of the chain is limited by `meta nfproto`; Istio writes `ip daddr 0.0.0.0/0` and shares the rest. Each family\'s walk matches the same packets.',
  },
];

export function listedNftablesDifference(d: NftDifference, pod: GeneratedPod, all: readonly NftDifference[]): string | undefined {
  return NFTABLES_DIFFERENCES.find((n) => n.is(d, pod, all))?.id;
}

export interface DecisionDifference {
  /** A case of test/compat/decision.test.ts. */
  case: string;
  ours: 'capture' | 'pass';
  istio: 'capture' | 'pass';
  why: string;
}

export const DECISION_DIFFERENCES: DecisionDifference[] = [
  {
    case: 'inject-annotation-no',
    ours: 'pass',
    istio: 'capture',
    why: '`sidecar.istio.io/inject: no`: we read the seed-era injector\'s words (`n`, `no`, `off`, `false`, `0`, any case) as "not injected"; Istio\'s plugin reads the value with Go\'s ParseBool, which does not know `no`, and captures a pod that carries the status annotation anyway.',
  },
  {
    case: 'inject-annotation-F',
    ours: 'capture',
    istio: 'pass',
    why: '`sidecar.istio.io/inject: F`: ParseBool reads `f`/`F` as false; our word list does not have it (current Istio\'s injector itself takes only `true` and `false`).',
  },
  {
    case: 'disable-envoy-1',
    ours: 'capture',
    istio: 'pass',
    why: '`DISABLE_ENVOY=1` on istio-proxy: Istio reads it with ParseBool (`1`, `t`, `TRUE`, …); we take only `true` in any case. Not yet aligned (both profiles decide alike).',
  },
  {
    case: 'gateway-proxy-router',
    ours: 'capture',
    istio: 'pass',
    why: 'An istio-proxy running `proxy router` (an injected gateway): Istio\'s plugin leaves the pod alone; we capture it when it carries the status annotation. Not yet aligned (both profiles decide alike): a gateway injected with a status annotation is captured.',
  },
  {
    case: 'istio-proxy-plain-init-container',
    ours: 'pass',
    istio: 'capture',
    why: 'istio-proxy as an init container without `restartPolicy: Always`: Istio\'s plugin counts any container of that name; we count an init container only as a native sidecar, since a plain one ends before the app starts.',
  },
];

const cell = (text: string) => text.replaceAll('|', '\\|');

/** docs/compatibility.md's tables (between `<!-- compat:start -->` and `<!-- compat:end -->`), from the lists above. */
export function readmeTables(): string {
  const refusals = (['istio-current', 'seed'] as const).flatMap((profile) =>
    Object.entries(REFUSALS[profile]).map(([tag, r]) => `| ${profile} | \`${tag}\` | ${r!.refusedBy === 'ours' ? 'we refuse, Istio accepts' : 'Istio refuses, we accept'} | ${cell(r!.why)} |`),
  );
  return [
    'Pods one side refuses and the other accepts:',
    '',
    '| profile | values | who refuses | why |',
    '| --- | --- | --- | --- |',
    ...refusals,
    '',
    'Rules the seed profile gives differently from current Istio (the istio-current profile has none):',
    '',
    '| difference | why |',
    '| --- | --- |',
    ...[...SEED_RULE_DIFFERENCES, SEED_IPV6_ONLY_OURS].map((d) => `| \`${d.id}\` | ${cell(d.why)} |`),
    '',
    'Native nftables (`"iptables_backend": "nftables"`, istio-current) against Istio\'s plugin with `native_nftables`:',
    '',
    '| difference | why |',
    '| --- | --- |',
    ...NFTABLES_DIFFERENCES.map((d) => `| \`${d.id}\` | ${cell(d.why)} |`),
    '',
    'Capture decisions that differ from Istio\'s plugin (test/compat/decision.test.ts; both profiles decide alike):',
    '',
    '| case | ours | Istio\'s plugin | why |',
    '| --- | --- | --- | --- |',
    ...DECISION_DIFFERENCES.map((d) => `| ${d.case} | ${d.ours} | ${d.istio} | ${cell(d.why)} |`),
    '',
  ].join('\n');
}
