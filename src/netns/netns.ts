import { closeSync, constants, fstatSync, openSync, readFileSync, readlinkSync, statSync, statfsSync } from 'node:fs';
import { CniError, ErrorCode } from '../cni/errors.ts';

const NSFS_MAGIC = 0x6e736673;

/**
 * A pod's network namespace, opened once. Every program runs in it through this descriptor
 * (src/netns/exec.ts), never by path again: a CNI_NETNS symlink flipped after the check cannot
 * send a command anywhere else.
 */
export class PodNetns {
  constructor(
    readonly path: string,
    readonly fd: number,
  ) {}

  /** Messages name the namespace by the path the runtime gave. */
  toString(): string {
    return this.path;
  }
}

const invalidNetns = (path: string, why: string) => new CniError(ErrorCode.InvalidNetns, 'invalid CNI_NETNS', `${path}${why}`);

/**
 * Opens CNI_NETNS and checks what was opened, not the path: a network namespace, and not the one
 * this process runs in (programming the node's own namespace would hijack the node's traffic).
 * Non-blocking, so a FIFO or a device at the path is refused instead of waited on. Undefined when
 * the path does not exist (a DEL after the sandbox is gone).
 */
export function openPodNetns(path: string): PodNetns | undefined {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw invalidNetns(path, `: ${(err as Error).message}`);
  }
  try {
    const opened = fstatSync(fd);
    const self = `/proc/self/fd/${fd}`;
    if (statfsSync(self).type !== NSFS_MAGIC || !isNetworkNamespace(self, opened.ino)) throw invalidNetns(path, ' is not a network namespace');
    const own = statSync('/proc/self/ns/net');
    if (opened.ino === own.ino && opened.dev === own.dev) throw invalidNetns(path, " is the node's own network namespace");
    return new PodNetns(path, fd);
  } catch (err) {
    closeSync(fd);
    throw err;
  }
}

/**
 * Every kind of namespace lives on nsfs; the kind shows in the name the kernel gives the open file,
 * "net:[4026531833]" for a /proc/<pid>/ns link, or, for a bind mount such as /run/netns/<name>, as
 * the root of a mount in /proc/self/mountinfo. Either way the inode must be the one opened.
 */
function isNetworkNamespace(openFile: string, inode: number): boolean {
  const name = `net:[${inode}]`;
  if (readlinkSync(openFile) === name) return true;
  // mountinfo: id parent dev root mountpoint … - fstype source options
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .some((line) => {
      const fields = line.split(' ');
      return fields[3] === name && fields[fields.indexOf('-') + 1] === 'nsfs';
    });
}
