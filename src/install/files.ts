import { randomBytes } from 'node:crypto';
import { closeSync, constants, fchmodSync, fchownSync, fstatSync, fsyncSync, lstatSync, openSync, readdirSync, readSync, renameSync, rmSync, writeSync, type Stats } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { NotRegularFile, readRegularFile } from '../files.ts';

/**
 * Files in the host's net.d and CNI bin dirs, which other local processes can write too: every file
 * is created exclusively under a name nobody can predict, no link is ever followed, and nothing is
 * read that is not a regular file of a sane size (a FIFO would block the installer, /dev/zero would
 * fill its memory).
 */

export interface Ownership {
  mode: number;
  uid: number;
  gid: number;
}

/** What a regular file held when it was read, and its mode and owner. */
export interface RegularFile {
  text: string;
  owner: Ownership;
}

/** The largest network config or kubeconfig the installer reads (real ones are a few KiB). */
const MAX_READ_BYTES = 1024 * 1024;
const COPY_CHUNK_BYTES = 1024 * 1024;

/**
 * Reads a regular file without following a link or waiting on a FIFO or a device. Undefined when
 * nothing is at the path; NotRegularFile for anything else than a regular file of at most 1 MiB.
 */
export function readHostFile(path: string): RegularFile | undefined {
  try {
    const { bytes, stat } = readRegularFile(path, { maxBytes: MAX_READ_BYTES, followLinks: false });
    return { text: bytes.toString('utf8'), owner: { mode: stat.mode & 0o7777, uid: stat.uid, gid: stat.gid } };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/** Whether anything (a link included, never followed) is at the path. */
export function existsNoFollow(path: string): boolean {
  try {
    lstatSync(path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}

/**
 * The regular files of a directory that `wanted` names, with their contents; the other entries so
 * named (links, FIFOs, devices, directories, oversized files) with why they were not read. Entries
 * that vanish meanwhile are left out.
 */
export function readDirectoryFiles(dir: string, wanted: (fileName: string) => boolean): { files: Map<string, RegularFile>; refused: Map<string, string> } {
  const files = new Map<string, RegularFile>();
  const refused = new Map<string, string>();
  for (const name of readdirSync(dir)) {
    if (!wanted(name)) continue;
    try {
      const file = readHostFile(join(dir, name));
      if (file !== undefined) files.set(name, file);
    } catch (err) {
      if (!(err instanceof NotRegularFile)) throw err;
      refused.set(name, err.message);
    }
  }
  return { files, refused };
}

/**
 * Replaces `path` in one rename: readers see the old content or the new, never part of it, and a
 * failed write leaves the old file as it was. The content is on disk before the rename, so a crash
 * cannot leave an empty file behind either.
 */
export function writeFileAtomic(path: string, content: string | Buffer, owner: Partial<Ownership> & { mode: number }): void {
  const bytes = typeof content === 'string' ? Buffer.from(content) : content;
  replaceAtomically(path, owner, (fd) => {
    for (let written = 0; written < bytes.length; ) written += writeSync(fd, bytes, written);
  });
}

/** Copies `source` over `path` the same way: an executable is never seen half-written. */
export function copyFileAtomic(source: string, path: string, mode: number): void {
  const from = openSync(source, 'r');
  try {
    const chunk = Buffer.alloc(COPY_CHUNK_BYTES);
    replaceAtomically(path, { mode }, (fd) => {
      for (let n = readSync(from, chunk, 0, chunk.length, null); n > 0; n = readSync(from, chunk, 0, chunk.length, null)) {
        for (let written = 0; written < n; ) written += writeSync(fd, chunk, written, n - written);
      }
    });
  } finally {
    closeSync(from);
  }
}

/**
 * Writes a new file next to `path` and renames it over `path`. The temp file is created exclusively
 * (O_EXCL, O_NOFOLLOW) under a random name that no runtime loads (a dot first, .tmp last), so a link
 * planted at the name cannot redirect the write; after the rename `path` must be that very file.
 */
function replaceAtomically(path: string, owner: Partial<Ownership> & { mode: number }, write: (fd: number) => void): void {
  const temp = join(dirname(path), `.${basename(path)}.${randomBytes(8).toString('hex')}.istio-cni.tmp`);
  const fd = openSync(temp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, owner.mode);
  // The descriptor stays open until the check after the rename: while it is, no other file can get
  // this inode's number, so the same number at `path` is this very file.
  try {
    let written: Stats;
    try {
      write(fd);
      fchmodSync(fd, owner.mode);
      if (owner.uid !== undefined && owner.gid !== undefined) fchownSync(fd, owner.uid, owner.gid);
      fsyncSync(fd);
      written = fstatSync(fd);
      renameSync(temp, path);
    } catch (err) {
      // A failed write, or a directory at `path`: the temp file must not stay behind.
      rmSync(temp, { force: true });
      throw err;
    }
    const placed = lstatSync(path);
    if (!placed.isFile() || placed.ino !== written.ino || placed.dev !== written.dev) throw new Error(`${path} was replaced by another process while it was being written`);
  } finally {
    closeSync(fd);
  }
}
