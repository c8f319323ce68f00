/**
 * The Bun APIs the plugin's own I/O uses, typed. dist/istio-cni is a Bun executable
 * (build/build.mjs), and under Bun node:child_process, node:net and node:tls are JavaScript layers
 * over these, with Node's stream machinery: loading them cost more of a CNI run than the work
 * (build/README.md).
 * Code that calls bun() runs under Bun only: the executable, or `bun src/cli.ts`.
 */

export interface BunSubprocess {
  readonly stdout: ReadableStream<Uint8Array>;
  readonly stderr: ReadableStream<Uint8Array>;
  /** Resolves with the exit code once the process is gone (null when a signal ended it). */
  readonly exited: Promise<number | null>;
  readonly signalCode: string | null;
  kill(signal: 'SIGKILL'): void;
}

export interface BunSocket {
  write(data: string | Uint8Array): number;
  /** Closes at once, without waiting for unsent data. */
  terminate(): void;
}

/** Verification is on unless rejectUnauthorized is false; serverName is the SNI and the name checked. */
export interface BunTlsOptions {
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
  rejectUnauthorized: boolean;
  serverName?: string;
}

export interface BunSocketHandler {
  open?(socket: BunSocket): void;
  /** TLS only: authorized is false when verification failed (the error says why). */
  handshake?(socket: BunSocket, authorized: boolean, error: NodeJS.ErrnoException | null): void;
  /** The socket can take more of what write() did not. */
  drain?(socket: BunSocket): void;
  data?(socket: BunSocket, data: Uint8Array): void;
  /** The peer closed its side (FIN). */
  end?(socket: BunSocket): void;
  close?(socket: BunSocket): void;
  error?(socket: BunSocket, error: NodeJS.ErrnoException): void;
  connectError?(socket: BunSocket, error: NodeJS.ErrnoException): void;
}

export interface Bun {
  /** stdio: stdin's bytes, stdout and stderr piped, then descriptors the program gets as fd 3, 4, … */
  spawn(argv: string[], options: { stdio: [Uint8Array, 'pipe', 'pipe', ...number[]]; env: Record<string, string>; timeout: number }): BunSubprocess;
  connect(options: { unix: string; socket: BunSocketHandler } | { hostname: string; port: number; tls?: BunTlsOptions; socket: BunSocketHandler }): Promise<BunSocket>;
}

export function bun(): Bun {
  const runtime = (globalThis as { Bun?: Bun }).Bun;
  if (runtime === undefined) throw new Error('this runs under Bun only (the built executable, or `bun src/cli.ts`)');
  return runtime;
}
