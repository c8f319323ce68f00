import { readFileSync } from 'node:fs';
import type { Server, Socket } from 'node:net';
import { monotonicMs } from '../clock.ts';

/**
 * Where the probe listens and what it dials. With Istio's rules, a TCP connection that leaves
 * through `lo` to a loopback address other than 127.0.0.1 is sent to the inbound port by
 * `ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -j ISTIO_IN_REDIRECT`, a rule that comes before the
 * uid/gid 1337 exemptions: so a connection from 127.0.0.1 to 127.0.0.6 is captured even from the
 * proxy's own uid. The source is bound to 127.0.0.1 because traffic from 127.0.0.6 (the proxy's
 * inbound passthrough source) is exempt by the chain's first rule. REDIRECT rewrites the
 * destination to 127.0.0.1 (::1), where the probe listens on both capture ports.
 */
export interface ProbePlan {
  listenHost: string;
  listenPorts: readonly number[];
  target: { host: string; port: number };
  timeoutMs: number;
}

export const OUTBOUND_CAPTURE_PORT = 15001;
export const INBOUND_CAPTURE_PORT = 15006;
/** Nothing listens here: a connection to it succeeds only when the rules redirect it. */
export const PROBE_PORT = 15002;

export function probePlan(ipv6: boolean, timeoutMs: number): ProbePlan {
  return {
    listenHost: ipv6 ? '::1' : '127.0.0.1',
    listenPorts: [OUTBOUND_CAPTURE_PORT, INBOUND_CAPTURE_PORT],
    target: { host: ipv6 ? '::6' : '127.0.0.6', port: PROBE_PORT },
    timeoutMs,
  };
}

export type ProbeOutcome =
  | { captured: true; port: number; attempts: number; elapsedMs: number }
  | { captured: false; attempts: number; listening: string[]; notListening: string[]; failures: Map<string, number> };

const RETRY_DELAY_MS = 100;
/** How long a connected attempt waits for its nonce to show up at a listener. */
const NONCE_WAIT_MS = 500;

/**
 * Dials the target until one connection arrives at our own listener, which proves that the
 * redirect rules are in place in this network namespace. A random nonce sent over the connection
 * tells our probe apart from anything else that might connect to the capture ports.
 */
export async function runProbe(plan: ProbePlan): Promise<ProbeOutcome> {
  const net = await import('node:net');
  const { randomBytes } = await import('node:crypto');
  const started = monotonicMs();
  const nonce = randomBytes(16).toString('hex');
  /** The local ports of the probe's connections: only a connection from one of them carries the proof. */
  const probePorts = new Set<number>();

  // The first listener that receives our nonce; `captured` settles at that moment.
  let capturedPort = undefined as number | undefined;
  let settle: () => void = () => {};
  const captured = new Promise<void>((resolve) => {
    settle = resolve;
  });
  const onCapture = (port: number): void => {
    capturedPort ??= port;
    settle();
  };

  const servers: Server[] = [];
  const listening: string[] = [];
  const notListening: string[] = [];
  for (const port of plan.listenPorts) {
    const address = hostPort(plan.listenHost, port);
    const server = net.createServer((socket) =>
      readNonce(socket, nonce, () => {
        // The proof counts only on the probe's own connection: a process in the pod that takes the
        // probe on 15002 and relays the nonce here connects anew, from a port of its own.
        if (socket.remoteAddress === plan.listenHost && probePorts.has(socket.remotePort ?? 0)) onCapture(port);
      }),
    );
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen({ host: plan.listenHost, port }, resolve);
      });
      servers.push(server);
      listening.push(address);
    } catch (err) {
      notListening.push(`${address} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
    }
  }

  const failures = new Map<string, number>();
  let attempts = 0;
  const deadline = started + plan.timeoutMs;
  try {
    while (listening.length > 0 && capturedPort === undefined) {
      // Read the clock once per round: a second reading could already be past the deadline.
      const remaining = deadline - monotonicMs();
      if (remaining <= 0) break;
      attempts += 1;
      const failure = await attempt(net, plan, nonce, captured, probePorts, Math.min(NONCE_WAIT_MS, remaining));
      if (failure === undefined) break;
      failures.set(failure, (failures.get(failure) ?? 0) + 1);
      const pause = Math.min(RETRY_DELAY_MS, deadline - monotonicMs());
      if (pause > 0) await Promise.race([captured, delay(pause)]);
    }
  } finally {
    for (const server of servers) server.close();
  }
  const elapsedMs = Math.round(monotonicMs() - started);
  if (capturedPort !== undefined) return { captured: true, port: capturedPort, attempts, elapsedMs };
  return { captured: false, attempts, listening, notListening, failures };
}

/** One connection: undefined when its nonce reached a listener, else why it did not. */
async function attempt(
  net: typeof import('node:net'),
  plan: ProbePlan,
  nonce: string,
  captured: Promise<void>,
  probePorts: Set<number>,
  waitMs: number,
): Promise<string | undefined> {
  const socket = net.connect({ host: plan.target.host, port: plan.target.port, localAddress: plan.listenHost });
  socket.on('error', () => {});
  try {
    const connected = await new Promise<string | undefined>((resolve) => {
      socket.once('connect', () => resolve(undefined));
      socket.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
      socket.setTimeout(waitMs, () => resolve('no answer to the connection request'));
    });
    if (connected !== undefined) return connected;
    // Redirected, the connection has no socket at the target port: a socket there is a process in
    // the pod that took the connection (and could relay the nonce, even from the probe's own port).
    // It must hold that socket until the nonce is sent, so it shows now.
    if (hasLocalPort(plan.target.port)) return `something in this network namespace has a socket on port ${plan.target.port}: it took the connection, so a relay cannot be told from a redirect`;
    probePorts.add(socket.localPort ?? 0);
    socket.end(`${nonce}\n`);
    const arrived = await Promise.race([captured.then(() => true), delay(waitMs).then(() => false)]);
    return arrived ? undefined : 'connected to something else: the nonce never reached our listeners';
  } finally {
    socket.destroy();
  }
}

/** Whether any TCP socket of this network namespace (either family, any state) has `port` as its local port. */
function hasLocalPort(port: number): boolean {
  const hex = `:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  return ['/proc/net/tcp', '/proc/net/tcp6'].some((table) => {
    let text = '';
    try {
      text = readFileSync(table, 'latin1');
    } catch {
      // No IPv6 in this kernel: no tcp6 table.
    }
    // sl local_address rem_address st ...: the local address is the second field.
    return text.split('\n').slice(1).some((line) => line.trim().split(/\s+/)[1]?.endsWith(hex));
  });
}

/** Reads at most one line from a connection and reports a match with our nonce. */
function readNonce(socket: Socket, nonce: string, matched: () => void): void {
  let received = '';
  socket.setTimeout(NONCE_WAIT_MS, () => socket.destroy());
  socket.on('error', () => {});
  socket.on('data', (chunk: Buffer) => {
    received += chunk.toString('latin1');
    if (received.length > nonce.length + 1 || received.includes('\n')) {
      if (received.trim() === nonce) matched();
      socket.destroy();
    }
  });
}

export function hostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** A pause that does not keep the process alive once the listeners are closed. */
function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)).unref());
}
