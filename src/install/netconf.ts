import { isDeepStrictEqual } from 'node:util';
import { z } from 'zod';

/** The extensions container runtimes load network configs from (libcni's ConfFiles). */
const CONFIG_EXTENSIONS = ['.conf', '.conflist', '.json'];
export const PLUGIN_TYPE = 'istio-cni';

const Plugin = z.looseObject({ type: z.string().min(1) });
const Conflist = z.looseObject({ name: z.string().min(1), cniVersion: z.string().optional(), plugins: z.array(Plugin).min(1) });
type Plugin = z.output<typeof Plugin>;
export type Conflist = z.output<typeof Conflist>;

/** A network config file the runtime would accept; a single-plugin file is already wrapped in a list. */
export interface NetConfig {
  fileName: string;
  /** Single-plugin files (.conf/.json) must be rewritten as a .conflist to hold a chain. */
  single: boolean;
  list: Conflist;
}

export function isConfigFileName(fileName: string): boolean {
  return CONFIG_EXTENSIONS.some((ext) => fileName.endsWith(ext));
}

/** undefined when the runtime would skip the file: not JSON, or not a usable plugin (list). */
export function parseNetConfig(fileName: string, text: string): NetConfig | undefined {
  let document: unknown;
  try {
    document = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (fileName.endsWith('.conflist')) {
    // The schema only checks: the document itself is kept so that its key order survives a rewrite.
    return Conflist.safeParse(document).success ? { fileName, single: false, list: document as Conflist } : undefined;
  }
  return Plugin.safeParse(document).success ? { fileName, single: true, list: wrapSingle(fileName, document as Plugin) } : undefined;
}

/** A single-plugin config as a one-element list, keeping its name and cniVersion. */
function wrapSingle(fileName: string, plugin: Plugin): Conflist {
  const name = typeof plugin.name === 'string' && plugin.name !== '' ? plugin.name : fileName.replace(/\.[^.]+$/, '');
  const list: Conflist = { name, plugins: [plugin] };
  if (typeof plugin.cniVersion === 'string') list.cniVersion = plugin.cniVersion;
  return list;
}

/** The name a single-plugin file gets once it holds a list: `10-bridge.conf` -> `10-bridge.conflist`. */
export function conflistFileName(config: NetConfig): string {
  return config.single ? asConflistName(config.fileName) : config.fileName;
}

function asConflistName(fileName: string): string {
  return fileName.replace(/\.(conf|json)$/, '.conflist');
}

/** The files the runtime would try, in its order: every config file by byte order (as libcni sorts), or the named one and its .conflist. */
export function candidateNames(fileNames: Iterable<string>, confName: string | undefined): string[] {
  // A named single-plugin file may already have been turned into its .conflist.
  return confName === undefined ? [...fileNames].filter(isConfigFileName).sort(byteOrder) : [confName, asConflistName(confName)];
}

/**
 * The config the runtime uses: the first candidate that is valid. `files` maps file names to contents.
 */
export function primaryConfig(files: ReadonlyMap<string, string>, confName: string | undefined): NetConfig | undefined {
  for (const fileName of candidateNames(files.keys(), confName)) {
    const text = files.get(fileName);
    const config = text === undefined ? undefined : parseNetConfig(fileName, text);
    if (config) return config;
  }
  return undefined;
}

function byteOrder(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

export function hasEntry(list: Conflist): boolean {
  return list.plugins.some((p) => p.type === PLUGIN_TYPE);
}

/** Every istio-cni entry removed; the other plugins in their order, every other field untouched. */
export function withoutEntry(list: Conflist): Conflist {
  return { ...list, plugins: list.plugins.filter((p) => p.type !== PLUGIN_TYPE) };
}

/** Older istio-cni entries removed, ours appended last: there is never more than one. */
export function withEntry(list: Conflist, entry: Record<string, unknown>): Conflist {
  return { ...list, plugins: [...withoutEntry(list).plugins, { ...entry, type: PLUGIN_TYPE }] };
}

export function entryIsInPlace(list: Conflist, entry: Record<string, unknown>): boolean {
  return isDeepStrictEqual(withEntry(list, entry), list);
}

export function renderConflist(list: Conflist): string {
  return `${JSON.stringify(list, null, 2)}\n`;
}
