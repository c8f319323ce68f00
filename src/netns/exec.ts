export interface ExecResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs one program: an absolute path and an argv array, never a shell. */
export async function execute(argv: readonly string[], input: string, timeoutMs: number): Promise<ExecResult> {
  const [file, ...args] = argv;
  if (file === undefined || !file.startsWith('/')) throw new Error(`refusing to run ${JSON.stringify(file)}: not an absolute path`);
  const { spawn } = await import('node:child_process');
  return new Promise((resolve, reject) => {
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
  });
}
