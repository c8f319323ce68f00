// Per-test CNI network configuration lists and CNI_PATH directories.
//
// Tests start from the checked-in example conflist/istio-cni-ptp.conflist and override what
// they need (cniVersion, host-local dataDir, kubeconfig, log_file, iptables_backend, ...).
import { chmodSync, lstatSync, mkdirSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeTempDir } from './proc.ts';

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const EXAMPLE_CONFLIST = join(REPO_ROOT, 'conflist', 'istio-cni-ptp.conflist');
/** The built plugin executable; override with env ISTIO_CNI_BIN. */
export const DEFAULT_ISTIO_CNI_BIN = process.env.ISTIO_CNI_BIN
  ? resolve(process.env.ISTIO_CNI_BIN)
  : join(REPO_ROOT, 'dist', 'istio-cni');
/** Debian's containernetworking-plugins. */
export const DEBIAN_CNI_DIR = '/usr/lib/cni';
export const DEFAULT_SUBNET = '10.200.0.0/24';

export type JsonObject = { [k: string]: unknown };

export interface ConflistJson extends JsonObject {
  cniVersion: string;
  name: string;
  plugins: JsonObject[];
}

export interface ConflistOptions {
  /** Directory to write into (default: a fresh temp dir, removed by cleanupAll()). */
  dir?: string;
  /** Network name (default `istio-cni-test`). */
  netName?: string;
  /** Default 1.0.0 (Debian's plugins reject 1.1.0; libcni refuses CHECK below 0.4.0). */
  cniVersion?: string;
  /** IPv4 range for host-local (default 10.200.0.0/24). Only ever exists inside the test's node netns. */
  subnet?: string;
  /** Optional IPv6 range: makes the pod dual-stack (adds a ::/0 route too). */
  subnet6?: string;
  /** host-local dataDir (default <dir>/ipam). */
  ipamDataDir?: string;
  /** Include the istio-cni plugin (default true). false gives ptp + host-local only. */
  withIstio?: boolean;
  /** istio-cni: kubernetes.kubeconfig */
  kubeconfig?: string;
  /** istio-cni: kubernetes.cni_bin_dir */
  cniBinDir?: string;
  /** istio-cni: kubernetes.exclude_namespaces */
  excludeNamespaces?: string[];
  /** istio-cni: log_file (default <dir>/istio-cni.log, so tests never write /var/log; null = leave unset). */
  logFile?: string | null;
  /** istio-cni: log_level */
  logLevel?: string;
  /** istio-cni: iptables_backend */
  iptablesBackend?: 'nft' | 'legacy' | 'nftables';
  /** Deep-merged into the istio-cni plugin object (a null value deletes the key). */
  istio?: JsonObject;
  /** Deep-merged into the ptp plugin object (a null value deletes the key). */
  ptp?: JsonObject;
  /** Plugins appended after istio-cni. */
  extraPlugins?: JsonObject[];
  /** Replace the plugin list entirely (the other plugin options are then ignored). */
  plugins?: JsonObject[];
  /** File name inside dir (default `<netName>.conflist`). */
  fileName?: string;
}

export interface WrittenConflist {
  /** The NETCONFPATH directory holding the file. */
  confDir: string;
  /** Full path of the .conflist file. */
  path: string;
  netName: string;
  /** host-local's dataDir (its lease files live under <ipamDataDir>/<netName>/). */
  ipamDataDir: string;
  /** istio-cni's log_file as written (undefined without istio-cni or with logFile: null). */
  logFile: string | undefined;
  conflist: ConflistJson;
}

function isPlainObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Deep merge: objects merge recursively, arrays and scalars replace, null deletes the key. */
export function deepMerge<T extends JsonObject>(base: T, patch: JsonObject): T {
  const out: JsonObject = structuredClone(base);
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else if (isPlainObject(v) && isPlainObject(out[k])) out[k] = deepMerge(out[k] as JsonObject, v);
    else if (v !== undefined) out[k] = structuredClone(v);
  }
  return out as T;
}

export function readExampleConflist(): ConflistJson {
  return JSON.parse(readFileSync(EXAMPLE_CONFLIST, 'utf8')) as ConflistJson;
}

/** Build the conflist object (no file written). ipamDataDir is required to keep leases out of /var/lib/cni. */
export function buildConflist(opts: ConflistOptions & { ipamDataDir: string }): ConflistJson {
  const example = readExampleConflist();
  const netName = opts.netName ?? 'istio-cni-test';
  const cniVersion = opts.cniVersion ?? '1.0.0';
  let plugins: JsonObject[];
  if (opts.plugins) {
    plugins = structuredClone(opts.plugins);
  } else {
    const ptpBase = example.plugins.find((p) => p.type === 'ptp');
    const istioBase = example.plugins.find((p) => p.type === 'istio-cni');
    if (!ptpBase || !istioBase) throw new Error(`${EXAMPLE_CONFLIST}: expected a ptp and an istio-cni plugin`);

    const ranges: JsonObject[][] = [[{ subnet: opts.subnet ?? DEFAULT_SUBNET }]];
    const routes: JsonObject[] = [{ dst: '0.0.0.0/0' }];
    if (opts.subnet6) {
      ranges.push([{ subnet: opts.subnet6 }]);
      routes.push({ dst: '::/0' });
    }
    let ptp = deepMerge(ptpBase, { ipam: { type: 'host-local', ranges, routes, dataDir: opts.ipamDataDir } });
    if (opts.ptp) ptp = deepMerge(ptp, opts.ptp);
    plugins = [ptp];

    if (opts.withIstio ?? true) {
      let istio = structuredClone(istioBase);
      const kube: JsonObject = {};
      if (opts.kubeconfig !== undefined) kube.kubeconfig = opts.kubeconfig;
      if (opts.cniBinDir !== undefined) kube.cni_bin_dir = opts.cniBinDir;
      if (opts.excludeNamespaces !== undefined) kube.exclude_namespaces = opts.excludeNamespaces;
      const top: JsonObject = {};
      if (Object.keys(kube).length > 0) top.kubernetes = kube;
      if (opts.logFile !== undefined && opts.logFile !== null) top.log_file = opts.logFile;
      if (opts.logLevel !== undefined) top.log_level = opts.logLevel;
      if (opts.iptablesBackend !== undefined) top.iptables_backend = opts.iptablesBackend;
      istio = deepMerge(istio, top);
      if (opts.istio) istio = deepMerge(istio, opts.istio);
      plugins.push(istio);
    }
    if (opts.extraPlugins) plugins.push(...structuredClone(opts.extraPlugins));
  }
  return { cniVersion, name: netName, plugins };
}

/** Write a conflist for one test into its own directory (the NETCONFPATH to pass to runCni). */
export function writeConflist(opts: ConflistOptions = {}): WrittenConflist {
  const dir = opts.dir ?? makeTempDir('icni-conf-');
  mkdirSync(dir, { recursive: true });
  const ipamDataDir = opts.ipamDataDir ?? join(dir, 'ipam');
  mkdirSync(ipamDataDir, { recursive: true });
  const logFile = opts.logFile === null ? undefined : (opts.logFile ?? join(dir, 'istio-cni.log'));
  const conflist = buildConflist({ ...opts, ipamDataDir, logFile: logFile ?? null });
  const path = join(dir, opts.fileName ?? `${conflist.name}.conflist`);
  writeFileSync(path, JSON.stringify(conflist, null, 2) + '\n');
  const istio = conflist.plugins.find((p) => p.type === 'istio-cni');
  return {
    confDir: dir,
    path,
    netName: conflist.name,
    ipamDataDir,
    logFile: typeof istio?.log_file === 'string' ? istio.log_file : undefined,
    conflist,
  };
}

export interface CniPathOptions {
  /** The istio-cni executable the `istio-cni` symlink points to (default DEFAULT_ISTIO_CNI_BIN). */
  pluginBin?: string;
  /** Leave out the istio-cni symlink (for chains without it). */
  withoutIstio?: boolean;
  /** Directory to populate (default: a fresh temp dir). */
  dir?: string;
  /** More entries: plugin type -> absolute executable path. */
  extra?: Record<string, string>;
}

/**
 * A CNI_PATH directory with symlinks to Debian's ptp, host-local, loopback, bridge and
 * `istio-cni` -> the built executable. The target need not exist yet (checked at run time).
 */
export function makeCniPath(opts: CniPathOptions = {}): string {
  const dir = opts.dir ?? makeTempDir('icni-bin-');
  mkdirSync(dir, { recursive: true });
  const links: Record<string, string> = {};
  for (const p of ['ptp', 'host-local', 'loopback', 'bridge']) links[p] = join(DEBIAN_CNI_DIR, p);
  if (!opts.withoutIstio) links['istio-cni'] = resolve(opts.pluginBin ?? DEFAULT_ISTIO_CNI_BIN);
  Object.assign(links, opts.extra ?? {});
  for (const [name, target] of Object.entries(links)) {
    if (!isAbsolute(target)) throw new Error(`makeCniPath: ${name} -> ${target} must be absolute`);
    const link = join(dir, name);
    try {
      lstatSync(link);
      rmSync(link, { force: true });
    } catch {
      /* not there yet */
    }
    symlinkSync(target, link);
  }
  return dir;
}

/** The Bun runtime the executable is compiled with (build/bun-runtime; `npm run build` installs it). */
export const BUN_RUNTIME = join(REPO_ROOT, 'build', 'bun-runtime', 'node_modules', '@oven', 'bun-linux-x64', 'bin', 'bun');

/**
 * test/.work/istio-cni-dev: a /bin/sh wrapper that runs src/cli.ts from source on the Bun runtime the
 * executable is compiled with (build/bun-runtime; `npm run build` installs it), usable as pluginBin /
 * ISTIO_CNI_BIN to run the e2e chain without compiling. Unlike the executable, it honours BUN_*.
 */
export function writeDevPluginWrapper(): string {
  const dir = join(REPO_ROOT, 'test', '.work');
  mkdirSync(dir, { recursive: true });
  const path = join(dir, 'istio-cni-dev');
  const cli = join(REPO_ROOT, 'src', 'cli.ts');
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, `#!/bin/sh\nexec '${BUN_RUNTIME}' '${cli}'\n`);
  chmodSync(tmp, 0o755);
  renameSync(tmp, path);
  return path;
}
