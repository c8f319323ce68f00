// Debian's podman 4.3, rootful, with everything of its own in one temp dir so it shares nothing with
// any other podman use on the machine: storage (--root/--runroot, vfs), tmp dir, events log, and a
// containers.conf (CONTAINERS_CONF) selecting runc, cgroupfs and the CNI network backend on the
// test's plugin and conf dirs. Images come from busybox-static through `podman import`: no pull.
//
// podman runs the CNI chain from the machine's root netns and makes the container netns under
// /run/netns (netns-<uuid>); containers' cgroups live under /icni-podman-<pid> in each hierarchy.
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { removeCgroupTree } from './host-net.ts';
import { makeTempDir, minimalEnv, registerCleanup, run, runOk, type RunResult } from './proc.ts';

export const PODMAN = '/usr/bin/podman';
export const BUSYBOX = '/usr/bin/busybox';
const TAR = '/usr/bin/tar';
/** Container ulimits: below this machine's limits (root lacks CAP_SYS_RESOURCE to raise them). */
const ULIMIT = 1024;

export interface PodmanOptions {
  /** CNI plugin directory (cni_plugin_dirs). */
  cniBinDir: string;
  /** CNI conf directory (network_config_dir) holding the test's conflist. */
  cniConfDir: string;
}

export interface Podman {
  dir: string;
  /** `--cgroup-parent` for containers of this instance (cleaned up with it). */
  cgroupParent: string;
  /** Run `podman <args>` against this instance. Never rejects on a non-zero exit. */
  run(args: readonly string[], timeoutMs?: number): Promise<RunResult>;
  /** Like run() but throws unless podman exits 0; returns stdout. */
  runOk(args: readonly string[], timeoutMs?: number): Promise<string>;
  /** `podman import` a rootfs holding only /bin/busybox as `ref`. */
  importBusybox(ref: string): Promise<void>;
}

/** The current soft limit of a resource, from /proc/self/limits ("Max open files" ...). */
function currentLimit(name: string): number {
  const line = readFileSync('/proc/self/limits', 'utf8').split('\n').find((l) => l.startsWith(name));
  const soft = line?.slice(name.length).trim().split(/\s+/)[0];
  return soft === 'unlimited' || soft === undefined ? Infinity : Number(soft);
}

function containersConf(dir: string, opts: PodmanOptions): string {
  const nofile = Math.min(ULIMIT, currentLimit('Max open files'));
  const nproc = Math.min(ULIMIT, currentLimit('Max processes'));
  return `[containers]
default_ulimits = ["nofile=${nofile}:${nofile}", "nproc=${nproc}:${nproc}"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "${dir}/events.log"
tmp_dir = "${dir}/tmp"

[network]
network_backend = "cni"
cni_plugin_dirs = ["${opts.cniBinDir}"]
network_config_dir = "${opts.cniConfDir}"
`;
}

/** A podman of the test's own, configured for the given CNI dirs. */
export function makePodman(opts: PodmanOptions): Podman {
  const dir = makeTempDir('icni-podman-');
  mkdirSync(join(dir, 'tmp'));
  const conf = join(dir, 'containers.conf');
  writeFileSync(conf, containersConf(dir, opts));
  const cgroupParent = `/icni-podman-${process.pid}`;
  const env = minimalEnv({ CONTAINERS_CONF: conf });
  const global = [PODMAN, '--root', join(dir, 'root'), '--runroot', join(dir, 'runroot'), '--storage-driver', 'vfs'];

  registerCleanup(`podman containers in ${dir}`, () => {
    // Removing the containers stops them and runs the chain's DEL; then their cgroups can go.
    spawnSync(global[0]!, [...global.slice(1), 'rm', '--all', '--force', '--time', '0'], { stdio: 'ignore', env });
    removeCgroupTree(cgroupParent);
  });

  const podman: Podman = {
    dir,
    cgroupParent,
    run: (args, timeoutMs = 60_000) => run([...global, ...args], { env, timeoutMs }),
    async runOk(args, timeoutMs) {
      const r = await podman.run(args, timeoutMs);
      if (r.code !== 0) throw new Error(`podman ${args.join(' ')} failed (code ${r.code}): ${r.stderr || r.stdout}`);
      return r.stdout;
    },
    async importBusybox(ref) {
      const rootfs = join(dir, 'busybox-rootfs');
      mkdirSync(join(rootfs, 'bin'), { recursive: true });
      writeFileSync(join(rootfs, 'bin', 'busybox'), readFileSync(BUSYBOX), { mode: 0o755 });
      const tarball = join(dir, 'busybox-rootfs.tar');
      await runOk([TAR, '--numeric-owner', '--owner=0', '--group=0', '-C', rootfs, '-cf', tarball, '.']);
      await podman.runOk(['import', tarball, ref]);
    },
  };
  return podman;
}
