/**
 * The Bun APIs the plugin's own I/O uses, typed. dist/istio-cni is a Bun executable
 * (build/build.mjs), and under Bun node:child_process and node:net are JavaScript layers over these,
 * with Node's stream machinery: loading them cost more of a CNI run than the work (build/README.md).
 * Code that calls bun() runs under Bun only: the executable, or `bun src/cli.ts`.
 */

export interface BunSubprocess {
  readonly stdout: ReadableStream<Uint8Array>;
  readonly stderr: ReadableStream<Uint8Array>;
  /** Resolves with the exit code once the process is gone (null when a signal ended it). */
  readonly exited: Promise<number | null>;
  readonly signalCode: string | null;
}

export interface BunSocket {
  write(data: string | Uint8Array): number;
  /** Closes at once, without waiting for unsent data. */
  terminate(): void;
}

export interface BunSocketHandler {
  open?(socket: BunSocket): void;
  data?(socket: BunSocket, data: Uint8Array): void;
  close?(socket: BunSocket): void;
  error?(socket: BunSocket, error: NodeJS.ErrnoException): void;
  connectError?(socket: BunSocket, error: NodeJS.ErrnoException): void;
}

export interface Bun {
  spawn(
    argv: string[],
    options: { stdin: Uint8Array; stdout: 'pipe'; stderr: 'pipe'; env: Record<string, string>; timeout: number },
  ): BunSubprocess;
  connect(options: { unix: string; socket: BunSocketHandler }): Promise<BunSocket>;
}

export function bun(): Bun {
  const runtime = (globalThis as { Bun?: Bun }).Bun;
  if (runtime === undefined) throw new Error('this runs under Bun only (the built executable, or `bun src/cli.ts`)');
  return runtime;
}
