import { bun, type BunSocket } from '../bun.ts';
import type { Pod } from '../kube/pod.ts';
import { encode, MAX_LINE_BYTES, PodAnswer, PROTOCOL_VERSION, type Report } from './protocol.ts';

/** The pod from the node-local cache, or why not (the plugin then asks the API server). */
export type CacheLookup = { pod: Pod } | { miss: string };

/**
 * Of the plugin's deadline, what the server may spend waiting for its watch: a quarter (at least
 * 50 ms) is kept back for the connection and the server's "not found" to arrive before the plugin
 * gives up, so that the log says why (50 ms alone was too little on a loaded 2-core machine).
 */
function serverWaitMs(timeoutMs: number): number {
  return Math.max(0, timeoutMs - Math.max(50, Math.round(timeoutMs / 4)));
}

/**
 * Asks `istio-cni install`'s pod cache on this node for the sandbox's pod. Never throws: a missing
 * or stale socket, a refused connection, no answer within `timeoutMs`, an answer that is not one,
 * or a pod with another UID are all a miss with the reason, and the caller falls back to the API.
 */
export async function askPodCache(socketPath: string, pod: { namespace: string; name: string; uid: string }, timeoutMs: number): Promise<CacheLookup> {
  const query = encode({ v: PROTOCOL_VERSION, kind: 'pod', ...pod, waitMs: serverWaitMs(timeoutMs) });
  return new Promise((resolve) => {
    const decoder = new TextDecoder();
    let received = '';
    let socket: BunSocket | undefined;
    let finished = false;
    const finish = (lookup: CacheLookup) => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      socket?.terminate();
      resolve(lookup);
    };
    const failed = (err: NodeJS.ErrnoException) => finish({ miss: `socket ${socketPath}: ${err.code ?? err.message}` });
    const timer = setTimeout(() => finish({ miss: `no answer within ${timeoutMs} ms` }), timeoutMs);
    // Bun.connect, not node:net: no stream machinery to load for one line each way (src/bun.ts).
    bun()
      .connect({
        unix: socketPath,
        socket: {
          open: (s) => void s.write(query),
          data: (_s, chunk) => {
            received += decoder.decode(chunk, { stream: true });
            const end = received.indexOf('\n');
            if (end >= 0) finish(readAnswer(received.slice(0, end), pod.uid));
            else if (received.length > MAX_LINE_BYTES) finish({ miss: 'answer too long' });
          },
          close: () => finish({ miss: 'connection closed without an answer' }),
          error: (_s, err) => failed(err),
          connectError: (_s, err) => failed(err),
        },
      })
      .then((s) => {
        socket = s;
        if (finished) s.terminate();
      }, failed);
  });
}

function readAnswer(line: string, uid: string): CacheLookup {
  let document: unknown;
  try {
    document = JSON.parse(line);
  } catch {
    return { miss: 'answer is not JSON' };
  }
  const answer = PodAnswer.safeParse(document);
  if (!answer.success) return { miss: `answer not understood: ${answer.error.issues[0]?.path.join('.')}: ${answer.error.issues[0]?.message}` };
  if (!answer.data.found) return { miss: answer.data.reason };
  // The server checks the UID too; a pod of another UID is never this sandbox's.
  if (answer.data.pod.metadata.uid !== uid) return { miss: `answer is for another pod (uid ${answer.data.pod.metadata.uid ?? 'none'})` };
  return { pod: answer.data.pod };
}

/**
 * Tells the installer how a verb went (its metrics), once the runtime has its answer. Fire and
 * forget: nothing waits for it and nothing can fail because of it. A unix socket takes the line
 * into the peer's queue as it is written, so the socket is closed at once; a missing socket or a
 * refused connection is ignored.
 */
export function reportOutcome(socketPath: string, report: Omit<Report, 'v' | 'kind'>): void {
  const line = encode({ v: PROTOCOL_VERSION, kind: 'report', ...report });
  const ignore = () => {};
  try {
    bun()
      .connect({
        unix: socketPath,
        socket: {
          open: (s) => {
            s.write(line);
            s.terminate();
          },
          data: ignore,
          error: ignore,
          connectError: ignore,
        },
      })
      .catch(ignore);
  } catch {
    // The runtime has its answer: nothing about the report may change the exit status.
  }
}
