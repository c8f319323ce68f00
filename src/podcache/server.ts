import { chmodSync, lstatSync, mkdirSync, rmSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { dirname } from 'node:path';
import type { Logger } from 'pino';
import { encode, MAX_LINE_BYTES, PROTOCOL_VERSION, Request, type ErrorAnswer, type PodAnswer, type Report } from './protocol.ts';
import type { PodStore } from './store.ts';

export interface CacheServer {
  close(): Promise<void>;
}

/** What the server tells its owner (the installer's metrics): each answer to a pod query, each report. */
export interface CacheEvents {
  answered(found: boolean): void;
  reported(report: Report): void;
}

/**
 * Serves `store` on a unix socket at `socketPath` that only root can reach: the directory is made
 * 0700 (and must be a real directory, not a link), the socket 0600. A socket file left by an earlier
 * run (a crash, a SIGKILL) is replaced; any other file there is left alone and refused.
 */
export async function servePodCache(socketPath: string, store: PodStore, log: Logger, events: CacheEvents): Promise<CacheServer> {
  prepareDirectory(dirname(socketPath));
  removeStaleSocket(socketPath);
  const connections = new Set<Socket>();
  const server = createServer((socket) => {
    connections.add(socket);
    socket.once('close', () => connections.delete(socket));
    serveConnection(socket, store, log, events);
  });
  // The socket is created by listen(): with this umask it is never reachable by others, not even briefly.
  const umask = process.umask(0o177);
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(socketPath, () => resolve());
    });
  } finally {
    process.umask(umask);
  }
  chmodSync(socketPath, 0o600);
  return {
    close: () =>
      new Promise((resolve) => {
        for (const socket of connections) socket.destroy();
        server.close(() => {
          rmSync(socketPath, { force: true });
          resolve();
        });
      }),
  };
}

function prepareDirectory(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const stat = lstatSync(dir);
  if (!stat.isDirectory()) throw new Error(`${dir} is not a directory`);
  if (stat.uid !== process.getuid?.()) throw new Error(`${dir} is owned by uid ${stat.uid}, not by this process`);
  chmodSync(dir, 0o700);
}

function removeStaleSocket(path: string): void {
  const stat = lstatSync(path, { throwIfNoEntry: false });
  if (stat === undefined) return;
  if (!stat.isSocket()) throw new Error(`${path} exists and is not a socket: not replacing it`);
  rmSync(path);
}

/** Reads requests line by line and answers each query in order; a line that is not a request ends the connection. */
function serveConnection(socket: Socket, store: PodStore, log: Logger, events: CacheEvents): void {
  let pending = '';
  let answering: Promise<void> = Promise.resolve();
  const refuse = (message: string) => {
    socket.removeAllListeners('data');
    socket.end(encode({ v: PROTOCOL_VERSION, kind: 'error', message } satisfies ErrorAnswer));
    log.warn({ reason: message }, 'pod cache: refused a request');
  };
  socket.on('error', () => socket.destroy());
  socket.on('data', (chunk: Buffer) => {
    pending += chunk.toString('utf8');
    if (pending.length > MAX_LINE_BYTES) return refuse('request too long');
    const lines = pending.split('\n');
    pending = lines.pop() ?? '';
    for (const line of lines) {
      const request = parseRequest(line);
      if (typeof request === 'string') return refuse(request);
      if (request.kind === 'report') {
        events.reported(request);
        continue;
      }
      answering = answering.then(async () => {
        const answer: PodAnswer = await store.find(request);
        if (!socket.destroyed) socket.write(encode(answer));
        events.answered(answer.found);
        log.debug({ pod: `${request.namespace}/${request.name}`, uid: request.uid, found: answer.found }, 'pod cache: answered');
      });
    }
  });
}

function parseRequest(line: string): Request | string {
  let document: unknown;
  try {
    document = JSON.parse(line);
  } catch {
    return 'not JSON';
  }
  const request = Request.safeParse(document);
  if (!request.success) return `not a request: ${request.error.issues[0]?.path.join('.')}: ${request.error.issues[0]?.message}`;
  return request.data;
}
