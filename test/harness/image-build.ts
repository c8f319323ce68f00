// Podman with no daemon, no registry and no network, its storage in a temp dir: enough to build
// the Dockerfile (and the real cluster's images) and run the image on this machine (see
// /work/shared/MACHINE-FACTS.md). Not the CNI-runtime podman of podman.ts: this one builds images.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { WORK_DIR } from './cnitool.ts';
import { REPO_ROOT } from './conflist.ts';
import { makeTempDir, minimalEnv, registerCleanup, run as runArgv, runOk, type RunResult } from './proc.ts';

const PODMAN = '/usr/bin/podman';
const DEBOOTSTRAP = '/usr/sbin/debootstrap';
const TAR = '/usr/bin/tar';
/** The base image the Dockerfile names, made locally from Debian's packages. */
export const BASE_IMAGE = 'docker.io/library/debian:bookworm-slim';
const ROOTFS_TARBALL = join(WORK_DIR, 'debian-bookworm-minbase.tar');

function currentLimit(name: string): number {
  const line = readFileSync('/proc/self/limits', 'utf8').split('\n').find((l) => l.startsWith(name));
  const soft = line?.slice(name.length).trim().split(/\s+/)[0];
  return soft === undefined || soft === 'unlimited' ? Infinity : Number(soft);
}

/**
 * A bookworm minbase root file system as a tarball, made once with debootstrap (about 25 s to
 * 2 min, depending on the mirror) and kept in test/.work.
 */
export async function baseRootfsTarball(): Promise<string> {
  if (existsSync(ROOTFS_TARBALL)) return ROOTFS_TARBALL;
  const dir = makeTempDir('icni-rootfs-');
  const rootfs = join(dir, 'rootfs');
  await runOk([DEBOOTSTRAP, '--variant=minbase', 'bookworm', rootfs, 'http://deb.debian.org/debian'], { timeoutMs: 900_000 });
  mkdirSync(WORK_DIR, { recursive: true });
  const partial = `${ROOTFS_TARBALL}.${process.pid}.tmp`;
  await runOk([TAR, '-C', rootfs, '--exclude=./var/cache/apt/*', '--exclude=./var/lib/apt/lists/*', '-cf', partial, '.'], { timeoutMs: 300_000 });
  renameSync(partial, ROOTFS_TARBALL);
  return ROOTFS_TARBALL;
}

export interface Podman {
  /** Runs `podman <args>` against this instance's storage; throws unless it exits 0. */
  ok(args: string[], timeoutMs?: number): Promise<RunResult>;
  run(args: string[], timeoutMs?: number): Promise<RunResult>;
  /** Reset the storage and remove its dir now, rather than at cleanupAll(). */
  remove(): Promise<void>;
}

/** A podman whose images and containers live in a temp dir, removed by cleanupAll(). */
export function makePodman(): Podman {
  const dir = makeTempDir('icni-podman-');
  // Root here lacks CAP_SYS_RESOURCE: container rlimits must not exceed the current ones.
  const nofile = Math.min(1024, currentLimit('Max open files'));
  const nproc = Math.min(1024, currentLimit('Max processes'));
  const conf = join(dir, 'containers.conf');
  writeFileSync(
    conf,
    [
      '[containers]',
      `default_ulimits = ["nofile=${nofile}:${nofile}", "nproc=${nproc}:${nproc}"]`,
      '[engine]',
      'runtime = "runc"',
      'cgroup_manager = "cgroupfs"',
      'events_logger = "file"',
      `events_logfile_path = "${join(dir, 'events.log')}"`,
      '[network]',
      'network_backend = "cni"',
      'cni_plugin_dirs = ["/usr/lib/cni"]',
      `network_config_dir = "${join(dir, 'cni')}"`,
      '',
    ].join('\n'),
  );
  const global = ['--root', join(dir, 'storage'), '--runroot', join(dir, 'run'), '--tmpdir', join(dir, 'tmp'), '--storage-driver', 'overlay'];
  const env = minimalEnv({ CONTAINERS_CONF: conf, HOME: dir, TMPDIR: join(dir, 'tmp') });
  mkdirSync(join(dir, 'tmp'));
  const run = (args: string[], timeoutMs = 120_000) => runArgv([PODMAN, ...global, ...args], { env, timeoutMs, cwd: REPO_ROOT });
  const ok = async (args: string[], timeoutMs?: number) => {
    const r = await run(args, timeoutMs);
    if (r.code !== 0) throw new Error(`podman ${args.join(' ')} failed (${r.code}): ${r.stderr}${r.stdout}`);
    return r;
  };
  // `system reset` removes the containers and images and unmounts the overlays, so the temp dir can go.
  const reset = ['system', 'reset', '--force'];
  const resetNow = registerCleanup(
    `podman storage in ${dir}`,
    () => void spawnSync(PODMAN, [...global, ...reset], { env, stdio: 'ignore' }),
    async () => {
      await ok(reset);
    },
  );
  const remove = async () => {
    await resetNow();
    rmSync(dir, { recursive: true, force: true });
  };
  return { ok, run, remove };
}
