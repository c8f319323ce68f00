/**
 * fast-check generators of hostile invocations: a valid ADD (or DEL, CHECK, ...) as a runtime sends it,
 * then a list of mutations to its stdin document, its environment and the pod the API server serves.
 * A case with no mutation is a clean one whose outcome is known, so the oracle can demand it.
 */
import fc from 'fast-check';

/** Where CNI_NETNS points; the campaign resolves each to a real path. */
export type NetnsChoice =
  | 'pod' // the worker's own test netns (what a runtime passes)
  | 'node' // the netns the plugin runs in: must be refused
  | 'proc-self' // /proc/self/ns/net: the plugin's own, by another name
  | 'missing' // a path that does not exist
  | 'file' // a regular file
  | 'dir' // a directory
  | 'mnt-ns' // a namespace file of another kind
  | 'empty'
  | { raw: string };

/** Annotations that (will) drive the rule set. Today the plugin reads none of them; once it does,
 * hostile values here must still end as a SPEC error or a full rule set, never half of one. */
export const TRAFFIC_ANNOTATION_KEYS = [
  'traffic.sidecar.istio.io/includeOutboundIPRanges',
  'traffic.sidecar.istio.io/excludeOutboundIPRanges',
  'traffic.sidecar.istio.io/includeInboundPorts',
  'traffic.sidecar.istio.io/excludeInboundPorts',
  'traffic.sidecar.istio.io/includeOutboundPorts',
  'traffic.sidecar.istio.io/excludeOutboundPorts',
  'traffic.sidecar.istio.io/excludeInterfaces',
  'traffic.sidecar.istio.io/kubevirtInterfaces',
  'istio.io/reroute-virtual-interfaces',
  'sidecar.istio.io/interceptionMode',
  'proxy.istio.io/config',
  'status.sidecar.istio.io/port',
  'sidecar.istio.io/statsInclusionPrefixes',
] as const;
/** Annotations that decide capture today. */
const DECISION_ANNOTATION_KEYS = ['sidecar.istio.io/inject', 'sidecar.istio.io/status'] as const;

export interface PodSpec {
  kind: 'injected' | 'plain';
  namespace: string;
  annotations: Record<string, string>;
  labels: Record<string, string>;
  /** Replaces parts of the pod object with values of the wrong shape (the API answer is then not a Pod). */
  corrupt?: { path: 'containers' | 'annotations' | 'metadata' | 'spec'; value: unknown };
}

/**
 * A rule of the pod's own, added with iptables: a comment (quoted by iptables-save, newlines and all)
 * or an interface name (printed bare, up to 15 characters) that reads like more lines of restore
 * input, jumping to one of our chains or not.
 */
export interface PodRule {
  table: 'nat' | 'filter';
  chain: 'PREROUTING' | 'OUTPUT' | 'INPUT' | 'POSTROUTING';
  comment: string;
  iface?: string;
  target: 'ACCEPT' | 'RETURN' | 'ISTIO_INBOUND' | 'ISTIO_OUTPUT' | 'ISTIO_REDIRECT';
}

export interface FuzzCase {
  command: string;
  netns: NetnsChoice;
  /** CNI_* and other variables except CNI_NETNS; values contain no NUL (execve cannot carry one). */
  env: Record<string, string>;
  /** CNI_ARGS as pairs, rendered K=V;K=V, with the pod's name filled in where the value is `@pod`. */
  cniArgs: string;
  /** The config document before serialization, or raw bytes. */
  stdin: { doc: unknown } | { raw: Uint8Array };
  /** Serialization damage applied to `doc`. */
  damage: 'none' | { truncateAt: number } | 'nul' | 'bom' | 'padding' | 'latin1' | 'duplicate-version';
  pod: PodSpec;
  /** Our rule set already in the netns (a repeated ADD). */
  preinstalled: boolean;
  /** Rules the pod (with NET_ADMIN) added to its own netns before the case, after ours when preinstalled. */
  podRules: PodRule[];
  /** No mutation at all: the outcome is known. */
  clean: boolean;
}

// ---------------------------------------------------------------------------------------------
// Hostile strings

const SHELL = ['$(reboot)', '`id`', '; iptables -F', '| sh', '&& rm -rf /', '> /etc/passwd', "'", '"', '\\', '${IFS}', '*', '~root'];
const IPTABLES = ['-j ACCEPT', '1,2 -j ACCEPT', '80\n-A OUTPUT -j ACCEPT', '--to-ports 1', '! -d 0.0.0.0/0', 'COMMIT', '*filter', '-F', ':INPUT DROP [0:0]'];
const CIDRS = ['10.0.0.0/8', '::/0', 'fe80::1/64', '0.0.0.0/0', '10.0.0.0/33', '::ffff:10.0.0.1/128', '1.2.3.4', '300.1.1.1/8', '2001:db8::/129', '10.0.0.0/8,::1/128'];
const PORTS = ['15020', '0', '65536', '-1', '1-65535', '*', '', ' ', '22,,23', '8080 ', '0x50', '1e3', '15001,15006'];
const UNICODE = ['ｐｏｄ', 'pod\u200b', 'é', '\u202eevil', '🐙', 'İ', '\ud800', 'a\u0000b', '\u0085', '\u2028'];

const hostileAtom = fc.constantFrom(...SHELL, ...IPTABLES, ...CIDRS, ...PORTS, ...UNICODE);
/** Strings built from hostile pieces and arbitrary unicode, including NUL. */
export const hostileString = fc.oneof(
  { weight: 3, arbitrary: hostileAtom },
  { weight: 2, arbitrary: fc.array(hostileAtom, { minLength: 1, maxLength: 4 }).map((a) => a.join('')) },
  { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: 40 }) },
  { weight: 1, arbitrary: fc.string({ unit: 'grapheme', maxLength: 20 }) },
  { weight: 1, arbitrary: fc.integer({ min: 1000, max: 60_000 }).map((n) => 'x'.repeat(n)) },
);
/** Environment values: execve cannot carry NUL, and a value over 128 KiB is E2BIG. */
const envString = hostileString.map((s) => fitsExec(s.replaceAll('\0', '')));

/**
 * The kernel refuses to exec a program with one environment string over 128 KiB (MAX_ARG_STRLEN):
 * no runtime can hand the plugin more, so a longer value is cut to what fits, whole characters only.
 */
function fitsExec(value: string): string {
  const limit = 120 * 1024;
  if (Buffer.byteLength(value) <= limit) return value;
  return new TextDecoder().decode(Buffer.from(value).subarray(0, limit)).replace(/\uFFFD$/, '');
}

/** A port list of n entries, optionally with something smuggled in. */
const portList = fc
  .tuple(fc.integer({ min: 1, max: 100_000 }), fc.option(hostileAtom, { nil: undefined }))
  .map(([n, smuggled]) => {
    const ports = Array.from({ length: n }, (_, i) => String((i % 65535) + 1));
    if (smuggled !== undefined) ports.splice(n >> 1, 0, smuggled);
    return ports.join(',');
  });
const cidrList = fc.array(fc.constantFrom(...CIDRS), { minLength: 1, maxLength: 8 }).map((a) => a.join(','));
const annotationValue = fc.oneof(hostileString, portList, cidrList, fc.constantFrom('REDIRECT', 'TPROXY', 'NONE', 'redirect', '{}', '{"a":'));

// ---------------------------------------------------------------------------------------------
// Documents

const anyJson = fc.jsonValue({ maxDepth: 3 });
/** Values of the wrong type for any field. */
const wrongType = fc.oneof(fc.integer(), fc.boolean(), fc.constant(null), fc.array(fc.string(), { maxLength: 3 }), fc.dictionary(fc.string(), fc.string(), { maxKeys: 3 }), fc.double());
const badVersion = fc.oneof(
  fc.constantFrom('2.0.0', '1.2.0', '0.2.0', '0.1.0', '1.0', '1', '', ' 1.0.0', '1.0.0\n', 'v1.0.0', '1.0.0-rc1', '１.０.０', '01.0.0', '99999999999999999999.0.0'),
  wrongType,
  hostileString,
);

/** A previous result as ptp leaves it, or a damaged one. */
const prevResult = fc.oneof(
  fc.constant({ cniVersion: '1.0.0', interfaces: [{ name: 'eth0', sandbox: '@netns' }], ips: [{ address: '10.200.0.5/24', gateway: '10.200.0.1', interface: 0 }], routes: [{ dst: '0.0.0.0/0' }], dns: {} }),
  fc.constantFrom('fe80::5/24', '10.200.0.5/129', '::/0', 'not-an-ip', '10.200.0.5').map((address) => ({ cniVersion: '1.0.0', ips: [{ address, version: '4' }] })),
  fc.dictionary(fc.string({ maxLength: 12 }), anyJson, { maxKeys: 6 }),
  fc.integer({ min: 1, max: 100_000 }).map((n) => ({ cniVersion: '1.0.0', ips: Array.from({ length: n }, (_, i) => ({ address: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}/32` })) })),
  fc.integer({ min: 100, max: 20_000 }).map((depth) => nest(depth)),
  wrongType,
);

/** Deeply nested objects; written out as text at serialization (the test's own JSON.stringify would overflow). */
function nest(depth: number): unknown {
  return { cniVersion: '1.0.0', nested: { '@nested': depth } };
}

type Doc = Record<string, unknown>;
type Mutation = (doc: Doc) => void;

const CONFIG_FIELDS = ['cniVersion', 'name', 'type', 'log_level', 'plugin_log_level', 'log_file', 'kubernetes', 'exclude_namespaces', 'cni_agent_run_dir', 'iptables_backend', 'prevResult'] as const;

/** Mutations of the config document. log_file only ever points inside @logdir: we run as root. */
const docMutation: fc.Arbitrary<Mutation> = fc.oneof(
  badVersion.map((v): Mutation => (d) => void (d.cniVersion = v)),
  fc.constantFrom('0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0').map((v): Mutation => (d) => void (d.cniVersion = v)),
  fc.tuple(fc.constantFrom(...CONFIG_FIELDS), wrongType).map(([field, v]): Mutation => (d) => void (d[field] = v)),
  fc.constantFrom(...CONFIG_FIELDS).map((field): Mutation => (d) => void delete d[field]),
  fc.oneof(hostileString, fc.constantFrom('nft', 'legacy', 'auto', 'nftables', 'NFT', 'iptables', 'NFTABLES')).map((v): Mutation => (d) => void (d.iptables_backend = v)),
  fc.oneof(hostileString, fc.constantFrom('trace', 'debug', 'none', 'silent', 'DEBUG')).map((v): Mutation => (d) => void (d.log_level = v)),
  hostileString.map((v): Mutation => (d) => void (d.log_file = `@logdir/${v.replaceAll('/', '_')}`)),
  hostileString.map((v): Mutation => (d) => void (d.log_file = v.startsWith('/') ? `@logdir${v.replaceAll('..', '__')}` : v)),
  fc.oneof(hostileString, fc.constantFrom('/nonexistent/kubeconfig', '@bad-kubeconfig', '@exec-kubeconfig', '/proc/self/environ', '/dev/null', 'relative/kubeconfig')).map((v): Mutation => (d) => void (d.kubernetes = { ...(d.kubernetes as object), kubeconfig: v })),
  fc.oneof(fc.array(hostileString, { maxLength: 5 }), fc.constant(['default']), fc.integer({ min: 1, max: 100_000 }).map((n) => Array.from({ length: n }, (_, i) => `ns-${i}`))).map((v): Mutation => (d) => void (d.exclude_namespaces = v)),
  fc.oneof(hostileString, fc.constant('/nonexistent-run-dir')).map((v): Mutation => (d) => {
    delete (d.kubernetes as Doc | undefined)?.kubeconfig;
    d.cni_agent_run_dir = v;
  }),
  prevResult.map((v): Mutation => (d) => void (d.prevResult = v)),
  fc.tuple(fc.oneof(hostileString, fc.constantFrom('__proto__', 'constructor', 'toString')), anyJson).map(([k, v]): Mutation => (d) => void Object.defineProperty(d, k, { value: v, enumerable: true, configurable: true, writable: true })),
  fc.oneof(anyJson, fc.constant([]), fc.constant('string'), fc.constant(42)).map((v): Mutation => (d) => {
    for (const key of Object.keys(d)) delete d[key];
    d['@replace'] = v;
  }),
);

// ---------------------------------------------------------------------------------------------
// Environment

const COMMANDS = ['ADD', 'DEL', 'CHECK', 'VERSION', 'STATUS', 'GC'] as const;
const command = fc.oneof(
  { weight: 10, arbitrary: fc.constant('ADD') },
  { weight: 5, arbitrary: fc.constantFrom(...COMMANDS) },
  { weight: 2, arbitrary: fc.oneof(fc.constantFrom('add', 'Add', 'ADD ', 'DELETE', 'INIT', ''), envString) },
);

const netnsChoice: fc.Arbitrary<NetnsChoice> = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom<NetnsChoice>('node', 'proc-self', 'missing', 'file', 'dir', 'mnt-ns', 'empty') },
  { weight: 1, arbitrary: fc.oneof(envString, fc.constantFrom('dummy', '/run/netns/../netns', '/proc/self/ns/../ns/net', '/dev/null', '/')).map((raw): NetnsChoice => ({ raw })) },
);

type EnvMutation = (env: Record<string, string>, args: [string, string][]) => void;
const ENV_VARS = ['CNI_CONTAINERID', 'CNI_IFNAME', 'CNI_PATH', 'CNI_ARGS'] as const;
const ARG_KEYS = ['K8S_POD_NAME', 'K8S_POD_NAMESPACE', 'K8S_POD_INFRA_CONTAINER_ID', 'K8S_POD_UID', 'IgnoreUnknown'] as const;

const envMutation: fc.Arbitrary<EnvMutation> = fc.oneof(
  fc.tuple(fc.constantFrom(...ENV_VARS), envString).map(([k, v]): EnvMutation => (env) => void (env[k] = v)),
  fc.constantFrom(...ENV_VARS).map((k): EnvMutation => (env) => void delete env[k]),
  fc.tuple(fc.constantFrom(...ARG_KEYS), fc.oneof(envString, fc.constantFrom('kube-system', 'istio-system', 'missing-pod', '1', 'false', 'TRUE')))
    .map(([k, v]): EnvMutation => (_env, args) => void args.push([k, v])),
  fc.constantFrom(...ARG_KEYS).map((k): EnvMutation => (_env, args) => args.splice(0, args.length, ...args.filter(([key]) => key !== k))),
  fc.tuple(envString, envString).map(([k, v]): EnvMutation => (_env, args) => void args.push([k, v])),
  envString.map((raw): EnvMutation => (_env, args) => void args.push(['@raw', raw])),
  fc.constantFrom('--require=/nonexistent/x.js', '--inspect', '--max-old-space-size=1', '--stack-size=10').map((v): EnvMutation => (env) => void (env.NODE_OPTIONS = v)),
  fc.constantFrom('--preload /nonexistent/x.js', '--inspect', '--smol', '-e 0').map((v): EnvMutation => (env) => void (env.BUN_OPTIONS = v)),
  fc.constantFrom('BUN_BE_BUN', 'BUN_JSC_useJIT', 'JSC_useJIT').map((k): EnvMutation => (env) => void (env[k] = '1')),
  fc.constantFrom('', '/nonexistent', '.', '/tmp/evil:/usr/bin').map((v): EnvMutation => (env) => void (env.PATH = v)),
);

// ---------------------------------------------------------------------------------------------
// The pod the API server serves

type PodMutation = (pod: PodSpec) => void;

const rangeList = (n: number) => Array.from({ length: n }, (_, i) => `10.${(i >> 8) & 255}.${i & 255}.0/24`).join(',');
const interfaceList = (n: number) => Array.from({ length: n }, (_, i) => `vm${i}`).join(',');
const portListOf = (n: number) => Array.from({ length: n }, (_, i) => String(i + 1)).join(',');
const PORT_LIST_KEYS = [
  'traffic.sidecar.istio.io/includeInboundPorts',
  'traffic.sidecar.istio.io/excludeInboundPorts',
  'traffic.sidecar.istio.io/includeOutboundPorts',
  'traffic.sidecar.istio.io/excludeOutboundPorts',
] as const;

/**
 * Annotations that multiply: include ranges × VM interfaces (one PREROUTING rule each, 1..400 of
 * each, from a few rules to 160,000), and lists around the item cap, alone or several at once.
 */
const multiplyingAnnotations: fc.Arbitrary<PodMutation> = fc.oneof(
  fc
    .tuple(fc.integer({ min: 1, max: 400 }), fc.integer({ min: 1, max: 400 }), fc.constantFrom('istio.io/reroute-virtual-interfaces', 'traffic.sidecar.istio.io/kubevirtInterfaces'))
    .map(([ranges, interfaces, key]): PodMutation => (p) => {
      p.annotations['traffic.sidecar.istio.io/includeOutboundIPRanges'] = rangeList(ranges);
      p.annotations[key] = interfaceList(interfaces);
    }),
  fc
    .array(fc.tuple(fc.constantFrom(...PORT_LIST_KEYS), fc.integer({ min: 900, max: 1100 })), { minLength: 1, maxLength: 4 })
    .map((lists): PodMutation => (p) => {
      for (const [key, n] of lists) p.annotations[key] = portListOf(n);
    }),
);

/** Text that reads like restore input when iptables-save prints it verbatim. */
const INJECTED_LINES = [
  '\n-A OUTPUT --modprobe=/tmp/icni-fuzz-modprobe -j ISTIO_OUTPUT',
  '\nCOMMIT\n*filter\n-F\n-A INPUT -j DROP\nCOMMIT',
  '\n-A PREROUTING -p tcp -j ISTIO_INBOUND',
  '\n:ISTIO_FAKE - [0:0]',
  '\n-X ISTIO_OUTPUT',
  '"\n-D OUTPUT 1',
  '\\"\n-A OUTPUT -j ACCEPT',
  "'\n*raw\n-F",
  '\\',
  '"',
  ' -j ISTIO_REDIRECT ',
];
/** Interface names of at most 15 characters that break a line where iptables-save prints them bare. */
const INJECTED_IFACES = ['a\n-A OUTPUT', 'x\n*filter', 'e\nCOMMIT', 'a\n:ISTIO_X -', 'b\n-A -j', 'q"\n-F', 'eth0'];

const podRule: fc.Arbitrary<PodRule> = fc
  .record({
    table: fc.constantFrom<PodRule['table']>('nat', 'nat', 'filter'),
    chain: fc.constantFrom<PodRule['chain']>('PREROUTING', 'OUTPUT', 'INPUT', 'POSTROUTING'),
    comment: fc.oneof(
      fc.constantFrom(...INJECTED_LINES),
      fc.array(fc.oneof(fc.constantFrom(...INJECTED_LINES), hostileAtom), { minLength: 1, maxLength: 3 }).map((a) => a.join('')),
    ),
    iface: fc.option(fc.constantFrom(...INJECTED_IFACES), { nil: undefined }),
    target: fc.constantFrom<PodRule['target']>('ACCEPT', 'RETURN', 'ISTIO_INBOUND', 'ISTIO_OUTPUT', 'ISTIO_REDIRECT'),
  })
  // iptables has a nat INPUT, but no PREROUTING in filter; a comment holds at most 256 bytes, and no NUL.
  .map(({ iface, ...r }): PodRule => ({
    ...r,
    ...(iface === undefined ? {} : { iface }),
    chain: r.table === 'filter' && (r.chain === 'PREROUTING' || r.chain === 'POSTROUTING') ? 'INPUT' : r.chain,
    comment: r.comment.replaceAll('\0', '').slice(0, 200),
  }));

const podMutation: fc.Arbitrary<PodMutation> = fc.oneof(
  { weight: 1, arbitrary: multiplyingAnnotations },
  fc.tuple(fc.constantFrom(...TRAFFIC_ANNOTATION_KEYS), annotationValue).map(([k, v]): PodMutation => (p) => void (p.annotations[k] = v)),
  fc.tuple(fc.constantFrom(...DECISION_ANNOTATION_KEYS), fc.oneof(hostileString, fc.constantFrom('false', 'true', 'off', 'N', '{}'))).map(([k, v]): PodMutation => (p) => void (p.annotations[k] = v)),
  fc.oneof(hostileString, fc.constantFrom('false', 'no')).map((v): PodMutation => (p) => void (p.labels['sidecar.istio.io/inject'] = v)),
  fc.constant<PodMutation>((p) => void (p.kind = 'plain')),
  fc.constantFrom('kube-system', 'istio-system').map((ns): PodMutation => (p) => void (p.namespace = ns)),
  fc.tuple(fc.constantFrom('containers', 'annotations', 'metadata', 'spec') as fc.Arbitrary<NonNullable<PodSpec['corrupt']>['path']>, wrongType)
    .map(([path, value]): PodMutation => (p) => void (p.corrupt = { path, value })),
);

// ---------------------------------------------------------------------------------------------

const damage: fc.Arbitrary<FuzzCase['damage']> = fc.oneof(
  fc.constantFrom<FuzzCase['damage']>('nul', 'bom', 'padding', 'latin1', 'duplicate-version'),
  fc.nat({ max: 400 }).map((truncateAt) => ({ truncateAt })),
);

const rawStdin = fc.oneof(
  fc.uint8Array({ maxLength: 200 }),
  fc.constantFrom('', ' ', 'null', '[]', '"x"', '42', '{', '{}', '{"cniVersion":"1.0.0"}{"cniVersion":"1.0.0"}', '\u0000').map((s) => new TextEncoder().encode(s)),
  fc.integer({ min: 1_000_000, max: 8_000_000 }).map((n) => new TextEncoder().encode(`{"cniVersion":"1.0.0","pad":"${'a'.repeat(n)}"}`)),
  fc.integer({ min: 1000, max: 200_000 }).map((n) => new TextEncoder().encode('['.repeat(n))),
);

/** A valid invocation plus up to a few mutations; `clean` when none was drawn. */
export const fuzzCase: fc.Arbitrary<FuzzCase> = fc
  .record({
    command,
    netns: fc.oneof({ weight: 6, arbitrary: fc.constant<NetnsChoice>('pod') }, { weight: 1, arbitrary: netnsChoice }),
    version: fc.constantFrom('0.3.1', '0.4.0', '1.0.0', '1.1.0'),
    backend: fc.constantFrom('nft', 'legacy', 'auto', 'nftables'),
    docMutations: fc.oneof({ weight: 1, arbitrary: fc.constant([]) }, { weight: 3, arbitrary: fc.array(docMutation, { minLength: 1, maxLength: 3 }) }),
    envMutations: fc.oneof({ weight: 2, arbitrary: fc.constant([]) }, { weight: 1, arbitrary: fc.array(envMutation, { minLength: 1, maxLength: 3 }) }),
    podMutations: fc.oneof({ weight: 2, arbitrary: fc.constant([]) }, { weight: 1, arbitrary: fc.array(podMutation, { minLength: 1, maxLength: 4 }) }),
    damage: fc.oneof({ weight: 5, arbitrary: fc.constant<FuzzCase['damage']>('none') }, { weight: 1, arbitrary: damage }),
    raw: fc.oneof({ weight: 15, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: rawStdin }),
    preinstalled: fc.boolean(),
    podRules: fc.oneof({ weight: 4, arbitrary: fc.constant<PodRule[]>([]) }, { weight: 1, arbitrary: fc.array(podRule, { minLength: 1, maxLength: 4 }) }),
  })
  .map((r): FuzzCase => {
    const doc: Doc = {
      cniVersion: r.version,
      name: 'k8s-pod-network',
      type: 'istio-cni',
      log_level: 'debug',
      log_file: '@logdir/istio-cni.log',
      kubernetes: { kubeconfig: '@kubeconfig', exclude_namespaces: ['kube-system'] },
      iptables_backend: r.backend,
      prevResult: { cniVersion: r.version, interfaces: [{ name: 'eth0', sandbox: '@netns' }], ips: [{ address: '10.200.0.5/24', gateway: '10.200.0.1', interface: 0 }] },
    };
    for (const m of r.docMutations) m(doc);
    const env: Record<string, string> = { CNI_CONTAINERID: 'fuzz-container', CNI_IFNAME: 'eth0', CNI_PATH: '/usr/lib/cni' };
    const args: [string, string][] = [['IgnoreUnknown', '1'], ['K8S_POD_NAMESPACE', '@ns'], ['K8S_POD_NAME', '@pod']];
    for (const m of r.envMutations) m(env, args);
    const pod: PodSpec = { kind: 'injected', namespace: 'default', annotations: {}, labels: {} };
    for (const m of r.podMutations) m(pod);
    const clean = r.docMutations.length === 0 && r.envMutations.length === 0 && r.podMutations.length === 0 && r.podRules.length === 0 && r.damage === 'none' && r.raw === undefined && r.netns === 'pod';
    return {
      command: r.command,
      netns: r.netns,
      env,
      cniArgs: fitsExec(args.map(([k, v]) => (k === '@raw' ? v : `${k}=${v}`)).join(';')),
      stdin: r.raw !== undefined ? { raw: r.raw } : { doc },
      damage: r.damage,
      pod,
      preinstalled: r.preinstalled,
      podRules: r.podRules,
      clean: clean && COMMANDS.includes(r.command as (typeof COMMANDS)[number]),
    };
  });
