import { closeSync, openSync, readFileSync, readlinkSync, statSync, statfsSync } from 'node:fs';
import { CniError, ErrorCode } from '../cni/errors.ts';

const NSFS_MAGIC = 0x6e736673;

/**
 * A CNI_NETNS path is trusted only when it is a network namespace and not the one this process runs
 * in: programming the node's own namespace would hijack the node's traffic.
 * Returns false when the path does not exist (a DEL after the sandbox is gone).
 */
export function checkNetnsPath(path: string): boolean {
  let target;
  try {
    target = statSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw new CniError(ErrorCode.InvalidNetns, 'invalid CNI_NETNS', `${path}: ${(err as Error).message}`);
  }
  if (statfsSync(path).type !== NSFS_MAGIC || namespaceKind(path) !== 'net') {
    throw new CniError(ErrorCode.InvalidNetns, 'invalid CNI_NETNS', `${path} is not a network namespace`);
  }
  const own = statSync('/proc/self/ns/net');
  if (target.ino === own.ino && target.dev === own.dev) {
    throw new CniError(ErrorCode.InvalidNetns, 'invalid CNI_NETNS', `${path} is the node's own network namespace`);
  }
  return true;
}

/**
 * Every kind of namespace lives on nsfs; the kind shows in the name the kernel gives an open one:
 * "net:[4026531833]" for a /proc/<pid>/ns link, or, for a bind mount such as /run/netns/<name>,
 * the root of that mount in /proc/self/mountinfo.
 */
function namespaceKind(path: string): string | undefined {
  const fd = openSync(path, 'r');
  try {
    const name = readlinkSync(`/proc/self/fd/${fd}`);
    const kindOf = (text: string | undefined) => /^(\w+):\[\d+\]$/.exec(text ?? '')?.[1];
    if (kindOf(name)) return kindOf(name);
    // mountinfo: id parent dev root mountpoint …; the last mount on a path is the one in effect.
    const mounts = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((line) => line.split(' '));
    const mount = mounts.filter((fields) => fields[4]?.replace(/\\040/g, ' ') === name).at(-1);
    return kindOf(mount?.[3]);
  } finally {
    closeSync(fd);
  }
}
