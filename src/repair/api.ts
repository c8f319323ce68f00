import { z } from 'zod';
import type { KubeConnection } from '../kube/kubeconfig.ts';
import { ApiStatusError, MAX_LIST_BYTES, MAX_OBJECT_BYTES, openApiRequest, readText, statusError } from '../kube/transport.ts';
import { WatchedPod } from './pod.ts';

const REQUEST_IDLE_MS = 30_000;
/** The API server ends a watch after this long (client-go asks for 5-10 minutes); we then resume it. */
const WATCH_SECONDS = 300;

const PodList = z.object({ metadata: z.object({ resourceVersion: z.string() }), items: z.array(WatchedPod) });
export type PodList = z.infer<typeof PodList>;

const WatchEvent = z.discriminatedUnion('type', [
  z.object({ type: z.enum(['ADDED', 'MODIFIED', 'DELETED']), object: WatchedPod }),
  z.object({ type: z.literal('BOOKMARK'), object: z.object({ metadata: z.object({ resourceVersion: z.string() }) }) }),
  z.object({ type: z.literal('ERROR'), object: z.object({ code: z.number().optional(), message: z.string().optional() }) }),
]);
/** What a watch hands on: ERROR events end the watch instead. */
export type PodEvent = Exclude<z.infer<typeof WatchEvent>, { type: 'ERROR' }>;

/** How a watch stream ended: the server closed it (resume from the last resourceVersion), or that version is too old (list again). */
export type WatchEnd = 'closed' | 'expired';

const nodePods = (nodeName: string) => `/api/v1/pods?fieldSelector=${encodeURIComponent(`spec.nodeName=${nodeName}`)}`;
const podPath = (namespace: string, name: string) => `/api/v1/namespaces/${encodeURIComponent(namespace)}/pods/${encodeURIComponent(name)}`;

export async function listNodePods(conn: KubeConnection, nodeName: string, signal: AbortSignal): Promise<PodList> {
  const res = await openApiRequest(conn, { method: 'GET', path: nodePods(nodeName), idleTimeoutMs: REQUEST_IDLE_MS, signal });
  if (res.statusCode !== 200) throw await statusError(res);
  return parse(PodList, await readText(res, MAX_LIST_BYTES), 'pod list');
}

/**
 * Watches the node's pods from `resourceVersion`, handing each event to `onEvent` in order (the
 * next is read only when it is done). Resolves when the stream ends; rejects when it breaks.
 */
export async function watchNodePods(
  conn: KubeConnection,
  nodeName: string,
  resourceVersion: string,
  onEvent: (event: PodEvent) => Promise<void>,
  signal: AbortSignal,
): Promise<WatchEnd> {
  const query = `&watch=true&allowWatchBookmarks=true&timeoutSeconds=${WATCH_SECONDS}&resourceVersion=${encodeURIComponent(resourceVersion)}`;
  const res = await openApiRequest(conn, { method: 'GET', path: nodePods(nodeName) + query, idleTimeoutMs: (WATCH_SECONDS + 30) * 1000, signal });
  if (res.statusCode === 410) return 'expired';
  if (res.statusCode !== 200) throw await statusError(res);
  let pending = '';
  for await (const chunk of res) {
    pending += (chunk as Buffer).toString('utf8');
    const lines = pending.split('\n');
    pending = lines.pop() ?? '';
    // One event is one object: a line that never ends is not buffered without bound.
    if (pending.length > MAX_OBJECT_BYTES) throw new Error(`watch event larger than ${MAX_OBJECT_BYTES} bytes`);
    for (const line of lines) {
      if (line.trim() === '') continue;
      const event = parse(WatchEvent, line, 'watch event');
      if (event.type === 'ERROR') {
        if (event.object.code === 410) return 'expired';
        throw new ApiStatusError(event.object.code ?? 0, `watch error: ${event.object.message ?? 'no message'}`);
      }
      await onEvent(event);
    }
  }
  return 'closed';
}

/** Merge-patches one label onto the pod. */
export async function labelPod(conn: KubeConnection, pod: WatchedPod, key: string, value: string, signal: AbortSignal): Promise<void> {
  const res = await openApiRequest(conn, {
    method: 'PATCH',
    path: podPath(pod.metadata.namespace, pod.metadata.name),
    body: { contentType: 'application/merge-patch+json', json: { metadata: { labels: { [key]: value } } } },
    idleTimeoutMs: REQUEST_IDLE_MS,
    signal,
  });
  if (res.statusCode !== 200) throw await statusError(res);
  // The status says it all; a body that never ends is not read.
  res.destroy();
}

/**
 * Deletes the pod, only if it is still the same pod (a UID precondition: a StatefulSet may have
 * made a new pod of that name meanwhile). False when it was gone or replaced already.
 */
export async function deletePod(conn: KubeConnection, pod: WatchedPod, signal: AbortSignal): Promise<boolean> {
  const res = await openApiRequest(conn, {
    method: 'DELETE',
    path: podPath(pod.metadata.namespace, pod.metadata.name),
    body: { contentType: 'application/json', json: { apiVersion: 'v1', kind: 'DeleteOptions', preconditions: { uid: pod.metadata.uid } } },
    idleTimeoutMs: REQUEST_IDLE_MS,
    signal,
  });
  if (res.statusCode === 404 || res.statusCode === 409) {
    res.destroy();
    return false;
  }
  if (res.statusCode !== 200 && res.statusCode !== 202) throw await statusError(res);
  res.destroy();
  return true;
}

function parse<T extends z.ZodType>(schema: T, text: string, what: string): z.output<T> {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new Error(`${what} is not JSON`);
  }
  const parsed = schema.safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new Error(`${what} is not what the API serves: ${issue?.path.join('.')}: ${issue?.message}`);
  }
  return parsed.data;
}
