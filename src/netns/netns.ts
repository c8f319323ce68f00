import { statSync, statfsSync } from 'node:fs';
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
  if (statfsSync(path).type !== NSFS_MAGIC) {
    throw new CniError(ErrorCode.InvalidNetns, 'invalid CNI_NETNS', `${path} is not a network namespace`);
  }
  const own = statSync('/proc/self/ns/net');
  if (target.ino === own.ino && target.dev === own.dev) {
    throw new CniError(ErrorCode.InvalidNetns, 'invalid CNI_NETNS', `${path} is the node's own network namespace`);
  }
  return true;
}
