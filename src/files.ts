import { closeSync, constants, fstatSync, openSync, readSync, type Stats } from 'node:fs';

/** Something other than a regular file at a path: a link (when refused), a FIFO, a device, a directory, or a file too large. */
export class NotRegularFile extends Error {}

/**
 * Reads a regular file of at most `maxBytes` without waiting on a FIFO or a device: opened
 * O_NONBLOCK, checked with fstat, read through that descriptor. Without `followLinks` a link at the
 * path is refused too (O_NOFOLLOW). Errors of the open (ENOENT, EACCES) are thrown as they are.
 */
export function readRegularFile(path: string, opts: { maxBytes: number; followLinks: boolean }): { bytes: Buffer; stat: Stats } {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY | (opts.followLinks ? 0 : constants.O_NOFOLLOW));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ELOOP' && !opts.followLinks) throw new NotRegularFile(`${path} is a symbolic link`);
    throw err;
  }
  try {
    const stat = fstatSync(fd);
    if (!stat.isFile()) throw new NotRegularFile(`${path} is ${kindOf(stat)}`);
    const tooLarge = () => new NotRegularFile(`${path} is larger than ${opts.maxBytes} bytes`);
    if (stat.size > opts.maxBytes) throw tooLarge();
    // One byte more than allowed tells a file that grew after the fstat.
    const buffer = Buffer.allocUnsafe(opts.maxBytes + 1);
    let length = 0;
    for (let n = -1; n !== 0 && length < buffer.length; length += n) n = readSync(fd, buffer, length, buffer.length - length, null);
    if (length > opts.maxBytes) throw tooLarge();
    return { bytes: buffer.subarray(0, length), stat };
  } finally {
    closeSync(fd);
  }
}

function kindOf(stat: Stats): string {
  if (stat.isDirectory()) return 'a directory';
  if (stat.isFIFO()) return 'a FIFO';
  if (stat.isSocket()) return 'a socket';
  if (stat.isCharacterDevice() || stat.isBlockDevice()) return 'a device';
  return 'not a regular file';
}
