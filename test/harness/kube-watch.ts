// Pods as a collection on the fake kube-apiserver: list and watch (chunked JSON events, resuming
// from a resourceVersion, 410 Expired once history is compacted, optional bookmarks), merge-patch
// and delete with a UID precondition. Plugs into kube-api.ts through api.addRoute; changes made
// here land in api.pods, so the plugin's pod GET sees them too.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { deepMerge, type JsonObject } from './conflist.ts';
import { sendJson, statusObject, type FakeKubeApi, type Pod, type RecordedRequest } from './kube-api.ts';

export type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED';

interface HistoryEntry {
  resourceVersion: number;
  type: WatchEventType;
  pod: Pod;
}

interface OpenWatch {
  res: ServerResponse;
  nodeName: string | undefined;
  bookmarks: boolean;
}

export interface PodCollection {
  /** The collection's current resourceVersion. */
  resourceVersion(): string;
  /** Add or replace a pod (a new resourceVersion; ADDED or MODIFIED to every open watch). Returns what is stored. */
  put(pod: Pod): Pod;
  /** Deep-merge `change` into a stored pod (objects merge, arrays replace, null deletes) and put it. */
  change(ns: string, name: string, change: JsonObject): Pod;
  /** Remove a pod (DELETED to every open watch). */
  remove(ns: string, name: string): void;
  /** Send a BOOKMARK with the current resourceVersion to the watches that asked for bookmarks. */
  bookmark(): void;
  /** Cut every open watch stream mid-flight (the socket is destroyed); returns how many there were. */
  dropWatches(): number;
  /** Forget the event history: a watch from any resourceVersion before now gets 410 Expired. */
  compact(): void;
  /** Watch streams open right now. */
  openWatches(): number;
  /** Recorded list requests (GET /api/v1/pods without watch) and watch requests. */
  lists(): RecordedRequest[];
  watches(): RecordedRequest[];
}

const PODS = '/api/v1/pods';
const POD_PATH = /^\/api\/v1\/namespaces\/([^/]+)\/pods\/([^/]+)$/;

/** Serve list/watch/patch/delete for pods on `api`; the pods it already has are the collection's start. */
export function servePodWatch(api: FakeKubeApi): PodCollection {
  let current = 2000;
  /** Events after `compactedAt` are kept; a watch from an older resourceVersion is answered 410. */
  let compactedAt = current;
  const history: HistoryEntry[] = [];
  const open = new Set<OpenWatch>();
  const key = (ns: string, name: string) => `${ns}/${name}`;

  const record = (type: WatchEventType, pod: Pod): Pod => {
    current += 1;
    const stored = deepMerge(pod, { metadata: { resourceVersion: String(current) } });
    history.push({ resourceVersion: current, type, pod: stored });
    for (const w of open) {
      if (matches(stored, w.nodeName)) writeEvent(w.res, type, stored);
    }
    return stored;
  };

  const collection: PodCollection = {
    resourceVersion: () => String(current),
    put(pod) {
      const k = key(pod.metadata.namespace, pod.metadata.name);
      const stored = record(api.pods.has(k) ? 'MODIFIED' : 'ADDED', pod);
      api.pods.set(k, stored);
      return stored;
    },
    change(ns, name, change) {
      const pod = api.pods.get(key(ns, name));
      if (!pod) throw new Error(`no pod ${ns}/${name}`);
      return collection.put(deepMerge(pod, change));
    },
    remove(ns, name) {
      const pod = api.pods.get(key(ns, name));
      if (!pod) return;
      api.pods.delete(key(ns, name));
      record('DELETED', pod);
    },
    bookmark() {
      const object = { kind: 'Pod', apiVersion: 'v1', metadata: { resourceVersion: String(current) } };
      for (const w of open) if (w.bookmarks) w.res.write(`${JSON.stringify({ type: 'BOOKMARK', object })}\n`);
    },
    dropWatches() {
      const n = open.size;
      for (const w of open) w.res.destroy();
      open.clear();
      return n;
    },
    compact() {
      history.length = 0;
      compactedAt = current;
    },
    openWatches: () => open.size,
    lists: () => api.requests.filter((r) => r.path === PODS && !isWatch(new URLSearchParams(r.query))),
    watches: () => api.requests.filter((r) => r.path === PODS && isWatch(new URLSearchParams(r.query))),
  };

  const list = (res: ServerResponse, rec: RecordedRequest, nodeName: string | undefined) => {
    const items = [...api.pods.values()].filter((p) => matches(p, nodeName));
    rec.status = 200;
    sendJson(res, 200, { kind: 'PodList', apiVersion: 'v1', metadata: { resourceVersion: String(current) }, items });
  };

  const watch = (req: IncomingMessage, res: ServerResponse, rec: RecordedRequest, query: URLSearchParams, nodeName: string | undefined) => {
    rec.status = 200;
    res.writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-cache, private', 'Transfer-Encoding': 'chunked' });
    // A real apiserver sends the headers at once; Node would hold them back until the first event.
    res.flushHeaders();
    const from = query.get('resourceVersion');
    if (from !== null && from !== '' && from !== '0') {
      const since = Number(from);
      if (!Number.isInteger(since) || since < compactedAt) {
        // What a real apiserver does: 200, then one ERROR event carrying a 410 Status, then the end.
        const expired = statusObject(410, 'Expired', `too old resource version: ${from} (${compactedAt})`);
        res.end(`${JSON.stringify({ type: 'ERROR', object: expired })}\n`);
        return;
      }
      for (const e of history) {
        if (e.resourceVersion > since && matches(e.pod, nodeName)) writeEvent(res, e.type, e.pod);
      }
    } else {
      for (const p of api.pods.values()) if (matches(p, nodeName)) writeEvent(res, 'ADDED', p);
    }
    const w: OpenWatch = { res, nodeName, bookmarks: query.get('allowWatchBookmarks') === 'true' };
    open.add(w);
    const timeoutSeconds = Number(query.get('timeoutSeconds') ?? 0);
    const timer = timeoutSeconds > 0 ? setTimeout(() => res.end(), timeoutSeconds * 1000) : undefined;
    const forget = () => {
      clearTimeout(timer);
      open.delete(w);
    };
    res.once('close', forget);
    req.once('close', forget);
  };

  const patch = async (req: IncomingMessage, res: ServerResponse, rec: RecordedRequest, ns: string, name: string) => {
    const reply = (status: number, body: unknown) => {
      rec.status = status;
      sendJson(res, status, body);
    };
    if (req.headers['content-type'] !== 'application/merge-patch+json') {
      return reply(415, statusObject(415, 'UnsupportedMediaType', `the body of the request was in an unknown format - accepted media types include: application/merge-patch+json`));
    }
    const body = await readJson(req);
    if (body === undefined) return reply(400, statusObject(400, 'BadRequest', 'the body of the request is not a JSON object'));
    if (!api.pods.has(key(ns, name))) return reply(404, statusObject(404, 'NotFound', `pods "${name}" not found`, { name, kind: 'pods' }));
    reply(200, collection.change(ns, name, body));
  };

  const remove = async (req: IncomingMessage, res: ServerResponse, rec: RecordedRequest, ns: string, name: string) => {
    const reply = (status: number, body: unknown) => {
      rec.status = status;
      sendJson(res, status, body);
    };
    const options = (await readJson(req)) ?? {};
    const pod = api.pods.get(key(ns, name));
    if (!pod) return reply(404, statusObject(404, 'NotFound', `pods "${name}" not found`, { name, kind: 'pods' }));
    const wantedUid = (options.preconditions as JsonObject | undefined)?.uid;
    if (wantedUid !== undefined && wantedUid !== pod.metadata.uid) {
      return reply(409, statusObject(409, 'Conflict', `Precondition failed: UID in precondition: ${String(wantedUid)}, UID in object meta: ${pod.metadata.uid}`, { name, kind: 'pods' }));
    }
    collection.remove(ns, name);
    reply(200, pod);
  };

  api.addRoute(({ req, res, url, record: rec }) => {
    if (url.pathname === PODS && req.method === 'GET') {
      const nodeName = nodeNameSelector(url.searchParams.get('fieldSelector'));
      if (nodeName === null) {
        rec.status = 400;
        sendJson(res, 400, statusObject(400, 'BadRequest', `unsupported fieldSelector ${url.searchParams.get('fieldSelector')}: the fake serves spec.nodeName=<name> only`));
      } else if (isWatch(url.searchParams)) watch(req, res, rec, url.searchParams, nodeName);
      else list(res, rec, nodeName);
      return true;
    }
    const m = POD_PATH.exec(url.pathname);
    if (m && (req.method === 'PATCH' || req.method === 'DELETE')) {
      const [ns, name] = [decodeURIComponent(m[1]!), decodeURIComponent(m[2]!)];
      void (req.method === 'PATCH' ? patch(req, res, rec, ns, name) : remove(req, res, rec, ns, name));
      return true;
    }
    return false;
  });
  return collection;
}

function isWatch(query: URLSearchParams): boolean {
  const w = query.get('watch');
  return w === 'true' || w === '1';
}

/** undefined: no selector; a name: spec.nodeName=<name>; null: a selector the fake does not serve. */
function nodeNameSelector(selector: string | null): string | undefined | null {
  if (selector === null || selector === '') return undefined;
  const m = /^spec\.nodeName==?([^,]+)$/.exec(selector);
  return m ? m[1]! : null;
}

function matches(pod: Pod, nodeName: string | undefined): boolean {
  return nodeName === undefined || pod.spec.nodeName === nodeName;
}

function writeEvent(res: ServerResponse, type: WatchEventType, pod: Pod): void {
  res.write(`${JSON.stringify({ type, object: pod })}\n`);
}

async function readJson(req: IncomingMessage): Promise<JsonObject | undefined> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  const text = Buffer.concat(chunks).toString('utf8');
  if (text === '') return undefined;
  try {
    const value: unknown = JSON.parse(text);
    return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as JsonObject) : undefined;
  } catch {
    return undefined;
  }
}
