// A pod sandbox ("pause") image made on this machine, no registry: test/helpers/pause.c compiled
// static with gcc, put in a one-layer OCI image layout and archived for `ctr images import`.
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from './conflist.ts';
import { WORK_DIR } from './cnitool.ts';
import { runOk } from './proc.ts';

export const GCC = '/usr/bin/gcc';
export const TAR = '/usr/bin/tar';
export const PAUSE_SRC = join(REPO_ROOT, 'test', 'helpers', 'pause.c');
export const PAUSE_BIN = join(WORK_DIR, 'pause');

function mtimeMs(path: string): number | undefined {
  try {
    return statSync(path).mtimeMs;
  } catch {
    return undefined;
  }
}

/** test/.work/pause, rebuilt when pause.c is newer (private file renamed into place: safe in parallel). */
export async function buildPauseBinary(): Promise<string> {
  const bin = mtimeMs(PAUSE_BIN);
  if (bin !== undefined && bin >= mtimeMs(PAUSE_SRC)!) return PAUSE_BIN;
  mkdirSync(WORK_DIR, { recursive: true });
  const tmp = `${PAUSE_BIN}.${process.pid}.tmp`;
  await runOk([GCC, '-static', '-Os', '-s', '-o', tmp, PAUSE_SRC]);
  renameSync(tmp, PAUSE_BIN);
  return PAUSE_BIN;
}

interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
}

/** Store bytes as a content-addressed blob of the layout; returns its descriptor. */
function putBlob(layout: string, mediaType: string, bytes: Buffer): Descriptor {
  const hex = createHash('sha256').update(bytes).digest('hex');
  writeFileSync(join(layout, 'blobs', 'sha256', hex), bytes);
  return { mediaType, digest: `sha256:${hex}`, size: bytes.length };
}

/**
 * Write `<dir>/pause-oci.tar`: an OCI image layout holding one image named `ref` whose only layer
 * is /pause and whose entrypoint is ["/pause"]. Returns the archive's path.
 */
export async function buildPauseImageArchive(dir: string, ref: string): Promise<string> {
  const pause = await buildPauseBinary();
  const rootfs = join(dir, 'rootfs');
  const layout = join(dir, 'layout');
  mkdirSync(rootfs, { recursive: true });
  mkdirSync(join(layout, 'blobs', 'sha256'), { recursive: true });
  writeFileSync(join(rootfs, 'pause'), readFileSync(pause), { mode: 0o755 });

  const layerTar = join(dir, 'layer.tar');
  await runOk([TAR, '--numeric-owner', '--owner=0', '--group=0', '--mtime=@0', '-C', rootfs, '-cf', layerTar, 'pause']);
  const layer = putBlob(layout, 'application/vnd.oci.image.layer.v1.tar', readFileSync(layerTar));
  const config = putBlob(layout, 'application/vnd.oci.image.config.v1+json', Buffer.from(JSON.stringify({
    architecture: 'amd64',
    os: 'linux',
    config: { Entrypoint: ['/pause'] },
    rootfs: { type: 'layers', diff_ids: [layer.digest] },
  })));
  const manifest = putBlob(layout, 'application/vnd.oci.image.manifest.v1+json', Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config,
    layers: [layer],
  })));
  // ctr names the imported image after this annotation.
  const index = { schemaVersion: 2, manifests: [{ ...manifest, annotations: { 'io.containerd.image.name': ref } }] };
  writeFileSync(join(layout, 'index.json'), JSON.stringify(index));
  writeFileSync(join(layout, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));

  const archive = join(dir, 'pause-oci.tar');
  await runOk([TAR, '-C', layout, '-cf', archive, 'oci-layout', 'index.json', 'blobs']);
  rmSync(rootfs, { recursive: true, force: true });
  return archive;
}
