/**
 * The differential test's machinery: one generated pod, served by the fake API server, ADDed by our
 * built dist/istio-cni into one fresh netns and by Istio's own istio-cni plugin (istio-iptables in CNI
 * mode, built from the pinned istio.io/istio module) into another, then both netns read back:
 * iptables-save of both families on the backend under test, TPROXY's `ip rule`s and routes, and the
 * addresses on lo. Both plugins run in the machine's netns (as under a kubelet) and enter the pod's.
 * With native nftables (runNftablesCase) Istio's plugin runs with `native_nftables`, ours with
 * `"iptables_backend": "nftables"`, and the netns' inet tables are read back (nft-state.ts).
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import * as h from '../harness/index.ts';
import { istioPrograms, type IstioPrograms } from '../harness/istio.ts';
import { captureSettingsFor } from '../../src/redirect/profile.ts';
import { multisetMinus } from '../../src/redirect/restore.ts';
import { CaptureDefaults, type RedirectSettings } from '../../src/redirect/settings.ts';
import { readNftState, type NftState } from './nft-state.ts';
import type { Addresses, GeneratedPod } from './pods.ts';

export type Backend = 'nft' | 'legacy';
export type Profile = 'seed' | 'istio-current';

const NAMESPACE = 'default';
const ADDRESS = { 4: '10.200.0.5/24', 6: 'fd00:200::5/64' } as const;

export interface CompatEnv {
  api: h.FakeKubeApi;
  istio: IstioPrograms;
  ourBin: string;
  ourKubeconfig: string;
  /** Istio's plugin reads `<cni_agent_run_dir>/istio-cni-kubeconfig` and keeps its log there. */
  istioRunDir: string;
  logFile: string;
}

export async function startCompat(): Promise<CompatEnv> {
  const [istio, api] = await Promise.all([istioPrograms(), h.startFakeKubeApi()]);
  const dir = h.makeTempDir('icni-compat-');
  const istioRunDir = join(dir, 'istio-run');
  mkdirSync(istioRunDir);
  api.writeKubeconfig(istioRunDir, { auth: 'token', caMode: 'data', fileName: 'istio-cni-kubeconfig' });
  return {
    api,
    istio,
    ourBin: h.DEFAULT_ISTIO_CNI_BIN,
    ourKubeconfig: api.writeKubeconfig(dir, { auth: 'token', caMode: 'data' }),
    istioRunDir,
    logFile: join(dir, 'istio-cni.log'),
  };
}

/** TPROXY's policy routing and the addresses on lo, as `ip` lists them. */
export interface RoutingState {
  'ip -4 rule': string;
  'ip -6 rule': string;
  'ip -4 route table 133': string;
  'ip -6 route table 133': string;
  'ip -6 addr lo': string;
}

/** What a netns holds after the ADD, as text normalised only where the kernel's listing has no meaning. */
export interface NetnsState extends RoutingState {
  'iptables-save': string;
  'ip6tables-save': string;
}

export interface Side {
  accepted: boolean;
  /** The plugin's output when it refused the pod. */
  error: string;
  state: NetnsState;
}

export interface CaseResult {
  pod: GeneratedPod;
  profile: Profile;
  backend: Backend;
  ours: Side;
  istio: Side;
}

/** The pod as the injector leaves it, with the generated annotations and istio-proxy settings. */
export function podManifest(name: string, generated: GeneratedPod): h.Pod {
  const pod = h.injectedPod(name, NAMESPACE, { metadata: { annotations: generated.annotations } });
  const proxy = (pod.spec as { containers: { name: string; env: unknown[]; securityContext: Record<string, unknown> }[] }).containers.find((c) => c.name === 'istio-proxy')!;
  proxy.env = [...proxy.env, ...generated.env];
  const { runAsUser, runAsGroup, ...securityContext } = proxy.securityContext;
  void runAsUser;
  void runAsGroup;
  proxy.securityContext = {
    ...securityContext,
    ...(generated.runAsUser === undefined ? {} : { runAsUser: generated.runAsUser }),
    ...(generated.runAsGroup === undefined ? {} : { runAsGroup: generated.runAsGroup }),
  };
  return pod;
}

const ip = (ns: h.Netns, ...args: string[]) => h.runOk([h.IP, '-n', ns.name, ...args]);
const families = (addresses: Addresses): (4 | 6)[] => (addresses === 'v4' ? [4] : addresses === 'v6' ? [6] : [4, 6]);

/**
 * A pod netns with eth0 holding the pod's addresses. Istio's plugin probes each iptables binary with
 * a no-op rule in nat INPUT (added, then deleted), which leaves empty nat tables behind, and it picks
 * the legacy backend only when legacy tables already exist: both netns get the same tables first, so
 * they start equal and Istio uses the backend under test. Native nftables (no backend) needs none.
 */
async function podNetns(addresses: Addresses, backend?: Backend): Promise<h.Netns> {
  const ns = await h.createNetns({ tag: 'cmp' });
  await ip(ns, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0-peer');
  await ip(ns, 'link', 'set', 'eth0-peer', 'up');
  await ip(ns, 'link', 'set', 'eth0', 'up');
  for (const family of families(addresses)) await ip(ns, 'addr', 'add', ADDRESS[family], 'dev', 'eth0', ...(family === 6 ? ['nodad'] : []));
  for (const tool of backend === undefined ? [] : ['iptables', 'ip6tables']) {
    const bin = `/usr/sbin/${tool}-${backend}`;
    await h.execInNetnsOk(ns, [bin, '-t', 'nat', '-A', 'INPUT', '-p', '255', '-j', 'RETURN']);
    await h.execInNetnsOk(ns, [bin, '-t', 'nat', '-D', 'INPUT', '-p', '255', '-j', 'RETURN']);
  }
  return ns;
}

/** Tables in a fixed order (the kernel lists them in the order they were first used), counters and comments dropped. */
export function normaliseSave(text: string): string {
  const tables = text.split(/^(?=\*)/m).map((block) =>
    block
      .split('\n')
      .filter((line) => line !== '' && !line.startsWith('#'))
      .map((line) => line.replace(/ \[\d+:\d+\]$/, ''))
      .join('\n'),
  );
  return tables.filter((t) => t !== '').sort().join('\n');
}

async function readState(ns: h.Netns, backend: Backend): Promise<NetnsState> {
  const save = async (tool: string) => normaliseSave((await h.execInNetnsOk(ns, [`/usr/sbin/${tool}-${backend}-save`])).stdout);
  return { 'iptables-save': await save('iptables'), 'ip6tables-save': await save('ip6tables'), ...(await readRouting(ns)) };
}

async function readRouting(ns: h.Netns): Promise<RoutingState> {
  // A routing table that was never used does not exist, which `ip route show table` reports as an error.
  const text = async (...args: string[]) => (await h.run([h.IP, '-n', ns.name, ...args])).stdout.trim();
  return {
    'ip -4 rule': await text('-4', 'rule', 'show'),
    'ip -6 rule': await text('-6', 'rule', 'show'),
    'ip -4 route table 133': await text('-4', 'route', 'show', 'table', '133'),
    'ip -6 route table 133': await text('-6', 'route', 'show', 'table', '133'),
    'ip -6 addr lo': await text('-6', 'addr', 'show', 'dev', 'lo'),
  };
}

let podCounter = 0;

/**
 * One pod on one backend: Istio's plugin in one netns, ours in one more per profile; each result is
 * judged against Istio's. The netns are gone when it returns.
 */
export async function runCase(env: CompatEnv, pod: GeneratedPod, profiles: Profile[], backend: Backend): Promise<CaseResult[]> {
  const name = `cmp-${process.pid}-${++podCounter}`;
  env.api.setPod(podManifest(name, pod));
  const istioNs = await podNetns(pod.addresses, backend);
  const oursNs = await Promise.all(profiles.map(() => podNetns(pod.addresses, backend)));
  try {
    const side = async (run: Promise<h.PluginRunResult>, ns: h.Netns): Promise<Side> => ({ ...outcome(await run), state: await readState(ns, backend) });
    const [istio, ...ours] = await Promise.all([
      side(h.runPlugin(env.istio.istioCni, pluginAdd(name, pod, istioNs, istioConf(env))), istioNs),
      ...profiles.map((profile, i) => side(h.runPlugin(env.ourBin, pluginAdd(name, pod, oursNs[i]!, { ...ourConf(env, profile), iptables_backend: backend })), oursNs[i]!)),
    ]);
    return profiles.map((profile, i) => ({ pod, profile, backend, ours: ours[i]!, istio: istio! }));
  } finally {
    env.api.deletePod(NAMESPACE, name);
    await Promise.all([istioNs, ...oursNs].map((ns) => h.deleteNetns(ns)));
  }
}

/** The ADD of pod `name` in `ns` as a runtime calls a chained plugin, with the plugin's own config. */
function pluginAdd(name: string, pod: GeneratedPod, ns: h.Netns, conf: Record<string, unknown>): h.RunPluginOptions {
  return {
    command: 'ADD',
    stdin: {
      cniVersion: '1.0.0',
      name: 'compat',
      type: 'istio-cni',
      ...conf,
      prevResult: { cniVersion: '1.0.0', interfaces: [{ name: 'eth0', sandbox: ns.path }], ips: families(pod.addresses).map((family) => ({ address: ADDRESS[family], interface: 0 })) },
    },
    containerId: `c-${name}`,
    netns: ns,
    ifName: 'eth0',
    path: h.DEBIAN_CNI_DIR,
    cniArgs: { IgnoreUnknown: '1', K8S_POD_NAMESPACE: NAMESPACE, K8S_POD_NAME: name, K8S_POD_INFRA_CONTAINER_ID: `c-${name}`, K8S_POD_UID: 'u' },
  };
}

const istioConf = (env: CompatEnv) => ({ cni_agent_run_dir: env.istioRunDir, exclude_namespaces: [], pod_namespace: 'istio-system', plugin_log_level: 'info' });
const ourConf = (env: CompatEnv, profile: Profile) => ({ kubernetes: { kubeconfig: env.ourKubeconfig }, exclude_namespaces: [], log_file: env.logFile, rules_profile: profile });

/** Whether the plugin took the pod, and what it said when it did not. */
function outcome(done: h.PluginRunResult): { accepted: boolean; error: string } {
  return { accepted: done.code === 0, error: done.code === 0 ? '' : `${done.stdout.trim()} ${done.stderr.trim().split('\n').slice(-3).join(' ')}`.trim() };
}

export interface NftablesSide {
  accepted: boolean;
  error: string;
  state: NftState;
  routing: RoutingState;
}

export interface NftablesCaseResult {
  pod: GeneratedPod;
  profile: Profile;
  ours: NftablesSide;
  istio: NftablesSide;
}

/**
 * One pod with native nftables: Istio's plugin (`native_nftables`) in one netns, ours
 * (`"iptables_backend": "nftables"`, the profile given) in another; their inet tables and routing read
 * back. The netns are gone when it returns.
 */
export async function runNftablesCase(env: CompatEnv, pod: GeneratedPod, profile: Profile): Promise<NftablesCaseResult> {
  const name = `cmp-${process.pid}-${++podCounter}`;
  env.api.setPod(podManifest(name, pod));
  const [istioNs, oursNs] = await Promise.all([podNetns(pod.addresses), podNetns(pod.addresses)]);
  try {
    const side = async (run: Promise<h.PluginRunResult>, ns: h.Netns): Promise<NftablesSide> => ({ ...outcome(await run), state: await readNftState(ns), routing: await readRouting(ns) });
    const [istio, ours] = await Promise.all([
      side(h.runPlugin(env.istio.istioCni, pluginAdd(name, pod, istioNs, { ...istioConf(env), native_nftables: true })), istioNs),
      side(h.runPlugin(env.ourBin, pluginAdd(name, pod, oursNs, { ...ourConf(env, profile), iptables_backend: 'nftables' })), oursNs),
    ]);
    return { pod, profile, ours, istio };
  } finally {
    env.api.deletePod(NAMESPACE, name);
    await Promise.all([istioNs, oursNs].map((ns) => h.deleteNetns(ns)));
  }
}

/** The node-wide `capture` settings of our conflist entry, which Istio's CNI plugin has no room for. */
export interface NodeCapture {
  inbound_port: number;
  outbound_port: number;
  tunnel_port: number;
  proxy_uid: number;
  proxy_gid: number;
  exclude_inbound_ports: number[];
  exclude_outbound_ports: number[];
  exclude_outbound_ip_ranges: string[];
}

/**
 * istio-iptables' own flags for the settings our ADD derived from the pod and the node settings:
 * what `pilot-agent istio-iptables` (the istio-init / istio-validation command) takes.
 */
export function istioIptablesFlags(s: RedirectSettings, includeRangesWritten: string | undefined, dualStack: boolean): string[] {
  const list = (items: readonly (number | string)[]) => items.join(',');
  const ranges = (r: RedirectSettings['excludeOutboundIpRanges']) => list(r.map((c) => c.text));
  return [
    ...['-p', String(s.outboundPort), '-z', String(s.inboundPort), '-e', String(s.tunnelPort), '-u', String(s.proxyUid), '-g', String(s.proxyGid)],
    ...['-m', s.interceptionMode, '-b', s.includeInboundPorts === '*' ? '*' : list(s.includeInboundPorts), '-d', list(s.excludeInboundPorts)],
    // As written: Istio tells a loopback range by its address before masking.
    ...['-i', includeRangesWritten ?? (s.includeOutboundIpRanges === '*' ? '*' : ranges(s.includeOutboundIpRanges)), '-x', ranges(s.excludeOutboundIpRanges)],
    ...['-q', list(s.includeOutboundPorts), '-o', list(s.excludeOutboundPorts), '-k', list(s.rerouteInterfaces), '-c', list(s.excludeInterfaces)],
    ...(s.dnsCapture ? ['--redirect-dns', '--capture-all-dns'] : []),
    ...(s.dropInvalid ? ['--drop-invalid'] : []),
    ...(dualStack ? ['--dual-stack'] : []),
  ];
}

export interface PilotAgentCase {
  pod: GeneratedPod;
  capture: NodeCapture;
  backend: Backend;
  flags: string[];
  ours: Side;
  istio: Side;
  /** When the netns differ: pilot-agent's --dry-run output for the same flags, the restore input it applied. */
  dryRun?: string;
}

/**
 * One pod with node-wide capture settings: our ADD (istio-current) in one netns, `pilot-agent
 * istio-iptables` with the equivalent flags in another (run in that netns, as istio-init runs in the
 * pod). Undefined when our ADD refuses the pod (the plugin comparison covers refusals).
 */
export async function runPilotAgentCase(env: CompatEnv, pod: GeneratedPod, capture: NodeCapture, backend: Backend): Promise<PilotAgentCase | undefined> {
  let settings: RedirectSettings;
  try {
    settings = captureSettingsFor({ annotations: pod.annotations, proxy: { env: pod.env, securityContext: { runAsUser: pod.runAsUser, runAsGroup: pod.runAsGroup } }, podIps: families(pod.addresses).map((f) => ADDRESS[f]), defaults: CaptureDefaults.parse(capture) }, 'istio-current');
  } catch {
    return undefined;
  }
  if (settings.interceptionMode === 'NONE') return undefined;
  const name = `cmp-${process.pid}-${++podCounter}`;
  env.api.setPod(podManifest(name, pod));
  const [oursNs, istioNs] = await Promise.all([podNetns(pod.addresses, backend), podNetns(pod.addresses, backend)]);
  const flags = [...istioIptablesFlags(settings, pod.annotations['traffic.sidecar.istio.io/includeOutboundIPRanges'], pod.addresses === 'dual' && settings.ipv6), `--force-iptables-binary=${backend}`];
  try {
    const ours = h.runPlugin(env.ourBin, {
      command: 'ADD',
      stdin: {
        cniVersion: '1.0.0',
        name: 'compat',
        type: 'istio-cni',
        kubernetes: { kubeconfig: env.ourKubeconfig },
        exclude_namespaces: [],
        log_file: env.logFile,
        iptables_backend: backend,
        rules_profile: 'istio-current',
        capture,
        prevResult: { cniVersion: '1.0.0', ips: families(pod.addresses).map((family) => ({ address: ADDRESS[family] })) },
      },
      containerId: `c-${name}`,
      netns: oursNs,
      ifName: 'eth0',
      path: h.DEBIAN_CNI_DIR,
      cniArgs: { K8S_POD_NAMESPACE: NAMESPACE, K8S_POD_NAME: name },
    });
    const istio = h.run(h.nsenterArgv(istioNs, [env.istio.pilotAgent, 'istio-iptables', ...flags]), { timeoutMs: 60_000 });
    const [o, i] = await Promise.all([ours, istio]);
    const side = async (run: h.RunResult, ns: h.Netns): Promise<Side> => ({ accepted: run.code === 0, error: run.code === 0 ? '' : `${run.stdout}${run.stderr}`.trim().split('\n').slice(-3).join(' '), state: await readState(ns, backend) });
    const result: PilotAgentCase = { pod, capture, backend, flags, ours: await side(o, oursNs), istio: await side(i, istioNs) };
    if (differences(result.ours.state, result.istio.state).length > 0) {
      const dry = await h.run(h.nsenterArgv(istioNs, [env.istio.pilotAgent, 'istio-iptables', '--dry-run', ...flags]));
      result.dryRun = dry.stdout.split('\n').filter((l) => /^(\* |-[ANI] |COMMIT)/.test(l)).join('\n');
    }
    return result;
  } finally {
    env.api.deletePod(NAMESPACE, name);
    await Promise.all([oursNs, istioNs].map((ns) => h.deleteNetns(ns)));
  }
}

/** One line that is in one netns and not the other, or a chain whose rules are the same but in another order. */
export interface Difference {
  /** `iptables-save nat`, `ip -4 rule`, … */
  where: string;
  kind: 'only-ours' | 'only-istio' | 'order';
  line: string;
}


function tablesOf(save: string): Map<string, string[]> {
  const tables = new Map<string, string[]>();
  let current: string[] = [];
  for (const line of save.split('\n')) {
    if (line.startsWith('*')) tables.set(line.slice(1), (current = []));
    else if (line !== 'COMMIT') current.push(line);
  }
  return tables;
}

const lines = (text: string) => text.split('\n').filter((line) => line !== '');

/**
 * Every difference between our netns and Istio's, line by line; none means the same rules in the same
 * order. Both are NetnsState, or (native nftables, whose tables nft-state.ts compares) RoutingState.
 */
export function differences(oursState: RoutingState, istioState: RoutingState): Difference[] {
  const [ours, istio] = [oursState, istioState] as unknown as [Record<string, string>, Record<string, string>];
  const found: Difference[] = [];
  for (const [key, mine] of Object.entries(ours)) {
    const theirs = istio[key] ?? '';
    if (mine === theirs) continue;
    const pairs = key.endsWith('-save')
      ? [...new Set([...tablesOf(mine).keys(), ...tablesOf(theirs).keys()])].map((t) => [`${key} ${t}`, tablesOf(mine).get(t) ?? [], tablesOf(theirs).get(t) ?? []] as const)
      : [[key, lines(mine), lines(theirs)] as const];
    for (const [where, a, b] of pairs) {
      const onlyOurs = multisetMinus([...a], [...b]);
      const onlyIstio = multisetMinus([...b], [...a]);
      found.push(...onlyOurs.map((line) => ({ where, kind: 'only-ours' as const, line })), ...onlyIstio.map((line) => ({ where, kind: 'only-istio' as const, line })));
      if (onlyOurs.length === 0 && onlyIstio.length === 0 && a.join('\n') !== b.join('\n')) {
        const chains = new Set(a.filter((l) => l.startsWith('-A ')).map((l) => l.split(' ')[1]!));
        for (const chain of chains) {
          const inChain = (lines: readonly string[]) => lines.filter((l) => l.startsWith(`-A ${chain} `)).join('\n');
          if (inChain(a) !== inChain(b)) found.push({ where, kind: 'order', line: `-A ${chain}` });
        }
        if (!found.some((d) => d.where === where && d.kind === 'order')) found.push({ where, kind: 'order', line: 'chain declarations' });
      }
    }
  }
  return found;
}
