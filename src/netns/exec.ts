import { CniError, ErrorCode } from '../cni/errors.ts';
import type { PodNetns } from './netns.ts';

export interface ExecResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Programs running now, and whether new ones may still start (not after SIGTERM). */
let running = 0;
let stopping = false;
const whenIdle: (() => void)[] = [];

/**
 * Starts no program from now on and resolves once the running ones have exited. Each is one
 * iptables-restore transaction: letting it finish, rather than leaving it behind, means the netns
 * holds all or nothing of the rule set, and no longer changes, once the plugin has answered.
 */
export function stopExecuting(): Promise<void> {
  stopping = true;
  return running === 0 ? Promise.resolve() : new Promise((resolve) => whenIdle.push(resolve));
}

/**
 * What a program may print before it is stopped: an iptables-save of a netns that a pod filled with
 * rules (it owns its netns) must not take the plugin's memory with it. Our own rule sets are capped
 * far below (src/redirect/ruleset.ts).
 */
const MAX_OUTPUT_BYTES = 64 * 1024 * 1024;

/**
 * Runs one program: an absolute path and an argv array, never a shell. `inherit` is a descriptor the
 * program gets as its fd 3.
 */
export async function execute(argv: readonly string[], input: string, timeoutMs: number, inherit?: number): Promise<ExecResult> {
  const [file, ...args] = argv;
  if (file === undefined || !file.startsWith('/')) throw new Error(`refusing to run ${JSON.stringify(file)}: not an absolute path`);
  const { spawn } = await import('node:child_process');
  if (stopping) throw new CniError(ErrorCode.TryAgainLater, 'interrupted by SIGTERM', `${file} not started`);
  running += 1;
  return new Promise<ExecResult>((resolve, reject) => {
    const child = spawn(file, args, { stdio: ['pipe', 'pipe', 'pipe', ...(inherit === undefined ? [] : [inherit])], timeout: timeoutMs, env: {} });
    const [stdin, stdout, stderr] = [child.stdin!, child.stdout!, child.stderr!];
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let outBytes = 0;
    stdout.on('data', (chunk: Buffer) => {
      outBytes += chunk.length;
      if (outBytes <= MAX_OUTPUT_BYTES) out.push(chunk);
      else child.kill('SIGKILL');
    });
    stderr.on('data', (chunk: Buffer) => err.push(chunk));
    child.on('error', reject);
    child.on('close', (code, signal) => {
      const why = outBytes > MAX_OUTPUT_BYTES ? `stopped: output beyond ${MAX_OUTPUT_BYTES} bytes` : signal ? `killed by ${signal} after ${timeoutMs} ms` : '';
      resolve({ code: why === '' ? code : null, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') + why });
    });
    // A child that exits before reading its input must not crash us with EPIPE.
    stdin.on('error', () => {});
    stdin.end(input);
  }).finally(() => {
    running -= 1;
    if (running === 0) for (const resolve of whenIdle.splice(0)) resolve();
  });
}

const NSENTER = '/usr/bin/nsenter';
/** Bounds one program in a pod netns; the legacy lock wait (10 s) fits inside it. */
const NETNS_TIMEOUT_MS = 15_000;

/**
 * Runs one program inside the pod's network namespace, through nsenter, which enters the namespace
 * the plugin opened and checked (handed down as fd 3), never whatever the path names by then.
 */
export function executeInNetns(netns: PodNetns, argv: readonly string[], input = ''): Promise<ExecResult> {
  return execute([NSENTER, '--net=/proc/self/fd/3', ...argv], input, NETNS_TIMEOUT_MS, netns.fd);
}
