// What the real cluster changes on the machine itself, and how `down` puts it back: the node's
// own interface and the routes it carries, two iptables chains in the root netns (the API
// service address, and a guard that keeps pod traffic on the machine), the sysctls the kubelet
// and the bridge plugin set, the directories they create outside the cluster dir, and whatever a
// killed containerd or kubelet leaves behind (shims, netns, mounts, cgroups, libcni cache).
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { removeCgroupTree } from './host-net.ts';
import { IP, NETNS_DIR } from './netns.ts';
import { runOk } from './proc.ts';

export const IPTABLES = '/usr/sbin/iptables-nft';
const UMOUNT = '/usr/bin/umount';
/** The kubelet's cgroup for pods (cgroupsPerQOS, cgroupfs driver), in every hierarchy. */
export const KUBEPODS = '/kubepods';

/** Addresses nothing else on these machines routes (checked by `up`). */
export const NET = {
  /**
   * The node IP, alone on an interface of its own (the kubelet refuses a loopback node IP): an
   * empty bridge, as this kernel has no dummy driver (and no modules to load one).
   */
  nodeLink: 'icni-node0',
  nodeIp: '10.251.0.2',
  /** The pods' bridge and host-local range (the primary plugin, standing in for calico). */
  bridge: 'icni-br0',
  /** Locally administered, fixed (see prepareHost). */
  bridgeMac: '02:1c:6e:00:00:01',
  podCidr: '10.252.0.0/24',
  podGateway: '10.252.0.1',
  /** Service range; no kube-proxy: only the API service address is translated (below). */
  serviceCidr: '10.253.0.0/24',
  apiServiceIp: '10.253.0.1',
  apiPort: 6443,
} as const;

/** Chains of ours in the root netns (iptables-nft, the machine's default backend). */
const SERVICE_CHAIN = 'ICNI-CLUSTER-SERVICES';
const FORWARD_CHAIN = 'ICNI-CLUSTER-FORWARD';

/** Kernel settings the kubelet changes (setupKernelTunables). */
export const TOUCHED_SYSCTLS = [
  'vm/overcommit_memory',
  'vm/panic_on_oom',
  'kernel/panic',
  'kernel/panic_on_oops',
  'kernel/keys/root_maxkeys',
  'kernel/keys/root_maxbytes',
] as const;

/** Directories outside the cluster dir that the kubelet, containerd's shims or libcni create when missing. */
export const OUTSIDE_DIRS = ['/var/log/containers', '/run/containerd', '/var/lib/cni'] as const;

const readSysctl = (key: string) => readFileSync(join('/proc/sys', key), 'utf8').trim();

const ipt = (args: string[]) => runOk([IPTABLES, '-w', '5', ...args]);

/** The node's link and address, the service route, the API service translation and the pod guard. */
export async function prepareHost(): Promise<void> {
  const routes = (await runOk([IP, '-4', 'route', 'show', 'table', 'all'])).stdout;
  for (const cidr of [NET.podCidr, NET.serviceCidr, `${NET.nodeIp}`]) {
    const prefix = cidr.split('.').slice(0, 3).join('.');
    if (routes.includes(`${prefix}.`)) throw new Error(`cluster: ${cidr} is already routed on this machine:\n${routes}`);
  }
  await runOk([IP, 'link', 'add', NET.nodeLink, 'type', 'bridge']);
  await runOk([IP, 'addr', 'add', `${NET.nodeIp}/32`, 'dev', NET.nodeLink]);
  await runOk([IP, 'link', 'set', NET.nodeLink, 'up']);
  // Anything sent to a service address that is not translated ends on the node's portless
  // bridge (dropped), never on the default route.
  await runOk([IP, 'route', 'add', NET.serviceCidr, 'dev', NET.nodeLink, 'src', NET.nodeIp]);
  // The pods' bridge with their gateway address, made here rather than by the bridge plugin
  // (isGateway), which would also turn on IP forwarding for the whole machine: pods reach each
  // other on the bridge and the node at its gateway address, nothing needs forwarding.
  // Its MAC address is set: a bridge without one takes the lowest of its ports', so it changes as
  // pods come and go, and the bridge plugin's CHECK (which compares it with the one recorded at
  // ADD) then fails for every pod created before the change.
  await runOk([IP, 'link', 'add', NET.bridge, 'address', NET.bridgeMac, 'type', 'bridge']);
  await runOk([IP, 'addr', 'add', `${NET.podGateway}/${NET.podCidr.split('/')[1]}`, 'dev', NET.bridge]);
  await runOk([IP, 'link', 'set', NET.bridge, 'up']);

  // kube-proxy's one job here: the `kubernetes` service, which the installer writes into the
  // plugin's kubeconfig (KUBERNETES_SERVICE_HOST), for processes of the node (the plugin, and the
  // host-network DaemonSet pod).
  await ipt(['-t', 'nat', '-N', SERVICE_CHAIN]);
  await ipt(['-t', 'nat', '-A', SERVICE_CHAIN, '-d', `${NET.apiServiceIp}/32`, '-p', 'tcp', '--dport', '443',
    '-j', 'DNAT', '--to-destination', `${NET.nodeIp}:${NET.apiPort}`]);
  await ipt(['-t', 'nat', '-I', 'OUTPUT', '-d', NET.serviceCidr, '-j', SERVICE_CHAIN]);
  // Pods talk to pods and to the node, nothing else, even while another program turns on IP
  // forwarding: the machine's default route leads off it.
  await ipt(['-t', 'filter', '-N', FORWARD_CHAIN]);
  await ipt(['-t', 'filter', '-A', FORWARD_CHAIN, '-s', NET.podCidr, '-d', NET.podCidr, '-j', 'RETURN']);
  await ipt(['-t', 'filter', '-A', FORWARD_CHAIN, '-s', NET.podCidr, '-j', 'DROP']);
  await ipt(['-t', 'filter', '-A', FORWARD_CHAIN, '-d', NET.podCidr, '-j', 'DROP']);
  await ipt(['-t', 'filter', '-I', 'FORWARD', '-j', FORWARD_CHAIN]);
}

const quiet = { stdio: 'ignore' as const, env: { PATH: '/usr/sbin:/usr/bin' } };

/** Delete every rule of `table`'s built-in `parent` that jumps to `chain`, then the chain. */
function removeChain(table: string, parent: string, chain: string): void {
  const rules = spawnSync(IPTABLES, ['-w', '5', '-t', table, '-S', parent], { encoding: 'utf8' }).stdout ?? '';
  for (const rule of rules.split('\n').filter((r) => r.endsWith(`-j ${chain}`))) {
    spawnSync(IPTABLES, ['-w', '5', '-t', table, ...rule.replace(/^-A /, '-D ').split(' ')], quiet);
  }
  spawnSync(IPTABLES, ['-w', '5', '-t', table, '-F', chain], quiet);
  spawnSync(IPTABLES, ['-w', '5', '-t', table, '-X', chain], quiet);
}

/** Links enslaved to the pods' bridge (host ends of pod veths whose netns is already gone keep none). */
function bridgePorts(): string[] {
  const out = spawnSync(IP, ['-j', 'link', 'show', 'master', NET.bridge], { encoding: 'utf8' }).stdout ?? '';
  try {
    return (JSON.parse(out || '[]') as Array<{ ifname: string }>).map((l) => l.ifname);
  } catch {
    return [];
  }
}

/** Undo prepareHost() (synchronous: also runs from exit handlers). */
export function restoreHost(before: MachineSnapshot | undefined): void {
  removeChain('nat', 'OUTPUT', SERVICE_CHAIN);
  removeChain('filter', 'FORWARD', FORWARD_CHAIN);
  for (const port of bridgePorts()) spawnSync(IP, ['link', 'del', port], quiet);
  spawnSync(IP, ['link', 'del', NET.bridge], quiet);
  spawnSync(IP, ['link', 'del', NET.nodeLink], quiet);
  if (!before) return;
  for (const [key, value] of Object.entries(before.sysctls)) {
    if (readSysctl(key) !== value) writeFileSync(join('/proc/sys', key), `${value}\n`);
  }
  for (const [dir, existed] of Object.entries(before.dirs)) if (!existed) removeIfOnlyOurs(dir);
}

/**
 * A directory that did not exist before `up`: remove it when nothing but what the cluster left is
 * in it (other tests on the machine may have started using it meanwhile).
 */
function removeIfOnlyOurs(dir: string): void {
  if (!existsSync(dir)) return;
  const isOurs = (path: string): boolean => {
    let entries;
    try {
      entries = readdirSync(path, { withFileTypes: true });
    } catch {
      return true;
    }
    // Empty directories (containerd's shim socket dir), and kubelet's container log links.
    return entries.every((e) => (e.isDirectory() ? isOurs(join(path, e.name)) : dir === '/var/log/containers' && e.isSymbolicLink()));
  };
  if (isOurs(dir)) rmSync(dir, { recursive: true, force: true });
}

/** Mount points at or below dir, deepest first. */
export function mountsUnder(dir: string): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .filter((m) => m === dir || m.startsWith(`${dir}/`))
    .sort((a, b) => b.length - a.length);
}

/** containerd-shim-runc-v2 processes serving the containerd at `socket` (it is one of their arguments). */
export function shimPids(socket: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (argv[0]?.endsWith('containerd-shim-runc-v2') && argv.includes(socket)) pids.push(Number(entry));
    } catch {
      /* gone meanwhile */
    }
  }
  return pids;
}

/** A pod sandbox the cluster ran: containerd's ID and the netns it made for it. */
export interface SandboxRef {
  id: string;
  netns: string;
}

/** Processes in a cgroup (pids hierarchy) and all below it. */
function pidsInCgroup(cgroup: string): number[] {
  const walk = (dir: string): number[] => {
    let entries;
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch {
      return [];
    }
    const here = readFileSync(join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
    return [...here, ...entries.filter((e) => e.isDirectory()).flatMap((e) => walk(join(dir, e.name)))];
  };
  return walk(join('/sys/fs/cgroup/pids', cgroup));
}

const killAll = (pids: number[]) => {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
};

/**
 * What survives a containerd or kubelet that was killed with pods still running: containers and
 * their shims, pod netns (recognized by an address in the pod range), mounts under the cluster
 * dir, the kubelet's cgroups, and the given sandboxes' netns and libcni cache entries.
 */
export function sweepNode(opts: { clusterDir: string; containerdSocket: string; runcRoot: string; sandboxes: readonly SandboxRef[] }): void {
  const env = { PATH: '/usr/sbin:/usr/bin' };
  const runcNs = join(opts.runcRoot, 'k8s.io');
  for (const id of existsSync(runcNs) ? readdirSync(runcNs) : []) {
    spawnSync('/usr/sbin/runc', ['--root', runcNs, 'kill', id, 'KILL'], { stdio: 'ignore', env });
    spawnSync('/usr/sbin/runc', ['--root', runcNs, 'delete', '--force', id], { stdio: 'ignore', env });
  }
  killAll(shimPids(opts.containerdSocket));
  // The pods' processes, should a container have outlived its runc state.
  killAll(pidsInCgroup(KUBEPODS));
  const podPrefix = NET.podCidr.replace(/0\/24$/, '');
  for (const name of existsSync(NETNS_DIR) ? readdirSync(NETNS_DIR).filter((n) => n.startsWith('cni-')) : []) {
    const addrs = spawnSync(IP, ['-n', name, '-4', '-o', 'addr', 'show'], { encoding: 'utf8', env }).stdout ?? '';
    if (addrs.includes(`inet ${podPrefix}`)) spawnSync(IP, ['netns', 'del', name], { stdio: 'ignore', env });
  }
  // A sandbox's netns that outlived it with no address left in it (its DEL ran, the removal did not).
  for (const s of opts.sandboxes) if (existsSync(s.netns)) spawnSync(IP, ['netns', 'del', basename(s.netns)], { stdio: 'ignore', env });
  for (const m of mountsUnder(opts.clusterDir)) spawnSync(UMOUNT, ['-l', m], { stdio: 'ignore', env });
  removeCgroupTree(KUBEPODS);
  const cache = '/var/lib/cni/results';
  for (const entry of existsSync(cache) ? readdirSync(cache) : []) {
    if (opts.sandboxes.some((s) => entry.includes(s.id))) rmSync(join(cache, entry), { force: true });
  }
}

// ---------------------------------------------------------------------------------------
// Before and after: what `down` must have put back

const SAVE = ['/usr/sbin/iptables-nft-save', '/usr/sbin/iptables-legacy-save', '/usr/sbin/ip6tables-nft-save', '/usr/sbin/ip6tables-legacy-save'];

/** The root netns's rules of both backends and families, without comments and counters. */
function hostRules(): string {
  return SAVE.map((bin) => {
    const text = spawnSync(bin, [], { encoding: 'utf8' }).stdout ?? '';
    const rules = text.split('\n').filter((l) => l.trim() !== '' && !l.startsWith('#')).map((l) => l.replace(/\[\d+:\d+\]$/, '[0:0]'));
    return `${bin}\n${rules.join('\n')}`;
  }).join('\n');
}

/** What the machine looked like before `up`: what `down` restores, and the test compares. */
export interface MachineSnapshot {
  rules: string;
  sysctls: Record<string, string>;
  dirs: Record<string, boolean>;
}

export function machineSnapshot(): MachineSnapshot {
  return {
    rules: hostRules(),
    sysctls: Object.fromEntries(TOUCHED_SYSCTLS.map((k) => [k, readSysctl(k)])),
    dirs: Object.fromEntries(OUTSIDE_DIRS.map((d) => [d, existsSync(d)])),
  };
}

function inCidr(ip: string, cidr: string): boolean {
  const [net, bits] = cidr.split('/') as [string, string];
  const n = (a: string) => a.split('.').reduce((acc, o) => acc * 256 + Number(o), 0);
  const size = 2 ** (32 - Number(bits));
  return Math.floor(n(ip) / size) === Math.floor(n(net) / size);
}
const ours = (ip: string) => [NET.podCidr, NET.serviceCidr, `${NET.nodeIp}/32`].some((c) => inCidr(ip, c));

/**
 * Everything of the cluster still on the machine, compared with a snapshot taken before `up`:
 * processes (any with the cluster dir in its arguments: every component and shim has; any in the
 * kubelet's pod cgroup), mounts, netns, links, addresses and routes in the cluster's ranges,
 * cgroups, the given sandboxes' netns and libcni cache entries, the root netns's iptables rules, sysctls,
 * and directories created outside the cluster dir. Empty when `down` did its job.
 */
export function leftovers(before: MachineSnapshot, clusterDir: string, sandboxes: readonly SandboxRef[]): string[] {
  const found: string[] = [];
  for (const entry of readdirSync('/proc').filter((e) => /^\d+$/.test(e) && Number(e) !== process.pid)) {
    try {
      const argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (argv.some((a) => a.includes(clusterDir))) found.push(`process ${entry}: ${argv.join(' ').slice(0, 200)}`);
      if (readFileSync(`/proc/${entry}/cgroup`, 'utf8').includes(KUBEPODS)) found.push(`process ${entry} in ${KUBEPODS}: ${argv[0]}`);
    } catch {
      /* gone meanwhile */
    }
  }
  found.push(...mountsUnder(clusterDir).map((m) => `mount ${m}`));
  if (existsSync(clusterDir)) found.push(`directory ${clusterDir}`);
  for (const name of existsSync(NETNS_DIR) ? readdirSync(NETNS_DIR) : []) {
    const addrs = spawnSync(IP, ['-n', name, '-4', '-j', 'addr', 'show'], { encoding: 'utf8' }).stdout ?? '';
    for (const a of addrsOf(addrs)) if (ours(a)) found.push(`netns ${name} with ${a}`);
  }
  const links = JSON.parse(spawnSync(IP, ['-j', 'addr', 'show'], { encoding: 'utf8' }).stdout || '[]') as Array<{ ifname: string; master?: string; addr_info?: Array<{ local: string }> }>;
  for (const l of links) {
    if (l.ifname === NET.nodeLink || l.ifname === NET.bridge || l.master === NET.bridge) found.push(`link ${l.ifname}`);
    for (const a of l.addr_info ?? []) if (ours(a.local)) found.push(`address ${a.local} on ${l.ifname}`);
  }
  const routes = JSON.parse(spawnSync(IP, ['-4', '-j', 'route', 'show', 'table', 'all'], { encoding: 'utf8' }).stdout || '[]') as Array<{ dst?: string; dev?: string }>;
  for (const r of routes) if (r.dst && r.dst !== 'default' && ours(r.dst.split('/')[0]!)) found.push(`route ${r.dst} dev ${r.dev}`);
  for (const hierarchy of readdirSync('/sys/fs/cgroup')) {
    if (existsSync(join('/sys/fs/cgroup', hierarchy, KUBEPODS))) found.push(`cgroup ${hierarchy}${KUBEPODS}`);
  }
  const cache = '/var/lib/cni/results';
  for (const entry of existsSync(cache) ? readdirSync(cache) : []) {
    if (sandboxes.some((s) => entry.includes(s.id))) found.push(`libcni cache ${entry}`);
  }
  for (const s of sandboxes) if (existsSync(s.netns)) found.push(`netns ${s.netns} of sandbox ${s.id}`);
  const now = machineSnapshot();
  if (now.rules !== before.rules) found.push(`iptables rules of the root netns changed:\n${now.rules}`);
  for (const [key, value] of Object.entries(before.sysctls)) {
    if (now.sysctls[key] !== value) found.push(`sysctl ${key} = ${now.sysctls[key]} (was ${value})`);
  }
  for (const [dir, existed] of Object.entries(before.dirs)) if (!existed && now.dirs[dir]) found.push(`directory ${dir} (was absent)`);
  return found;
}

function addrsOf(json: string): string[] {
  try {
    return (JSON.parse(json || '[]') as Array<{ addr_info?: Array<{ local: string }> }>).flatMap((l) => (l.addr_info ?? []).map((a) => a.local));
  } catch {
    return [];
  }
}
