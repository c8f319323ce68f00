import { closeSync, copyFileSync, fchmodSync, fchownSync, fsyncSync, openSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

export interface Ownership {
  mode: number;
  uid: number;
  gid: number;
}

/** A temp file next to `path` whose name no runtime loads (it starts with a dot and ends in .tmp). */
function tempPathFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.istio-cni.tmp`);
}

/**
 * Replaces `path` in one rename: readers see the old content or the new, never part of it. The
 * content is on disk before the rename, so a crash cannot leave an empty file behind either.
 */
export function writeFileAtomic(path: string, content: string | Buffer, owner: Partial<Ownership> & { mode: number }): void {
  const temp = tempPathFor(path);
  rmSync(temp, { force: true });
  const fd = openSync(temp, 'wx', owner.mode);
  try {
    const bytes = typeof content === 'string' ? Buffer.from(content) : content;
    for (let written = 0; written < bytes.length; ) written += writeSync(fd, bytes, written);
    finishTemp(fd, owner);
  } finally {
    closeSync(fd);
  }
  renameSync(temp, path);
}

/** Copies `source` over `path` the same way: an executable is never seen half-written. */
export function copyFileAtomic(source: string, path: string, mode: number): void {
  const temp = tempPathFor(path);
  rmSync(temp, { force: true });
  copyFileSync(source, temp);
  const fd = openSync(temp, 'r+');
  try {
    finishTemp(fd, { mode });
  } finally {
    closeSync(fd);
  }
  renameSync(temp, path);
}

function finishTemp(fd: number, owner: Partial<Ownership> & { mode: number }): void {
  fchmodSync(fd, owner.mode);
  if (owner.uid !== undefined && owner.gid !== undefined) fchownSync(fd, owner.uid, owner.gid);
  fsyncSync(fd);
}

export function ownershipOf(path: string): Ownership {
  const stat = statSync(path);
  return { mode: stat.mode & 0o7777, uid: stat.uid, gid: stat.gid };
}

/** The regular files of a directory and their contents (files that vanish meanwhile are left out). */
export function readDirectoryFiles(dir: string, wanted: (fileName: string) => boolean): Map<string, string> {
  const files = new Map<string, string>();
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    if (!wanted(entry.name) || !(entry.isFile() || entry.isSymbolicLink())) continue;
    const text = readIfPresent(join(dir, entry.name));
    if (text !== undefined) files.set(entry.name, text);
  }
  return files;
}

export function readIfPresent(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'EISDIR') return undefined;
    throw err;
  }
}
