import { join } from 'node:path';
import { CoreV1Api, KubeConfig, ListWatch, Watch, type V1Pod } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import type { PodStore } from './store.ts';

export interface ApiAccess {
  server: string;
  skipTlsVerify: boolean;
  /** The projected service-account volume: token (re-read as it rotates), ca.crt. */
  serviceAccountDir: string;
}

/** Server-side end of each watch, as client-go's reflectors ask (5-10 min); the informer then resumes. */
const WATCH_SECONDS = 300;
const FIRST_RETRY_MS = 250;
const LAST_RETRY_MS = 30_000;

/**
 * Keeps `store` in step with this node's pods, with the official client's informer: a list, then a
 * watch from its resourceVersion (field selector spec.nodeName, bookmarks on), resumed from the last
 * resourceVersion whenever it ends, and a new list when that version is too old (410). A watch that
 * breaks (the informer then stops) is started again after a back-off, from where it was.
 */
export function watchNodePods(api: ApiAccess, nodeName: string, store: PodStore, log: Logger): { stop(): void } {
  const config = new KubeConfig();
  config.loadFromOptions({
    clusters: [{ name: 'cluster', server: api.server, caFile: api.skipTlsVerify ? undefined : join(api.serviceAccountDir, 'ca.crt'), skipTLSVerify: api.skipTlsVerify }],
    users: [{ name: 'istio-cni', authProvider: { name: 'tokenFile', config: { tokenFile: join(api.serviceAccountDir, 'token') } } }],
    contexts: [{ name: 'istio-cni', cluster: 'cluster', user: 'istio-cni' }],
    currentContext: 'istio-cni',
  });
  const core = config.makeApiClient(CoreV1Api);
  const fieldSelector = `spec.nodeName=${nodeName}`;
  const watch = new Watch(config);
  // The watch's idle limit (30 s by default, typed private, a plain field): longer than the server
  // keeps a watch open, so that a quiet node is not watched anew every 30 s.
  (watch as unknown as { requestTimeoutMs: number }).requestTimeoutMs = (WATCH_SECONDS + 30) * 1000;
  const path = `/api/v1/pods?fieldSelector=${encodeURIComponent(fieldSelector)}&allowWatchBookmarks=true&timeoutSeconds=${WATCH_SECONDS}`;
  const informer = new ListWatch<V1Pod>(path, watch, () => core.listPodForAllNamespaces({ fieldSelector }), false);

  let retryMs = FIRST_RETRY_MS;
  let retry: NodeJS.Timeout | undefined;
  let stopped = false;
  const put = (pod: V1Pod) => {
    retryMs = FIRST_RETRY_MS;
    if (!store.put(pod)) log.warn({ pod: `${pod.metadata?.namespace}/${pod.metadata?.name}` }, 'pod cache: not a pod the plugin can read; left out');
  };
  informer.on('add', put);
  informer.on('update', put);
  informer.on('delete', (pod) => store.remove(pod));
  informer.on('connect', () => log.debug({ resourceVersion: informer.latestResourceVersion() }, 'pod cache: watching'));
  informer.on('error', (err: unknown) => {
    if (stopped) return;
    log.warn({ error: (err as Error)?.message ?? String(err), resourceVersion: informer.latestResourceVersion(), retryInMs: retryMs }, 'pod cache: list/watch failed');
    retry = setTimeout(() => void start(), retryMs);
    retryMs = Math.min(retryMs * 2, LAST_RETRY_MS);
  });
  const start = async () => {
    await informer.start();
    if (!store.synced && informer.latestResourceVersion() !== '') {
      store.synced = true;
      log.info({ node: nodeName, pods: store.size, resourceVersion: informer.latestResourceVersion() }, 'pod cache: listed this node\'s pods');
    }
  };
  void start();
  return {
    stop() {
      stopped = true;
      clearTimeout(retry);
      void informer.stop();
    },
  };
}
