// Debian's containerd 1.6 started by the test (no systemd): root, state, sockets, runc state and
// config in one temp dir, the CRI plugin pointed at the test's CNI bin and conf dirs, a locally
// built sandbox image imported with ctr, and pod sandboxes driven over CRI the way kubelet does.
//
// containerd runs the CNI chain from the machine's root netns and makes the pod netns under
// /run/netns (cni-<uuid>); the sandboxes' cgroups live under /icni-ctd-<pid> in each hierarchy.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from './conflist.ts';
import { criClient, removeAllSandboxes, type CriClient, type PodSandboxStatusResponse } from './cri.ts';
import { adoptNetns, IP, NETNS_DIR, type Netns } from './netns.ts';
import { buildPauseImageArchive } from './oci-image.ts';
import { removeCgroupTree } from './host-net.ts';
import { makeTempDir, registerCleanup, runOk, sleep, startDaemon, type Daemon } from './proc.ts';

export const CONTAINERD = '/usr/bin/containerd';
export const CTR = '/usr/bin/ctr';
export const RUNC = '/usr/sbin/runc';
const UMOUNT = '/usr/bin/umount';
const CRI_SWEEP = join(REPO_ROOT, 'test', 'helpers', 'cri-sweep.ts');
/** libcni's result cache (containerd keeps the default). */
const LIBCNI_CACHE = '/var/lib/cni/results';
/** The containerd namespace the CRI plugin keeps its images and sandboxes in. */
export const CRI_NAMESPACE = 'k8s.io';
export const SANDBOX_IMAGE = 'localhost/icni-pause:test';

export interface ContainerdOptions {
  /** The CNI plugin directory (bin_dir). */
  cniBinDir: string;
  /** The CNI conf directory (conf_dir), already holding the conflist. */
  cniConfDir: string;
  /** The conflist's pod /24, used by no one else: a cni-* netns with an address in it is ours. */
  podSubnet: string;
}

export interface PodSpec {
  name: string;
  namespace: string;
  uid: string;
  annotations?: Record<string, string>;
}

export interface Sandbox {
  id: string;
  pod: PodSpec;
  /** The pod IP containerd reports (PodSandboxStatus.network.ip). */
  ip: string;
  /** containerd's /run/netns/cni-… for this sandbox, adopted (see adoptNetns). */
  netns: Netns;
  status: PodSandboxStatusResponse;
}

export interface Containerd {
  dir: string;
  socket: string;
  cri: CriClient;
  daemon: Daemon;
  /** RunPodSandbox with kubelet's metadata, labels and annotations, then PodSandboxStatus. */
  runPod(pod: PodSpec): Promise<Sandbox>;
  /** StopPodSandbox then RemovePodSandbox (what kubelet does when a pod goes away). */
  removePod(id: string): Promise<void>;
}

export type Snapshotter = 'native' | 'overlayfs';

/**
 * containerd's config: everything under dir (root, state, sockets, runc state), CRI on the given
 * CNI dirs. `native` (the default) needs nothing from the kernel but copies an image's whole
 * root file system for every container; `overlayfs` (which this kernel has) shares it.
 */
export function containerdConfigToml(dir: string, opts: Pick<ContainerdOptions, 'cniBinDir' | 'cniConfDir'>, snapshotter: Snapshotter = 'native'): string {
  const cri = 'plugins."io.containerd.grpc.v1.cri"';
  const unused = ['btrfs', 'zfs', 'devmapper', 'aufs', 'overlayfs', 'native'].filter((s) => s !== snapshotter).map((s) => `"io.containerd.snapshotter.v1.${s}"`);
  return `version = 2
root = "${dir}/root"
state = "${dir}/state"
# Snapshotters this machine cannot or need not run; CRI uses "${snapshotter}".
disabled_plugins = [${unused.join(', ')}, "io.containerd.internal.v1.opt", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "${dir}/containerd.sock"
[ttrpc]
  address = "${dir}/containerd.ttrpc.sock"
[debug]
  address = ""
[metrics]
  address = ""

[${cri}]
  sandbox_image = "${SANDBOX_IMAGE}"
  # root here lacks CAP_SYS_RESOURCE: never ask for a lower oom_score_adj than containerd's own.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  [${cri}.containerd]
    snapshotter = "${snapshotter}"
    default_runtime_name = "runc"
    [${cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [${cri}.containerd.runtimes.runc.options]
        BinaryName = "${RUNC}"
        Root = "${dir}/runc"
        SystemdCgroup = false
  [${cri}.cni]
    bin_dir = "${opts.cniBinDir}"
    conf_dir = "${opts.cniConfDir}"
    max_conf_num = 1
`;
}

/** Mount points at or below dir (containerd's rootfs and shm mounts), deepest first. */
function mountsUnder(dir: string): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .filter((m) => m === dir || m.startsWith(`${dir}/`))
    .sort((a, b) => b.length - a.length);
}

/** Processes whose argv mentions this containerd's socket: its runc shims. */
function shimPids(socket: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0').includes(socket)) pids.push(Number(entry));
    } catch {
      /* gone meanwhile */
    }
  }
  return pids;
}

/**
 * What survives a containerd killed with sandboxes still running (the test process was
 * interrupted): their runc containers, shims, netns (and with them ptp's veths and routes), libcni
 * cache entries, mounts and cgroups. Synchronous so that it also runs from the exit handler.
 */
function sweepLeftovers(dir: string, socket: string, cgroupParent: string, opts: ContainerdOptions, podUids: Set<string>): void {
  const env = { PATH: '/usr/sbin:/usr/bin' };
  const runcRoot = join(dir, 'runc', CRI_NAMESPACE);
  const ids = existsSync(runcRoot) ? readdirSync(runcRoot) : [];
  for (const id of ids) {
    spawnSync(RUNC, ['--root', runcRoot, 'kill', id, 'KILL'], { stdio: 'ignore', env });
    spawnSync(RUNC, ['--root', runcRoot, 'delete', '--force', id], { stdio: 'ignore', env });
  }
  // containerd keeps no file naming its netns before the sandbox container exists: recognize them
  // by an address in the pod subnet.
  const podPrefix = opts.podSubnet.replace(/0\/24$/, '');
  for (const name of readdirSync(NETNS_DIR).filter((n) => n.startsWith('cni-'))) {
    const addrs = spawnSync(IP, ['-n', name, '-4', '-o', 'addr', 'show'], { encoding: 'utf8', env }).stdout ?? '';
    if (addrs.includes(`inet ${podPrefix}`)) spawnSync(IP, ['netns', 'del', name], { stdio: 'ignore', env });
  }
  // libcni's cache entries (ours and containerd's loopback network) carry the pod's CNI_ARGS.
  for (const entry of existsSync(LIBCNI_CACHE) ? readdirSync(LIBCNI_CACHE) : []) {
    const path = join(LIBCNI_CACHE, entry);
    try {
      const cached = JSON.parse(readFileSync(path, 'utf8')) as { cniArgs?: Array<[string, string]> };
      if (cached.cniArgs?.some(([k, v]) => k === 'K8S_POD_UID' && podUids.has(v))) rmSync(path, { force: true });
    } catch {
      /* not a cache entry we can read */
    }
  }
  for (const pid of shimPids(socket)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
  for (const m of mountsUnder(dir)) spawnSync(UMOUNT, ['-l', m], { stdio: 'ignore', env });
  removeCgroupTree(cgroupParent);
}

/** Poll CRI Status until the runtime and its network (the CNI config) are ready. */
async function waitReady(cri: CriClient, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    try {
      const conditions = await cri.status();
      if (conditions.every((c) => c.status)) return;
      last = JSON.stringify(conditions);
    } catch (err) {
      last = String(err);
    }
    await sleep(100);
  }
  throw new Error(`containerd CRI not ready within ${timeoutMs} ms: ${last}`);
}

/** Start containerd with the CRI plugin on the given CNI dirs and the local sandbox image imported. */
export async function startContainerd(opts: ContainerdOptions): Promise<Containerd> {
  const dir = makeTempDir('icni-ctd-');
  const socket = join(dir, 'containerd.sock');
  const cgroupParent = `/icni-ctd-${process.pid}`;
  const archive = await buildPauseImageArchive(join(dir, 'image'), SANDBOX_IMAGE);
  const config = join(dir, 'config.toml');
  writeFileSync(config, containerdConfigToml(dir, opts));
  mkdirSync(join(dir, 'logs'));
  const podUids = new Set<string>();
  registerCleanup(`containerd leftovers in ${dir}`, () => sweepLeftovers(dir, socket, cgroupParent, opts, podUids));

  const daemon = await startDaemon([CONTAINERD, '--config', config], {
    label: `containerd ${socket}`,
    ready: /containerd successfully booted/,
    timeoutMs: 20_000,
    detached: true,
  });
  const cri = criClient(socket);
  // Before the daemon is stopped: take every sandbox down the way kubelet would.
  const inFlight = new Set<Promise<unknown>>();
  registerCleanup(
    `containerd sandboxes in ${dir}`,
    () => {
      // From an exit handler: a helper process does the CRI calls, and waits out the RunPodSandbox
      // calls this process left in flight.
      spawnSync(process.execPath, ['--import', 'tsx', CRI_SWEEP, socket], { cwd: REPO_ROOT, stdio: 'ignore', timeout: 90_000 });
      cri.close();
    },
    async () => {
      await Promise.allSettled(inFlight);
      await removeAllSandboxes(cri, 0).catch(() => undefined);
      cri.close();
    },
  );
  await waitReady(cri, 20_000);
  await runOk([CTR, '--address', socket, '--namespace', CRI_NAMESPACE, 'images', 'import', '--snapshotter', 'native', archive]);

  const startPod = async (pod: PodSpec): Promise<Sandbox> => {
    const logDirectory = join(dir, 'logs', `${pod.namespace}_${pod.name}_${pod.uid}`);
    const id = await cri.runPodSandbox({
      metadata: { name: pod.name, namespace: pod.namespace, uid: pod.uid, attempt: 0 },
      hostname: pod.name,
      logDirectory,
      dnsConfig: {},
      labels: { 'io.kubernetes.pod.name': pod.name, 'io.kubernetes.pod.namespace': pod.namespace, 'io.kubernetes.pod.uid': pod.uid },
      annotations: pod.annotations ?? {},
      linux: { cgroupParent, securityContext: { namespaceOptions: { network: 'POD' } } },
    });
    const status = await cri.podSandboxStatus(id, true);
    const info = JSON.parse(status.info.info ?? '{}') as { runtimeSpec?: { linux?: { namespaces?: Array<{ type: string; path?: string }> } } };
    const netnsPath = info.runtimeSpec?.linux?.namespaces?.find((n) => n.type === 'network')?.path;
    if (!netnsPath) throw new Error(`sandbox ${id}: no network namespace in its runtime spec`);
    return { id, pod, ip: status.status.network?.ip ?? '', netns: adoptNetns(netnsPath), status };
  };

  const runPod = (pod: PodSpec): Promise<Sandbox> => {
    podUids.add(pod.uid);
    const started = startPod(pod);
    inFlight.add(started);
    void started.catch(() => undefined).finally(() => inFlight.delete(started));
    return started;
  };

  const removePod = async (id: string): Promise<void> => {
    await cri.stopPodSandbox(id);
    await cri.removePodSandbox(id);
  };

  return { dir, socket, cri, daemon, runPod, removePod };
}
