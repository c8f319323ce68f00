// TCP traffic between the test's own namespaces: an SO_ORIGINAL_DST-reporting listener
// (test/helpers/origdst.py) and a one-shot connector (test/helpers/connect.py), both run
// with Debian's /usr/bin/python3 via nsenter.
//
// Safety: both ends only ever run inside namespaces this process created, and connectFrom()
// refuses targets that are neither loopback nor an address configured in one of those
// namespaces (unless allowUnassignedTarget is set; the namespaces have no uplink anyway).
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { REPO_ROOT } from './conflist.ts';
import { ipAddr, isOwnedNetns, netnsName, nsenterArgv, ownedNetns, type NetnsRef } from './netns.ts';
import { minimalEnv, run, sleep, trackChild } from './proc.ts';

export const PYTHON = '/usr/bin/python3';
export const ORIGDST_PY = join(REPO_ROOT, 'test', 'helpers', 'origdst.py');
export const CONNECT_PY = join(REPO_ROOT, 'test', 'helpers', 'connect.py');

// The scripts are passed with `python3 -c <source>` so that a --setuid 1337 process does not
// need read access to the checkout.
let origdstSrc: string | undefined;
let connectSrc: string | undefined;
function src(which: 'origdst' | 'connect'): string {
  if (which === 'origdst') return (origdstSrc ??= readFileSync(ORIGDST_PY, 'utf8'));
  return (connectSrc ??= readFileSync(CONNECT_PY, 'utf8'));
}

function assertOwned(ns: NetnsRef, what: string): void {
  if (!isOwnedNetns(ns)) {
    throw new Error(`${what}: netns ${netnsName(ns)} was not created by this test process; refusing to send traffic there`);
  }
}

export interface OrigDstResult {
  peer: string;
  local: string;
  /** "ip:port" the client connected to before any NAT; null when unavailable. */
  original_dst: string | null;
  original_dst_error?: string;
  received?: string;
}

export interface OrigDstListener {
  /** The address actually bound, "ip:port" / "[ip]:port". */
  address: string;
  port: number;
  /** The single accepted connection, or null if none came before the listener's timeout / stop(). */
  result: Promise<OrigDstResult | null>;
  /** Kill the listener (no-op when it already exited). */
  stop(): Promise<void>;
}

export interface ListenOptions {
  /** Bind address (default 0.0.0.0; use :: or an IPv6 address for IPv6). */
  host?: string;
  /** 0 = ephemeral (default). */
  port?: number;
  /** How long the listener waits for its one connection (default 10 s). */
  timeoutMs?: number;
  /** What it answers the client (default "origdst-ok\n"). */
  reply?: string;
  uid?: number;
  gid?: number;
}

/** Start origdst.py inside ns and resolve once it is listening. */
export async function startOrigDstListener(ns: NetnsRef, opts: ListenOptions = {}): Promise<OrigDstListener> {
  assertOwned(ns, 'startOrigDstListener');
  const host = opts.host ?? '0.0.0.0';
  const timeoutS = (opts.timeoutMs ?? 10_000) / 1000;
  const ids: { uid?: number; gid?: number } = {};
  if (opts.uid !== undefined) ids.uid = opts.uid;
  const gid = opts.gid ?? opts.uid;
  if (gid !== undefined) ids.gid = gid;
  const argv = nsenterArgv(ns, [PYTHON, '-c', src('origdst'), host, String(opts.port ?? 0), String(timeoutS), opts.reply ?? 'origdst-ok\n'], ids);
  const [file, ...args] = argv as [string, ...string[]];
  const child = spawn(file, args, { env: minimalEnv(), cwd: '/', stdio: ['ignore', 'pipe', 'pipe'] });
  const stop = trackChild(child, `origdst listener in ${netnsName(ns)}`);

  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));

  const address = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => {
      void stop();
      reject(new Error(`origdst listener in ${netnsName(ns)} did not start within 5 s: ${stderr}`));
    }, 5_000);
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
      const m = /^LISTENING (\S+)$/m.exec(stderr);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    });
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`origdst listener exited early (code ${code}): ${stderr}`));
    });
  });
  const port = Number(address.slice(address.lastIndexOf(':') + 1));

  const result = exited.then(() => {
    const line = stdout.split('\n').find((l) => l.trim().startsWith('{'));
    if (!line) return null;
    const parsed = JSON.parse(line) as OrigDstResult & { error?: string };
    return parsed.error ? null : parsed;
  });
  return { address, port, result, stop };
}

export interface ConnectOptions {
  host: string;
  port: number;
  /** Connect timeout, also the reply read timeout (default 2 s). */
  timeoutMs?: number;
  /** Run as this uid/gid (e.g. 1337, the sidecar proxy's user). */
  uid?: number;
  gid?: number;
  /** Sent after connecting (default "hello\n"). */
  payload?: string;
  /** Source address to bind. */
  bindAddress?: string;
  /** Skip the check that host is loopback or configured in a namespace this process created. */
  allowUnassignedTarget?: boolean;
}

export interface ConnectResult {
  connected: boolean;
  error?: string;
  local?: string;
  peer?: string;
  reply?: string;
  uid?: number;
  gid?: number;
}

function isLoopback(host: string): boolean {
  return host === '::1' || host === 'localhost' || (isIP(host) === 4 && host.startsWith('127.'));
}

/** Addresses configured on interfaces in the namespaces this process created. */
export async function ownedAddresses(): Promise<Set<string>> {
  const out = new Set<string>();
  for (const ns of ownedNetns()) {
    for (const link of await ipAddr(ns)) for (const a of link.addr_info ?? []) out.add(a.local);
  }
  return out;
}

async function assertAllowedTarget(host: string): Promise<void> {
  if (isLoopback(host)) return;
  if (isIP(host) === 0) throw new Error(`connectFrom: target must be an IP literal, got ${host}`);
  const addrs = await ownedAddresses();
  if (!addrs.has(host)) {
    throw new Error(`connectFrom: ${host} is not loopback nor an address of a test netns; refusing (set allowUnassignedTarget to test capture of such a destination)`);
  }
}

/** One TCP connect from inside ns (optionally as uid/gid), via connect.py. */
export async function connectFrom(ns: NetnsRef, opts: ConnectOptions): Promise<ConnectResult> {
  assertOwned(ns, 'connectFrom');
  if (!opts.allowUnassignedTarget) await assertAllowedTarget(opts.host);
  const timeoutS = (opts.timeoutMs ?? 2_000) / 1000;
  const ids: { uid?: number; gid?: number } = {};
  if (opts.uid !== undefined) ids.uid = opts.uid;
  // --setuid alone would keep gid 0: default the gid to the uid (1337/1337 like the proxy).
  const gid = opts.gid ?? opts.uid;
  if (gid !== undefined) ids.gid = gid;
  const argv = nsenterArgv(
    ns,
    [PYTHON, '-c', src('connect'), opts.host, String(opts.port), String(timeoutS), opts.payload ?? 'hello\n', opts.bindAddress ?? ''],
    ids,
  );
  const r = await run(argv, { cwd: '/', timeoutMs: (opts.timeoutMs ?? 2_000) * 2 + 5_000 });
  const line = r.stdout.split('\n').find((l) => l.trim().startsWith('{'));
  if (r.code !== 0 || !line) {
    return { connected: false, error: `connect.py failed (code ${r.code}): ${r.stderr.trim() || r.stdout.trim()}` };
  }
  return JSON.parse(line) as ConnectResult;
}

export interface ProbeOptions {
  /** Where the listener runs. */
  listenNs: NetnsRef;
  /** Listener bind address (default 0.0.0.0). */
  listenHost?: string;
  /** Listener port (default: an ephemeral one, then used as the connect port too). */
  listenPort?: number;
  /** Where the client runs. */
  connectNs: NetnsRef;
  /** Client target address. */
  connectHost: string;
  /** Client target port (default: the listener's port). */
  connectPort?: number;
  uid?: number;
  gid?: number;
  timeoutMs?: number;
  payload?: string;
  allowUnassignedTarget?: boolean;
}

export interface ProbeResult {
  connect: ConnectResult;
  /** What the listener saw (null when the connection did not reach it). */
  listener: OrigDstResult | null;
}

/**
 * Listener in listenNs + one connection from connectNs. When the connection does not reach
 * the listener, the listener is stopped and `listener` is null.
 */
export async function probe(opts: ProbeOptions): Promise<ProbeResult> {
  const lopts: ListenOptions = { timeoutMs: (opts.timeoutMs ?? 2_000) + 3_000 };
  if (opts.listenHost !== undefined) lopts.host = opts.listenHost;
  if (opts.listenPort !== undefined) lopts.port = opts.listenPort;
  const listener = await startOrigDstListener(opts.listenNs, lopts);
  try {
    const copts: ConnectOptions = { host: opts.connectHost, port: opts.connectPort ?? listener.port };
    if (opts.uid !== undefined) copts.uid = opts.uid;
    if (opts.gid !== undefined) copts.gid = opts.gid;
    if (opts.timeoutMs !== undefined) copts.timeoutMs = opts.timeoutMs;
    if (opts.payload !== undefined) copts.payload = opts.payload;
    if (opts.allowUnassignedTarget !== undefined) copts.allowUnassignedTarget = opts.allowUnassignedTarget;
    const connect = await connectFrom(opts.connectNs, copts);
    // A connection that reached this listener is reported right after the client sees EOF;
    // anything else (refused, or answered by some other listener) never will be.
    if (connect.connected) await Promise.race([listener.result, sleep(1_000)]);
    await listener.stop();
    return { connect, listener: await listener.result };
  } catch (e) {
    await listener.stop();
    throw e;
  }
}
