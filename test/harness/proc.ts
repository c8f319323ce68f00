// Process helpers and the process-wide cleanup registry shared by the harness modules.
//
// Every command is spawned as an argv array whose first element is an absolute path
// (never through a shell). Cleanups registered here run from `cleanupAll()` (call it in a
// test's `after()` hook) and, as a safety net, synchronously when the process exits or is
// killed by SIGINT/SIGTERM/SIGHUP.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { isAbsolute, join } from 'node:path';

export interface RunOptions {
  /** Full environment of the child (default: a minimal PATH-only environment). */
  env?: NodeJS.ProcessEnv;
  /** Data written to the child's stdin (stdin is closed right after). */
  input?: string | Buffer;
  cwd?: string;
  /** Kill the child with SIGKILL after this many ms (default 30 s). */
  timeoutMs?: number;
}

export interface RunResult {
  /** Exit code; -1 when the child was killed by a signal or could not be started. */
  code: number;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** The environment children get unless told otherwise: like a runtime's, not the test shell's. */
export function minimalEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return { PATH: DEFAULT_PATH, ...extra };
}

export function assertArgv(argv: readonly string[]): asserts argv is [string, ...string[]] {
  const first = argv[0];
  if (first === undefined || !isAbsolute(first)) {
    throw new Error(`harness: argv[0] must be an absolute path, got ${JSON.stringify(first)}`);
  }
}

/** Run argv to completion, capturing stdout/stderr. Never rejects on a non-zero exit. */
export function run(argv: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  assertArgv(argv);
  const [file, ...args] = argv;
  return new Promise((resolve) => {
    const child = spawn(file, args, {
      env: opts.env ?? minimalEnv(),
      cwd: opts.cwd,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timedOut = false;
    let settled = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, opts.timeoutMs ?? 30_000);
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.stdin.on('error', () => {
      /* child exited before reading stdin */
    });
    const finish = (code: number, signal: NodeJS.Signals | null, extraErr = '') => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({
        code,
        signal,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8') + extraErr,
        timedOut,
      });
    };
    child.on('error', (e) => finish(-1, null, `spawn error: ${e.message}\n`));
    child.on('close', (code, signal) => finish(code ?? -1, signal));
    if (opts.input !== undefined) child.stdin.end(opts.input);
    else child.stdin.end();
  });
}

/** Like run() but throws (with the command's output) unless it exits 0. */
export async function runOk(argv: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const r = await run(argv, opts);
  if (r.code !== 0) {
    throw new Error(
      `command failed (code ${r.code}${r.signal ? `, signal ${r.signal}` : ''}${r.timedOut ? ', timed out' : ''}): ` +
        `${argv.join(' ')}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`,
    );
  }
  return r;
}

// ---------------------------------------------------------------------------------------
// Cleanup registry

interface CleanupEntry {
  id: number;
  label: string;
  /** Must be synchronous-safe: it also runs from process.on('exit'). */
  sync: () => void;
  async?: () => Promise<void>;
}

let nextCleanupId = 1;
const cleanups: CleanupEntry[] = [];
let hooksInstalled = false;

function installHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on('exit', () => runCleanupsSync());
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      runCleanupsSync();
      process.kill(process.pid, sig);
    });
  }
}

/**
 * Register a cleanup. `sync` must work from an exit handler (spawnSync, rmSync, kill);
 * `async` (optional) is preferred by cleanupAll(). Returns a function that runs the
 * cleanup now (async variant) and unregisters it.
 */
export function registerCleanup(
  label: string,
  sync: () => void,
  asyncFn?: () => Promise<void>,
): () => Promise<void> {
  installHooks();
  const entry: CleanupEntry = { id: nextCleanupId++, label, sync };
  if (asyncFn) entry.async = asyncFn;
  cleanups.push(entry);
  return async () => {
    const i = cleanups.indexOf(entry);
    if (i < 0) return;
    cleanups.splice(i, 1);
    await (entry.async ? entry.async() : Promise.resolve(entry.sync()));
  };
}

function runCleanupsSync(): void {
  while (cleanups.length > 0) {
    const e = cleanups.pop()!;
    try {
      e.sync();
    } catch {
      /* best effort at exit */
    }
  }
}

/** Run every registered cleanup, newest first. Errors are collected and rethrown at the end. */
export async function cleanupAll(): Promise<void> {
  const errors: unknown[] = [];
  while (cleanups.length > 0) {
    const e = cleanups.pop()!;
    try {
      await (e.async ? e.async() : Promise.resolve(e.sync()));
    } catch (err) {
      errors.push(new Error(`cleanup ${e.label} failed: ${String(err)}`));
    }
  }
  if (errors.length === 1) throw errors[0];
  if (errors.length > 1) throw new AggregateError(errors, 'several harness cleanups failed');
}

/** A temporary directory removed by cleanupAll()/at exit. */
export function makeTempDir(prefix = 'icni-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  registerCleanup(`rm ${dir}`, () => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Track a long-running child so it is killed by cleanupAll()/at exit. */
export function trackChild(child: ChildProcess, label: string): () => Promise<void> {
  const kill = () => {
    if (child.exitCode === null && child.signalCode === null) {
      try {
        child.kill('SIGKILL');
      } catch {
        /* already gone */
      }
    }
  };
  const done = new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    else child.once('close', () => resolve());
  });
  const runner = registerCleanup(label, kill, async () => {
    kill();
    await done;
  });
  // Once the child is gone there is nothing left to clean: unregister.
  void done.then(() => runner());
  return runner;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export interface Daemon {
  child: ChildProcess;
  /** The match of the readiness regex against stderr. */
  ready: RegExpExecArray;
  /** Resolves with the exit code once the process is gone. */
  exited: Promise<number | null>;
  /** Output collected so far. */
  output(): { stdout: string; stderr: string };
  /** SIGKILL it (no-op when gone) and wait for it to exit. */
  stop(): Promise<void>;
}

/**
 * Spawn a long-running argv (absolute argv[0]) and resolve once its stderr matches `ready`.
 * The process is killed by cleanupAll()/at exit. Rejects (and kills it) when it exits first or
 * is not ready within timeoutMs (default 5 s). `detached`: its own process group, so a Ctrl-C
 * reaches only the test, whose cleanup then stops it in order.
 */
export async function startDaemon(
  argv: readonly string[],
  opts: { ready: RegExp; label: string; timeoutMs?: number; env?: NodeJS.ProcessEnv; cwd?: string; detached?: boolean },
): Promise<Daemon> {
  assertArgv(argv);
  const [file, ...args] = argv;
  const child = spawn(file, args, { env: opts.env ?? minimalEnv(), cwd: opts.cwd ?? '/', stdio: ['ignore', 'pipe', 'pipe'], detached: opts.detached ?? false });
  const stop = trackChild(child, opts.label);
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
  const ready = await new Promise<RegExpExecArray>((resolve, reject) => {
    const timer = setTimeout(() => {
      void stop();
      reject(new Error(`${opts.label}: not ready within ${opts.timeoutMs ?? 5000} ms: ${stderr}`));
    }, opts.timeoutMs ?? 5000);
    child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
      const m = opts.ready.exec(stderr);
      if (m) {
        clearTimeout(timer);
        resolve(m);
      }
    });
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`${opts.label}: exited early (code ${code}): ${stderr}`));
    });
  });
  return { child, ready, exited, output: () => ({ stdout, stderr }), stop };
}
