import { bun, type BunSubprocess } from '../bun.ts';
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
  const [file] = argv;
  if (file === undefined || !file.startsWith('/')) throw new Error(`refusing to run ${JSON.stringify(file)}: not an absolute path`);
  if (stopping) throw new CniError(ErrorCode.TryAgainLater, 'interrupted by SIGTERM', `${file} not started`);
  running += 1;
  try {
    // Bun.spawn, not node:child_process: the same spawn for ~18 M instructions less per run (src/bun.ts).
    const stdin = new TextEncoder().encode(input);
    const child = bun().spawn([...argv], { stdio: [stdin, 'pipe', 'pipe', ...(inherit === undefined ? [] : [inherit])], env: {}, timeout: timeoutMs });
    const [stdout, stderr, code] = await Promise.all([readBounded(child), new Response(child.stderr).text(), child.exited]);
    const why = stdout === undefined ? `stopped: output beyond ${MAX_OUTPUT_BYTES} bytes` : child.signalCode ? `killed by ${child.signalCode} after ${timeoutMs} ms` : '';
    return { code: why === '' ? code : null, stdout: stdout ?? '', stderr: stderr + why };
  } finally {
    running -= 1;
    if (running === 0) for (const resolve of whenIdle.splice(0)) resolve();
  }
}

/** The program's stdout, or undefined once it passed MAX_OUTPUT_BYTES (the program is then killed). */
async function readBounded(child: BunSubprocess): Promise<string | undefined> {
  const chunks: Uint8Array[] = [];
  let length = 0;
  const reader = child.stdout.getReader();
  for (let read = await reader.read(); !read.done; read = await reader.read()) {
    length += read.value.length;
    if (length > MAX_OUTPUT_BYTES) {
      child.kill('SIGKILL');
      await reader.cancel();
      return undefined;
    }
    chunks.push(read.value);
  }
  return Buffer.concat(chunks).toString('utf8');
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
