// The real cluster's images, made on this machine (there is no registry): the plugin's image from
// the Dockerfile (`prebuilt` target, as the image test builds it), the stand-in for Istio's proxy
// image (cluster/standin), and the pod sandbox image; all imported into containerd's k8s.io
// namespace. The two podman-built archives are kept in test/.work keyed by what went into them,
// so an `up` with nothing changed imports without building.
import { createHash } from 'node:crypto';
import { copyFileSync, createReadStream, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { WORK_DIR } from './cnitool.ts';
import { DEFAULT_ISTIO_CNI_BIN, REPO_ROOT } from './conflist.ts';
import { CTR, SANDBOX_IMAGE, type Snapshotter } from './containerd.ts';
import { BASE_IMAGE, baseRootfsTarball, makePodman } from './image-build.ts';
import { buildPauseImageArchive } from './oci-image.ts';
import { makeTempDir, minimalEnv, runOk } from './proc.ts';

/** The image cluster/values.yaml names for the DaemonSet. */
export const PLUGIN_IMAGE = 'localhost/istio-cni:cluster';
/** The proxy image the injected pods name (cluster/inject/overrides.yaml: hub, image, tag). */
export const PROXY_IMAGE = 'localhost/icni-proxy-standin:cluster';

export const GO = '/usr/local/go/bin/go';
const STANDIN_DIR = join(REPO_ROOT, 'cluster', 'standin');
const STANDIN_BIN = join(WORK_DIR, 'standin');
const IMAGES_DIR = join(WORK_DIR, 'cluster-images');

function newestMtime(dir: string): number {
  return Math.max(...readdirSync(dir).map((f) => statSync(join(dir, f)).mtimeMs));
}

/** cluster/standin built static into test/.work/standin (again when a source file is newer). */
export async function buildStandin(): Promise<string> {
  if (existsSync(STANDIN_BIN) && statSync(STANDIN_BIN).mtimeMs >= newestMtime(STANDIN_DIR)) return STANDIN_BIN;
  mkdirSync(WORK_DIR, { recursive: true });
  const tmp = `${STANDIN_BIN}.${process.pid}.tmp`;
  await runOk([GO, 'build', '-trimpath', '-ldflags', '-s -w', '-o', tmp, '.'], {
    cwd: STANDIN_DIR,
    env: minimalEnv({ HOME: process.env.HOME ?? '/root', CGO_ENABLED: '0', GOTOOLCHAIN: 'local', GOFLAGS: '-mod=mod' }),
    timeoutMs: 300_000,
  });
  renameSync(tmp, STANDIN_BIN);
  return STANDIN_BIN;
}

function sha256File(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const hash = createHash('sha256');
    createReadStream(path).on('data', (d) => hash.update(d)).on('error', reject).on('end', () => resolve(hash.digest('hex')));
  });
}

/**
 * One docker-archive holding the plugin and proxy images, built with podman when their inputs
 * (the executable, the stand-in, the Dockerfile and Containerfile, the base rootfs) changed.
 */
async function podmanArchive(): Promise<string> {
  const standin = await buildStandin();
  const base = await baseRootfsTarball();
  const inputs = [DEFAULT_ISTIO_CNI_BIN, standin, join(REPO_ROOT, 'Dockerfile'), join(STANDIN_DIR, 'Containerfile'), base];
  const key = createHash('sha256').update((await Promise.all(inputs.map(sha256File))).join(' ')).digest('hex').slice(0, 16);
  const dir = join(IMAGES_DIR, key);
  const archive = join(dir, 'images.tar');
  if (existsSync(join(dir, '.complete'))) return archive;

  rmSync(IMAGES_DIR, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const podman = makePodman();
  try {
    await podman.ok(['import', base, BASE_IMAGE], 300_000);
    await podman.ok(['build', '--isolation=chroot', '--pull=never', '--target', 'prebuilt', '--tag', PLUGIN_IMAGE, '.'], 600_000);
    const context = makeTempDir('icni-standin-ctx-');
    copyFileSync(standin, join(context, 'standin'));
    copyFileSync(join(STANDIN_DIR, 'Containerfile'), join(context, 'Containerfile'));
    await podman.ok(['build', '--isolation=chroot', '--pull=never', '--tag', PROXY_IMAGE, context], 600_000);
    rmSync(context, { recursive: true, force: true });
    // One archive: the layers the two images share are in it once.
    await podman.ok(['save', '--multi-image-archive', '--format', 'docker-archive', '--output', archive, PLUGIN_IMAGE, PROXY_IMAGE], 600_000);
  } finally {
    await podman.remove();
  }
  writeFileSync(join(dir, '.complete'), '');
  return archive;
}

/** Build (or reuse) every image the cluster runs and import them into containerd's k8s.io namespace. */
export async function importClusterImages(containerdSocket: string, workDir: string, snapshotter: Snapshotter): Promise<void> {
  const archives = [await buildPauseImageArchive(join(workDir, 'pause'), SANDBOX_IMAGE), await podmanArchive()];
  for (const archive of archives) {
    await runOk([CTR, '--address', containerdSocket, '--namespace', 'k8s.io', 'images', 'import', '--snapshotter', snapshotter, archive], { timeoutMs: 600_000 });
  }
}

/** The image a rolling update of the DaemonSet goes to: the plugin's image with another build of the executable. */
export const UPGRADE_IMAGE = 'localhost/istio-cni:upgrade';
const UPGRADE_DIR = join(WORK_DIR, 'cluster-upgrade');

/** The version the upgrade's executable reports (its User-Agent, the installer's log): package.json's + "upgrade". */
export function upgradeVersion(): string {
  return `${(JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string }).version}+upgrade`;
}

/**
 * A second istio-cni executable from the same sources, built with another version (so its bytes
 * differ: the node's copy tells which image installed it), in test/.work/cluster-upgrade (again
 * when a source is newer).
 */
export async function buildUpgradeExecutable(): Promise<string> {
  const out = join(UPGRADE_DIR, 'istio-cni');
  await runOk([process.execPath, join(REPO_ROOT, 'build', 'build.mjs'), '--if-stale', '--out', out], {
    cwd: REPO_ROOT,
    env: { ...process.env, ISTIO_CNI_VERSION: upgradeVersion() },
    timeoutMs: 600_000,
  });
  return out;
}

/**
 * UPGRADE_IMAGE (the Dockerfile's `prebuilt` target around the upgrade's executable) imported into
 * the node's containerd; the archive is kept in test/.work/cluster-upgrade, keyed by its inputs.
 */
export async function importUpgradeImage(containerdSocket: string, snapshotter: Snapshotter): Promise<string> {
  const executable = await buildUpgradeExecutable();
  const base = await baseRootfsTarball();
  const inputs = [executable, join(REPO_ROOT, 'Dockerfile'), base];
  const key = createHash('sha256').update((await Promise.all(inputs.map(sha256File))).join(' ')).digest('hex').slice(0, 16);
  const archive = join(UPGRADE_DIR, `image-${key}.tar`);
  if (!existsSync(archive)) {
    for (const old of readdirSync(UPGRADE_DIR).filter((f) => f.startsWith('image-'))) rmSync(join(UPGRADE_DIR, old), { force: true });
    const context = makeTempDir('icni-upgrade-ctx-');
    mkdirSync(join(context, 'dist'));
    copyFileSync(executable, join(context, 'dist', 'istio-cni'));
    copyFileSync(join(REPO_ROOT, 'Dockerfile'), join(context, 'Dockerfile'));
    const podman = makePodman();
    try {
      await podman.ok(['import', base, BASE_IMAGE], 300_000);
      await podman.ok(['build', '--isolation=chroot', '--pull=never', '--target', 'prebuilt', '--tag', UPGRADE_IMAGE, context], 600_000);
      await podman.ok(['save', '--format', 'docker-archive', '--output', `${archive}.tmp`, UPGRADE_IMAGE], 600_000);
    } finally {
      await podman.remove();
      rmSync(context, { recursive: true, force: true });
    }
    renameSync(`${archive}.tmp`, archive);
  }
  await runOk([CTR, '--address', containerdSocket, '--namespace', 'k8s.io', 'images', 'import', '--snapshotter', snapshotter, archive], { timeoutMs: 600_000 });
  return executable;
}
