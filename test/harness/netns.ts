// Named network namespaces for the e2e tests: creation, exec inside, topology, iptables dumps.
//
// All namespaces are named `icni-<pid>-<n>[-tag]` and are deleted by cleanupAll() / at
// process exit. Nothing here touches the machine's root netns except creating the
// /run/netns/<name> bind mounts.
import { spawnSync } from 'node:child_process';
import { existsSync, realpathSync } from 'node:fs';
import { basename, dirname } from 'node:path';
import { registerCleanup, run, runOk, type RunOptions, type RunResult } from './proc.ts';

export const IP = '/usr/sbin/ip';
export const NSENTER = '/usr/bin/nsenter';
export const NETNS_DIR = '/run/netns';
export const NETNS_PREFIX = 'icni-';

export interface Netns {
  name: string;
  /** /run/netns/<name>: what CNI_NETNS / nsenter --net= take. */
  path: string;
}

export type NetnsRef = Netns | string;

let counter = 0;
const owned = new Map<string, () => Promise<void>>();
/** Runtime-made namespaces taken as ours (see adoptNetns); the runtime deletes them. */
const adopted = new Set<string>();

export function netnsName(ref: NetnsRef): string {
  if (typeof ref !== 'string') return ref.name;
  return ref.startsWith(`${NETNS_DIR}/`) ? ref.slice(NETNS_DIR.length + 1) : ref;
}

export function netnsPath(ref: NetnsRef): string {
  if (typeof ref !== 'string') return ref.path;
  return ref.startsWith('/') ? ref : `${NETNS_DIR}/${ref}`;
}

/** `icni-<pid>-<counter>[-tag]`, unique within this machine while this process lives. */
export function uniqueNetnsName(tag?: string): string {
  counter += 1;
  const t = tag ? `-${tag.replace(/[^A-Za-z0-9_.-]/g, '').slice(0, 16)}` : '';
  return `${NETNS_PREFIX}${process.pid}-${counter}${t}`;
}

export interface CreateNetnsOptions {
  tag?: string;
  /** Bring `lo` up (default true). */
  loUp?: boolean;
}

/** `ip netns add` a fresh namespace (lo up by default); deleted by cleanupAll()/at exit. */
export async function createNetns(opts: CreateNetnsOptions = {}): Promise<Netns> {
  const name = uniqueNetnsName(opts.tag);
  await runOk([IP, 'netns', 'add', name]);
  const ns: Netns = { name, path: `${NETNS_DIR}/${name}` };
  const remove = registerCleanup(
    `netns ${name}`,
    () => {
      spawnSync(IP, ['netns', 'del', name], { stdio: 'ignore', env: { PATH: '/usr/sbin:/usr/bin' } });
    },
    async () => {
      const r = await run([IP, 'netns', 'del', name]);
      if (r.code !== 0 && !/No such file|Invalid netns|not found/i.test(r.stderr)) {
        throw new Error(`ip netns del ${name}: ${r.stderr}`);
      }
    },
  );
  owned.set(name, remove);
  if (opts.loUp ?? true) await linkUp(ns, 'lo');
  return ns;
}

/**
 * Take a namespace a runtime created for this process (containerd's or podman's /run/netns/…) as
 * this process's own, so the traffic helpers accept it. The runtime stays in charge of deleting
 * it: cleanupAll() must not pull it from under a sandbox the runtime has yet to tear down.
 */
export function adoptNetns(path: string): Netns {
  const real = realpathSync(path);
  if (dirname(real) !== NETNS_DIR) throw new Error(`adoptNetns: ${path} is not under ${NETNS_DIR}`);
  const name = basename(real);
  adopted.add(name);
  return { name, path: real };
}

/** Delete a namespace (ours or not). Missing namespaces are ignored. */
export async function deleteNetns(ref: NetnsRef): Promise<void> {
  const name = netnsName(ref);
  const remove = owned.get(name);
  owned.delete(name);
  if (remove) {
    await remove();
    return;
  }
  const r = await run([IP, 'netns', 'del', name]);
  if (r.code !== 0 && !/No such file|Invalid netns|not found/i.test(r.stderr)) {
    throw new Error(`ip netns del ${name}: ${r.stderr}`);
  }
}

/** True for a namespace created (or adopted) by this process and not deleted yet. */
export function isOwnedNetns(ref: NetnsRef): boolean {
  return owned.has(netnsName(ref)) || adopted.has(netnsName(ref));
}

/** The namespaces created (or adopted) by this process that still exist. */
export function ownedNetns(): Netns[] {
  return [...owned.keys(), ...adopted].map((name) => ({ name, path: `${NETNS_DIR}/${name}` })).filter((ns) => existsSync(ns.path));
}

/** Names from `ip netns list` starting with prefix (default `icni-`). */
export async function listNetns(prefix = NETNS_PREFIX): Promise<string[]> {
  const r = await runOk([IP, 'netns', 'list']);
  return r.stdout
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0] ?? '')
    .filter((n) => n.startsWith(prefix));
}

/** Namespaces this process created and that still exist. */
export async function listOwnNetns(): Promise<string[]> {
  return listNetns(`${NETNS_PREFIX}${process.pid}-`);
}

export interface NsExecOptions extends RunOptions {
  /** nsenter --setuid/--setgid (e.g. 1337 to act as the sidecar proxy user). */
  uid?: number;
  gid?: number;
}

/** argv that runs `argv` inside the netns: `/usr/bin/nsenter --net=<path> [--setuid U --setgid G] -- argv`. */
export function nsenterArgv(ns: NetnsRef, argv: readonly string[], opts: { uid?: number; gid?: number } = {}): string[] {
  const out = [NSENTER, `--net=${netnsPath(ns)}`];
  if (opts.gid !== undefined) out.push(`--setgid=${opts.gid}`);
  if (opts.uid !== undefined) out.push(`--setuid=${opts.uid}`);
  out.push('--', ...argv);
  return out;
}

/** Run argv (absolute argv[0]) inside the netns. Never rejects on non-zero exit. */
export function execInNetns(ns: NetnsRef, argv: readonly string[], opts: NsExecOptions = {}): Promise<RunResult> {
  const { uid, gid, ...runOpts } = opts;
  const ids: { uid?: number; gid?: number } = {};
  if (uid !== undefined) ids.uid = uid;
  if (gid !== undefined) ids.gid = gid;
  return run(nsenterArgv(ns, argv, ids), runOpts);
}

/** Like execInNetns but throws unless the command exits 0. */
export async function execInNetnsOk(ns: NetnsRef, argv: readonly string[], opts: NsExecOptions = {}): Promise<RunResult> {
  const r = await execInNetns(ns, argv, opts);
  if (r.code !== 0) {
    throw new Error(`in netns ${netnsName(ns)}: ${argv.join(' ')} failed (code ${r.code}): ${r.stderr || r.stdout}`);
  }
  return r;
}

export async function linkUp(ns: NetnsRef, dev = 'lo'): Promise<void> {
  await runOk([IP, '-n', netnsName(ns), 'link', 'set', dev, 'up']);
}

/** Parsed `ip -j addr show [dev]` inside the netns. */
export interface IpAddrInfo {
  ifname: string;
  operstate?: string;
  flags?: string[];
  address?: string;
  addr_info: Array<{ family: string; local: string; prefixlen: number; scope?: string }>;
  [k: string]: unknown;
}

export async function ipAddr(ns: NetnsRef, dev?: string): Promise<IpAddrInfo[]> {
  const argv = [IP, '-n', netnsName(ns), '-j', 'addr', 'show'];
  if (dev) argv.push('dev', dev);
  const r = await run(argv);
  if (r.code !== 0) {
    if (dev && /does not exist/.test(r.stderr)) return [];
    throw new Error(`ip addr show: ${r.stderr}`);
  }
  return JSON.parse(r.stdout || '[]') as IpAddrInfo[];
}

/** Parsed `ip -j route show` (family 4 or 6) inside the netns. */
export async function ipRoute(ns: NetnsRef, family: 4 | 6 = 4): Promise<Array<Record<string, unknown>>> {
  const r = await runOk([IP, '-n', netnsName(ns), `-${family}`, '-j', 'route', 'show']);
  return JSON.parse(r.stdout || '[]') as Array<Record<string, unknown>>;
}

// ---------------------------------------------------------------------------------------
// Topology

export interface Topology {
  /** Stand-in for the node's root netns: the CNI driver runs here; ptp's host veth lands here. */
  node: Netns;
  /** The pod sandbox netns that the chain attaches (CNI_NETNS). */
  pod: Netns;
  /** Delete both namespaces now (also done by cleanupAll()). */
  destroy(): Promise<void>;
}

export interface TopologyOptions {
  tag?: string;
  /**
   * Bring lo up in the pod netns (default true). libcni/ptp never do this; a real runtime
   * does (containerd itself / the loopback plugin), and REDIRECT to 127.0.0.1 needs it.
   */
  podLoUp?: boolean;
}

export async function makeTopology(opts: TopologyOptions = {}): Promise<Topology> {
  const tag = opts.tag ? `${opts.tag}` : '';
  const node = await createNetns({ tag: tag ? `${tag}-node` : 'node', loUp: true });
  const pod = await createNetns({ tag: tag ? `${tag}-pod` : 'pod', loUp: opts.podLoUp ?? true });
  return {
    node,
    pod,
    async destroy() {
      await deleteNetns(pod);
      await deleteNetns(node);
    },
  };
}

// ---------------------------------------------------------------------------------------
// iptables

export type IptablesBackend = 'nft' | 'legacy';

export interface IptablesOptions {
  /** ip6tables instead of iptables. */
  ipv6?: boolean;
}

function xtablesBin(backend: IptablesBackend, ipv6: boolean, suffix: '' | '-save'): string {
  return `/usr/sbin/${ipv6 ? 'ip6tables' : 'iptables'}-${backend}${suffix}`;
}

/** `iptables-<backend>-save -t <table>` inside the netns (raw text, with its comments and counters). */
export async function iptablesSave(
  ns: NetnsRef,
  backend: IptablesBackend = 'nft',
  table = 'nat',
  opts: IptablesOptions = {},
): Promise<string> {
  const r = await execInNetnsOk(ns, [xtablesBin(backend, opts.ipv6 ?? false, '-save'), '-t', table]);
  return r.stdout;
}

/** `iptables-<backend> -t <table> -S` inside the netns, as an array of rule lines. */
export async function iptablesS(
  ns: NetnsRef,
  backend: IptablesBackend = 'nft',
  table = 'nat',
  opts: IptablesOptions = {},
): Promise<string[]> {
  const r = await execInNetnsOk(ns, [xtablesBin(backend, opts.ipv6 ?? false, ''), '-t', table, '-S']);
  return r.stdout.split('\n').filter((l) => l.trim() !== '');
}

/**
 * iptables-save text without the `#` comment lines and with counters zeroed, so two dumps
 * can be compared for equality.
 */
export function normalizeIptablesSave(text: string): string {
  return text
    .split('\n')
    .filter((l) => l.trim() !== '' && !l.startsWith('#'))
    .map((l) => l.replace(/\[\d+:\d+\]$/, '[0:0]'))
    .join('\n');
}

/** True when the table has nothing but the built-in chains with no rules (`-S` shows only -P lines). */
export async function iptablesIsEmpty(
  ns: NetnsRef,
  backend: IptablesBackend = 'nft',
  table = 'nat',
  opts: IptablesOptions = {},
): Promise<boolean> {
  const lines = await iptablesS(ns, backend, table, opts);
  return lines.every((l) => l.startsWith('-P '));
}
