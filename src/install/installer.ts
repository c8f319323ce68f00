import { mkdirSync, readFileSync, rmSync } from 'node:fs';
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

export function installBinary(settings: InstallSettings, source: string, log: Logger): void {
  for (const dir of settings.binDirs) {
    mkdirSync(dir, { recursive: true });
    const path = join(dir, BINARY_NAME);
    copyFileAtomic(source, path, 0o755);
    log.info({ path, source }, 'installed the plugin executable');
  }
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

/** placed: our entry was there already; inserted: it was written now. */
export type Placement = 'placed' | 'inserted' | 'no-config' | 'changed-meanwhile';

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
  return rewrite(settings.netDir, primary, text, withEntry(primary.list, settings.entry), log) ? 'inserted' : 'changed-meanwhile';
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
 */
function rewrite(dir: string, config: NetConfig, expected: string, list: Conflist, log: Logger): boolean {
  const source = join(dir, config.fileName);
  const target = join(dir, conflistFileName(config));
  if (readIfPresent(source) !== expected) return false;
  if (config.single && readIfPresent(target) !== undefined) {
    throw new Error(`cannot turn ${source} into a list: ${target} exists`);
  }
  writeFileAtomic(target, renderConflist(list), ownershipOf(source));
  if (config.single) rmSync(source);
  log.info({ path: target, plugins: list.plugins.map((p) => p.type) }, hasEntry(list) ? 'inserted our entry' : 'removed our entry');
  return true;
}
