import { CniError, ErrorCode } from '../cni/errors.ts';

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

/** Runs one program: an absolute path and an argv array, never a shell. */
export async function execute(argv: readonly string[], input: string, timeoutMs: number): Promise<ExecResult> {
  const [file, ...args] = argv;
  if (file === undefined || !file.startsWith('/')) throw new Error(`refusing to run ${JSON.stringify(file)}: not an absolute path`);
  const { spawn } = await import('node:child_process');
  if (stopping) throw new CniError(ErrorCode.TryAgainLater, 'interrupted by SIGTERM', `${file} not started`);
  running += 1;
  return new Promise<ExecResult>((resolve, reject) => {
    const child = spawn(file, args, { stdio: ['pipe', 'pipe', 'pipe'], timeout: timeoutMs, env: {} });
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    child.stdout.on('data', (chunk: Buffer) => stdout.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => stderr.push(chunk));
    child.on('error', reject);
    child.on('close', (code, signal) =>
      resolve({
        code,
        stdout: Buffer.concat(stdout).toString('utf8'),
        stderr: Buffer.concat(stderr).toString('utf8') + (signal ? `killed by ${signal} after ${timeoutMs} ms` : ''),
      }),
    );
    // A child that exits before reading its input must not crash us with EPIPE.
    child.stdin.on('error', () => {});
    child.stdin.end(input);
  }).finally(() => {
    running -= 1;
    if (running === 0) for (const resolve of whenIdle.splice(0)) resolve();
  });
}

const NSENTER = '/usr/bin/nsenter';
/** Bounds one program in a pod netns; the legacy lock wait (10 s) fits inside it. */
const NETNS_TIMEOUT_MS = 15_000;

/** Runs one program inside the network namespace at `netns`, through nsenter. */
export function executeInNetns(netns: string, argv: readonly string[], input = ''): Promise<ExecResult> {
  return execute([NSENTER, `--net=${netns}`, ...argv], input, NETNS_TIMEOUT_MS);
}
