import { existsSync, mkdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { copyFileAtomic, ownershipOf, readDirectoryFiles, readIfPresent, writeFileAtomic } from './files.ts';
import { renderKubeconfig } from './kubeconfig.ts';
import {
  conflistFileName,
  entryIsInPlace,
  hasEntry,
  isConfigFileName,
  parseNetConfig,
  PLUGIN_TYPE,
  primaryConfig,
  renderConflist,
  withEntry,
  withoutEntry,
  type Conflist,
  type NetConfig,
} from './netconf.ts';
import type { InstallSettings } from './settings.ts';

/** The file name in the bin dirs is the plugin type: that is how the runtime finds it. */
const BINARY_NAME = PLUGIN_TYPE;

/** Each copy of the executable this installer made, by path: the file (device and inode) it put there. */
export type InstalledBinaries = ReadonlyMap<string, { dev: number; ino: number }>;

export function installBinary(settings: InstallSettings, source: string, log: Logger): InstalledBinaries {
  const installed = new Map<string, { dev: number; ino: number }>();
  for (const dir of settings.binDirs) {
    mkdirSync(dir, { recursive: true });
    const path = join(dir, BINARY_NAME);
    copyFileAtomic(source, path, 0o755);
    const { dev, ino } = statSync(path);
    installed.set(path, { dev, ino });
    log.info({ path, source }, 'installed the plugin executable');
  }
  return installed;
}

/**
 * What a pod starting on this node now would lack, read from the host: the executable this
 * installer put in each bin dir, the kubeconfig, our entry in the config the runtime uses (missing
 * while calico's rewrite waits for ours). Empty: the plugin is ready.
 */
export function missingPieces(settings: InstallSettings, binaries: InstalledBinaries): string[] {
  const missing: string[] = [];
  for (const [path, installed] of binaries) {
    const now = statIfPresent(path);
    if (now?.dev !== installed.dev || now.ino !== installed.ino) missing.push(`${path}: not the executable this installer put there`);
  }
  if (settings.api !== undefined && statIfPresent(join(settings.netDir, settings.kubeconfigName)) === undefined) {
    missing.push(`${join(settings.netDir, settings.kubeconfigName)}: missing`);
  }
  const primary = primaryConfig(readDirectoryFiles(settings.netDir, isConfigFileName), settings.confName);
  if (primary === undefined) missing.push(`${settings.netDir}: no network config`);
  else if (primary.single || !entryIsInPlace(primary.list, settings.entry)) missing.push(`${join(settings.netDir, primary.fileName)}: our entry is not in place`);
  return missing;
}

function statIfPresent(path: string): { dev: number; ino: number } | undefined {
  return statSync(path, { throwIfNoEntry: false });
}

/** Writes the kubeconfig when its content would change (first run, rotated token, new CA). */
export function syncKubeconfig(settings: InstallSettings, log: Logger): void {
  if (settings.api === undefined) return;
  const account = {
    token: readFileSync(join(settings.serviceAccountDir, 'token'), 'utf8').trim(),
    ca: settings.api.skipTlsVerify ? Buffer.alloc(0) : readFileSync(join(settings.serviceAccountDir, 'ca.crt')),
  };
  const path = join(settings.netDir, settings.kubeconfigName);
  const text = renderKubeconfig(settings.api, account);
  if (readIfPresent(path) === text && (ownershipOf(path).mode & 0o777) === 0o600) return;
  writeFileAtomic(path, text, { mode: 0o600 });
  log.info({ path, server: settings.api.server }, 'wrote the kubeconfig');
}

export type Placement = 'placed' | 'no-config' | 'changed-meanwhile';

/**
 * Puts our entry last in the runtime's config and takes it out of every other config file, so it
 * follows the primary when another file starts sorting first.
 */
export function placeEntry(settings: InstallSettings, log: Logger): Placement {
  const files = readDirectoryFiles(settings.netDir, isConfigFileName);
  const primary = primaryConfig(files, settings.confName);
  for (const [fileName, text] of files) {
    if (fileName === primary?.fileName) continue;
    const config = parseNetConfig(fileName, text);
    if (config && !config.single && hasEntry(config.list)) {
      if (!rewrite(settings.netDir, config, text, withoutEntry(config.list), log)) return 'changed-meanwhile';
    }
  }
  if (primary === undefined) return 'no-config';
  if (!primary.single && entryIsInPlace(primary.list, settings.entry)) return 'placed';
  const text = files.get(primary.fileName)!;
  return rewrite(settings.netDir, primary, text, withEntry(primary.list, settings.entry), log) ? 'placed' : 'changed-meanwhile';
}

/** Takes our entry out of every config file in net.d (the other plugins stay as they are). */
export function removeEntries(settings: InstallSettings, log: Logger): void {
  for (const [fileName, text] of readDirectoryFiles(settings.netDir, isConfigFileName)) {
    const config = parseNetConfig(fileName, text);
    if (config && !config.single && hasEntry(config.list)) rewrite(settings.netDir, config, text, withoutEntry(config.list), log);
  }
}

export function removeKubeconfig(settings: InstallSettings, log: Logger): void {
  if (settings.api === undefined) return;
  const path = join(settings.netDir, settings.kubeconfigName);
  rmSync(path, { force: true });
  log.info({ path }, 'removed the kubeconfig');
}

export function removeBinary(settings: InstallSettings, log: Logger): void {
  for (const dir of settings.binDirs) {
    const path = join(dir, BINARY_NAME);
    rmSync(path, { force: true });
    log.info({ path }, 'removed the plugin executable');
  }
}

/**
 * Writes `list` in place of `config`, keeping its mode and owner. A single-plugin file becomes a
 * .conflist of the same stem and goes away. Returns false, writing nothing, when the file no
 * longer holds `expected` (another writer got there first; its change brings another round).
 *
 * A .conflist of that stem may exist already (`10-bridge.conf` beside `10-bridge.conflist`, e.g.
 * our own earlier conversion after the primary plugin wrote its .conf again). The runtime does not
 * read it while the .conf is there (libcni sorts `X.conf` before `X.conflist`; a `.json` is the
 * primary only when CNI_CONF_NAME names it), so it is replaced: the rename puts the list in force
 * before the .conf goes, and at no moment is the primary's network missing or half-written.
 */
function rewrite(dir: string, config: NetConfig, expected: string, list: Conflist, log: Logger): boolean {
  const source = join(dir, config.fileName);
  const target = join(dir, conflistFileName(config));
  if (readIfPresent(source) !== expected) return false;
  if (config.single && existsSync(target)) log.warn({ path: target, by: source }, 'replacing the .conflist of the same name with the config in use, chained');
  writeFileAtomic(target, renderConflist(list), ownershipOf(source));
  if (config.single) rmSync(source);
  log.info({ path: target, plugins: list.plugins.map((p) => p.type) }, hasEntry(list) ? 'inserted our entry' : 'removed our entry');
  return true;
}
