// The libcni driver (test/cnitool/main.go): build once per test run, run it inside the
// test's "node" netns, and a raw plugin invoker for cases libcni cannot express.
import { createHash } from 'node:crypto';
import { mkdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from './conflist.ts';
import { netnsPath, nsenterArgv, type Netns, type NetnsRef } from './netns.ts';
import { makeTempDir, minimalEnv, run, type RunResult } from './proc.ts';

export const GO = '/usr/bin/go';
export const CNITOOL_SRC = join(REPO_ROOT, 'test', 'cnitool', 'main.go');
export const WORK_DIR = join(REPO_ROOT, 'test', '.work');
export const CNITOOL_BIN = join(WORK_DIR, 'cnitool');
/** Debian's golang-github-appc-cni-dev (libcni 1.1.2) lives here. */
export const GOPATH = '/usr/share/gocode';

let buildPromise: Promise<string> | undefined;

function mtimeMs(path: string): number | undefined {
  try {
    return statSync(path).mtimeMs;
  } catch {
    return undefined;
  }
}

/**
 * Build test/.work/cnitool if it is missing or older than main.go (offline, GOPATH mode,
 * static). Memoized per process; safe when several test processes build at once (each
 * builds to a private file and renames it into place).
 */
export function buildCnitool(): Promise<string> {
  buildPromise ??= (async () => {
    const src = mtimeMs(CNITOOL_SRC);
    if (src === undefined) throw new Error(`missing ${CNITOOL_SRC}`);
    const bin = mtimeMs(CNITOOL_BIN);
    if (bin !== undefined && bin >= src) return CNITOOL_BIN;
    mkdirSync(WORK_DIR, { recursive: true });
    const tmp = `${CNITOOL_BIN}.${process.pid}.tmp`;
    const r = await run([GO, 'build', '-o', tmp, CNITOOL_SRC], {
      cwd: REPO_ROOT,
      timeoutMs: 300_000,
      env: minimalEnv({
        HOME: WORK_DIR,
        GO111MODULE: 'off',
        GOPATH,
        GOCACHE: join(WORK_DIR, 'gocache'),
        GOFLAGS: '',
        CGO_ENABLED: '0',
      }),
    });
    if (r.code !== 0) {
      rmSync(tmp, { force: true });
      throw new Error(`go build of ${CNITOOL_SRC} failed:\n${r.stderr}${r.stdout}`);
    }
    renameSync(tmp, CNITOOL_BIN);
    return CNITOOL_BIN;
  })();
  buildPromise.catch(() => {
    buildPromise = undefined;
  });
  return buildPromise;
}

export type CniVerb = 'add' | 'check' | 'del' | 'cached' | 'validate' | 'version';

export type CniArgs = string | Record<string, string> | Array<[string, string]>;

export interface RunCniOptions {
  /** Network name (for `version`: the plugin type). */
  netName: string;
  /**
   * CNI_NETNS for add/check/del/cached: a Netns, a /path, or a netns name (-> /run/netns/<name>).
   * '' is passed as-is (containerd's second DEL); it then needs containerId.
   */
  netnsPath?: NetnsRef;
  /** The netns the driver runs in (the stand-in for the node's root netns). Required except for version/validate. */
  hostNetns?: NetnsRef;
  /** NETCONFPATH: directory holding the .conflist. Not needed for `version`. */
  confDir?: string;
  /** CNI_PATH: one dir or several. */
  cniPath: string | string[];
  /** CNI_ARGS, e.g. {IgnoreUnknown: '1', K8S_POD_NAMESPACE: 'default', K8S_POD_NAME: 'p'}. */
  cniArgs?: CniArgs;
  /** CAP_ARGS: capability args; reach runtimeConfig only for keys the plugin lists in `capabilities`. */
  capArgs?: Record<string, unknown>;
  /** libcni cache dir (default: one temp dir per test process). */
  cacheDir?: string;
  /** CNI_CONTAINERID (default: cnitool's hash of the netns path). */
  containerId?: string;
  /** CNI_IFNAME (default eth0). */
  ifName?: string;
  /** Extra environment for the driver; plugins inherit it (libcni passes its whole env on). */
  env?: NodeJS.ProcessEnv;
  /** Start from this process's env instead of a minimal PATH-only one (default false). */
  inheritEnv?: boolean;
  timeoutMs?: number;
}

export interface CniError {
  code: number;
  msg: string;
  details?: string;
}

export interface CniRunResult {
  code: number;
  stdout: string;
  stderr: string;
  /** Parsed stdout when it is JSON (the ADD result, `cached`, `version`, `validate`), else null. */
  json: unknown;
  /** The CNI SPEC error (from the `CNI_ERROR_JSON` line the driver prints), if any. */
  error: CniError | null;
  timedOut: boolean;
  durationMs: number;
}

export function formatCniArgs(args: CniArgs): string {
  if (typeof args === 'string') return args;
  const pairs = Array.isArray(args) ? args : Object.entries(args);
  return pairs.map(([k, v]) => `${k}=${v}`).join(';');
}

/** The CNI_CONTAINERID the driver derives from a netns path when none is given (like cnitool). */
export function defaultContainerId(netns: NetnsRef): string {
  return `cnitool-${createHash('sha512').update(netnsPath(netns)).digest('hex').slice(0, 20)}`;
}

let defaultCacheDir: string | undefined;
/** The per-process libcni cache dir used when RunCniOptions.cacheDir is not given. */
export function defaultCniCacheDir(): string {
  defaultCacheDir ??= makeTempDir('icni-cache-');
  return defaultCacheDir;
}

function parseJson(text: string): unknown {
  const t = text.trim();
  if (t === '') return null;
  try {
    return JSON.parse(t) as unknown;
  } catch {
    return null;
  }
}

function parseCniError(stderr: string): CniError | null {
  const line = stderr.split('\n').find((l) => l.startsWith('CNI_ERROR_JSON '));
  if (!line) return null;
  try {
    return JSON.parse(line.slice('CNI_ERROR_JSON '.length)) as CniError;
  } catch {
    return null;
  }
}

/**
 * Run the libcni driver: `nsenter --net=<hostNetns> cnitool <verb> <netName> [<netnsPath>]`.
 * Never rejects because the driver failed: check `code` / `error`.
 */
export async function runCni(verb: CniVerb, opts: RunCniOptions): Promise<CniRunResult> {
  const bin = await buildCnitool();
  const needsNetns = verb === 'add' || verb === 'check' || verb === 'del' || verb === 'cached';
  if (needsNetns && opts.hostNetns === undefined) {
    throw new Error(`runCni ${verb}: hostNetns is required (the driver must not run in the machine's root netns)`);
  }
  if (needsNetns && opts.netnsPath === undefined) throw new Error(`runCni ${verb}: netnsPath is required`);

  const env: NodeJS.ProcessEnv = opts.inheritEnv ? { ...process.env } : minimalEnv();
  env.CNI_PATH = Array.isArray(opts.cniPath) ? opts.cniPath.join(':') : opts.cniPath;
  if (opts.confDir !== undefined) env.NETCONFPATH = opts.confDir;
  env.CNI_CACHE_DIR = opts.cacheDir ?? defaultCniCacheDir();
  if (opts.cniArgs !== undefined) env.CNI_ARGS = formatCniArgs(opts.cniArgs);
  else delete env.CNI_ARGS;
  if (opts.capArgs !== undefined) env.CAP_ARGS = JSON.stringify(opts.capArgs);
  else delete env.CAP_ARGS;
  if (opts.containerId !== undefined) env.CNI_CONTAINERID = opts.containerId;
  else delete env.CNI_CONTAINERID;
  if (opts.ifName !== undefined) env.CNI_IFNAME = opts.ifName;
  else delete env.CNI_IFNAME;
  Object.assign(env, opts.env ?? {});

  const argv = [bin, verb, opts.netName];
  if (needsNetns) argv.push(opts.netnsPath === '' ? '' : netnsPath(opts.netnsPath!));
  const full = opts.hostNetns !== undefined ? nsenterArgv(opts.hostNetns, argv) : argv;

  const t0 = performance.now();
  const r = await run(full, { env, timeoutMs: opts.timeoutMs ?? 60_000 });
  const durationMs = performance.now() - t0;
  return {
    code: r.code,
    stdout: r.stdout,
    stderr: r.stderr,
    json: parseJson(r.stdout),
    error: parseCniError(r.stderr),
    timedOut: r.timedOut,
    durationMs,
  };
}

/** Bind common options (topology, conf, CNI_PATH, cache) once; override per call. */
export function cniRunner(base: Partial<RunCniOptions> & Pick<RunCniOptions, 'cniPath'>) {
  return (verb: CniVerb, overrides: Partial<RunCniOptions> = {}): Promise<CniRunResult> =>
    runCni(verb, { netName: '', ...base, ...overrides } as RunCniOptions);
}

// ---------------------------------------------------------------------------------------
// Raw plugin invocation (no libcni): for VERSION, a DEL without prevResult, malformed stdin, ...

export interface RunPluginOptions {
  /** CNI_COMMAND: ADD, DEL, CHECK, VERSION, GC, STATUS or anything else. */
  command: string;
  /** stdin: a string is sent as-is, anything else as JSON. */
  stdin?: unknown;
  containerId?: string;
  /** CNI_NETNS: a Netns gives its /run/netns path; a string is used verbatim ('dummy', '', a path). */
  netns?: Netns | string;
  ifName?: string;
  cniArgs?: CniArgs;
  /** CNI_PATH */
  path?: string;
  /** Extra env (after the CNI_* vars, so it can override them). */
  env?: NodeJS.ProcessEnv;
  inheritEnv?: boolean;
  /** Run inside this netns (like the driver does). */
  hostNetns?: NetnsRef;
  timeoutMs?: number;
}

export interface PluginRunResult extends RunResult {
  json: unknown;
  durationMs: number;
}

/** Exec a plugin binary directly with the given CNI_* env and stdin. Unset fields are not set at all. */
export async function runPlugin(pluginPath: string, opts: RunPluginOptions): Promise<PluginRunResult> {
  const env: NodeJS.ProcessEnv = opts.inheritEnv ? { ...process.env } : minimalEnv();
  env.CNI_COMMAND = opts.command;
  if (opts.containerId !== undefined) env.CNI_CONTAINERID = opts.containerId;
  if (opts.netns !== undefined) env.CNI_NETNS = typeof opts.netns === 'string' ? opts.netns : opts.netns.path;
  if (opts.ifName !== undefined) env.CNI_IFNAME = opts.ifName;
  if (opts.cniArgs !== undefined) env.CNI_ARGS = formatCniArgs(opts.cniArgs);
  if (opts.path !== undefined) env.CNI_PATH = opts.path;
  Object.assign(env, opts.env ?? {});
  const input = opts.stdin === undefined ? '' : typeof opts.stdin === 'string' ? opts.stdin : JSON.stringify(opts.stdin);
  const argv = opts.hostNetns !== undefined ? nsenterArgv(opts.hostNetns, [pluginPath]) : [pluginPath];
  const t0 = performance.now();
  const r = await run(argv, { env, input, timeoutMs: opts.timeoutMs ?? 60_000 });
  return { ...r, json: parseJson(r.stdout), durationMs: performance.now() - t0 };
}
