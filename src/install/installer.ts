import { mkdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { NotRegularFile } from '../files.ts';
import { copyFileAtomic, existsNoFollow, readDirectoryFiles, readHostFile, writeFileAtomic, type RegularFile } from './files.ts';
import { renderKubeconfig } from './kubeconfig.ts';
import {
  candidateNames,
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
/** Directories the installer makes (and their missing parents) get this mode whatever the umask. */
export const DIR_MODE = 0o755;

/** Each copy of the executable this installer made, by path: the file (device and inode) it put there. */
export type InstalledBinaries = ReadonlyMap<string, { dev: number; ino: number }>;

export function installBinary(settings: InstallSettings, source: string, log: Logger): InstalledBinaries {
  const installed = new Map<string, { dev: number; ino: number }>();
  for (const dir of settings.binDirs) {
    mkdirSync(dir, { recursive: true, mode: DIR_MODE });
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
  const primary = primaryConfig(textsOf(readDirectoryFiles(settings.netDir, isConfigFileName).files), settings.confName);
  if (primary === undefined) missing.push(`${settings.netDir}: no network config`);
  else if (primary.single || !entryIsInPlace(primary.list, settings.entry)) missing.push(`${join(settings.netDir, primary.fileName)}: our entry is not in place`);
  return missing;
}

function textsOf(files: ReadonlyMap<string, RegularFile>): Map<string, string> {
  return new Map([...files].map(([name, file]) => [name, file.text]));
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
  if (isUpToDate(path, text)) return;
  // A link, FIFO or anything else at the name is replaced, never followed or read.
  writeFileAtomic(path, text, { mode: 0o600 });
  log.info({ path, server: settings.api.server }, 'wrote the kubeconfig');
}

function isUpToDate(path: string, text: string): boolean {
  try {
    const current = readHostFile(path);
    return current?.text === text && (current.owner.mode & 0o777) === 0o600;
  } catch (err) {
    if (err instanceof NotRegularFile) return false;
    throw err;
  }
}

/** placed: our entry was there already; inserted: it was written now; refused: a config the
 * runtime may use is not a regular file, and nothing is written until it is. */
export type Placement = 'placed' | 'inserted' | 'no-config' | 'changed-meanwhile' | 'refused';

/**
 * Puts our entry last in the runtime's config and takes it out of every other config file, so it
 * follows the primary when another file starts sorting first.
 */
export function placeEntry(settings: InstallSettings, log: Logger): Placement {
  const { files, refused } = readDirectoryFiles(settings.netDir, isConfigFileName);
  const primary = primaryConfig(textsOf(files), settings.confName);
  // The runtime would try a link or a special file that comes before the primary: what it holds
  // cannot be known without following it, so nothing is changed rather than guessed.
  const candidates = candidateNames([...files.keys(), ...refused.keys()], settings.confName);
  const blocking = candidates.slice(0, primary === undefined ? candidates.length : candidates.indexOf(primary.fileName)).filter((name) => refused.has(name));
  if (blocking.length > 0) {
    log.error({ dir: settings.netDir, files: blocking.map((name) => refused.get(name)) }, 'a network config the runtime may use is not a regular file: not touching it');
    return 'refused';
  }
  for (const [fileName, file] of files) {
    if (fileName === primary?.fileName) continue;
    const config = parseNetConfig(fileName, file.text);
    if (config && !config.single && hasEntry(config.list)) {
      if (!rewrite(settings.netDir, config, file, withoutEntry(config.list), log)) return 'changed-meanwhile';
    }
  }
  if (primary === undefined) return 'no-config';
  if (!primary.single && entryIsInPlace(primary.list, settings.entry)) return 'placed';
  return rewrite(settings.netDir, primary, files.get(primary.fileName)!, withEntry(primary.list, settings.entry), log) ? 'inserted' : 'changed-meanwhile';
}

/** Takes our entry out of every config file in net.d (the other plugins stay as they are). */
export function removeEntries(settings: InstallSettings, log: Logger): void {
  for (const [fileName, file] of readDirectoryFiles(settings.netDir, isConfigFileName).files) {
    const config = parseNetConfig(fileName, file.text);
    if (config && !config.single && hasEntry(config.list)) rewrite(settings.netDir, config, file, withoutEntry(config.list), log);
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
 * Writes `list` in place of `config`, keeping the mode and owner it was read with. A single-plugin
 * file becomes a .conflist of the same stem and goes away. Returns false, writing nothing, when the
 * file no longer holds what was read (another writer got there first; its change brings another round).
 *
 * A .conflist of that stem may exist already (`10-bridge.conf` beside `10-bridge.conflist`, e.g.
 * our own earlier conversion after the primary plugin wrote its .conf again). The runtime does not
 * read it while the .conf is there (libcni sorts `X.conf` before `X.conflist`; a `.json` is the
 * primary only when CNI_CONF_NAME names it), so it is replaced: the rename puts the list in force
 * before the .conf goes, and at no moment is the primary's network missing or half-written.
 */
function rewrite(dir: string, config: NetConfig, read: RegularFile, list: Conflist, log: Logger): boolean {
  const source = join(dir, config.fileName);
  const target = join(dir, conflistFileName(config));
  let current: RegularFile | undefined;
  try {
    current = readHostFile(source);
  } catch (err) {
    if (err instanceof NotRegularFile) return false;
    throw err;
  }
  if (current?.text !== read.text) return false;
  if (config.single && existsNoFollow(target)) log.warn({ path: target, by: source }, 'replacing the .conflist of the same name with the config in use, chained');
  writeFileAtomic(target, renderConflist(list), read.owner);
  if (config.single) rmSync(source);
  log.info({ path: target, plugins: list.plugins.map((p) => p.type) }, hasEntry(list) ? 'inserted our entry' : 'removed our entry');
  return true;
}
