import { join } from 'node:path';
import { ApiException, CoreV1Api, createConfiguration, KubeConfig, ListWatch, Observable, ServerConfiguration, Watch, type Cluster, type ConfigurationOptions, type RequestContext, type V1Pod } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { Agent } from 'undici';
import { USER_AGENT } from '../version.ts';
import type { KubeConnection } from './kubeconfig.ts';

/**
 * The official client (@kubernetes/client-node) for the node-side jobs that run for long: the
 * installer's pod cache, repair and the node readiness taint. The plugin's per-pod lookup keeps its
 * own lean GET (client.ts): loading this client costs a start more than the whole of a pass-through
 * ADD (README, "Pod lookup").
 */

/**
 * Every request says who sends it, as the plugin's GET does (the API server's audit log shows it):
 * the client's own `kubernetes-client-javascript/<version>` is replaced. A watch takes its headers
 * from here; the API groups' calls too, made by coreClient without the client's User-Agent middleware.
 */
/** The largest answer the client may read: it buffers a list whole, and a watch event up to its newline. */
const MAX_RESPONSE_BYTES = 32 * 1024 * 1024;

class IstioCniKubeConfig extends KubeConfig {
  constructor() {
    super();
    // Every request (the list, each watch over its 300 s, repair's and the taint's calls) goes through
    // a dispatcher that drops an answer beyond MAX_RESPONSE_BYTES: one that never ends must not take
    // the installer's memory; the caller sees an error and starts again. The client's dispatcher
    // factory is typed private, so it is replaced on the instance, keeping its connection options.
    (this as unknown as { createDispatcher: (cluster: Cluster | null, agentOptions: object) => Agent }).createDispatcher = (cluster, agentOptions) => {
      const options = this.createDispatcherOptions(cluster, agentOptions);
      return new Agent({ ...('connect' in options ? { connect: options.connect } : {}), maxResponseSize: MAX_RESPONSE_BYTES });
    };
  }

  override async applySecurityAuthentication(context: RequestContext): Promise<void> {
    await super.applySecurityAuthentication(context);
    context.setHeaderParam('User-Agent', USER_AGENT);
  }
}

/** A connection read the plugin's way (kubeconfig.ts: exec plugins refused, tokenFile re-read) as the client's config. */
export function clientConfig(conn: KubeConnection): KubeConfig {
  return configOf(
    { server: conn.server.href.replace(/\/$/, ''), caData: conn.ca?.toString('base64'), skipTLSVerify: conn.insecure, tlsServerName: conn.serverName },
    {
      token: conn.token,
      certData: conn.cert?.toString('base64'),
      keyData: conn.key?.toString('base64'),
      // The client re-reads a token file every 60 s, as client-go does: tokens rotate.
      authProvider: conn.tokenFile === undefined ? undefined : { name: 'tokenFile', config: { tokenFile: conn.tokenFile } },
    },
  );
}

/** The DaemonSet pod's own service account: the projected volume's ca.crt and (rotating) token. */
export function serviceAccountConfig(server: string, skipTlsVerify: boolean, serviceAccountDir: string): KubeConfig {
  return configOf(
    { server, caFile: skipTlsVerify ? undefined : join(serviceAccountDir, 'ca.crt'), skipTLSVerify: skipTlsVerify },
    { authProvider: { name: 'tokenFile', config: { tokenFile: join(serviceAccountDir, 'token') } } },
  );
}

function configOf(cluster: { server: string; caData?: string; caFile?: string; skipTLSVerify: boolean; tlsServerName?: string }, user: object): KubeConfig {
  const config = new IstioCniKubeConfig();
  config.loadFromOptions({
    clusters: [{ name: 'cluster', ...cluster }],
    users: [{ name: 'istio-cni', ...user }],
    contexts: [{ name: 'istio-cni', cluster: 'cluster', user: 'istio-cni' }],
    currentContext: 'istio-cni',
  });
  return config;
}

/** The core API group's client, for the calls beside the watch (repair's patch and delete, the taint's node read and patch). */
export function coreClient(config: KubeConfig): CoreV1Api {
  // Not config.makeApiClient: its middleware sets the client's own User-Agent over ours.
  const server = config.getCurrentCluster()?.server;
  if (server === undefined) throw new Error('no cluster in the client\'s config');
  return new CoreV1Api(createConfiguration({ baseServer: new ServerConfiguration(server, {}), authMethods: { default: config } }));
}

/** Per-call options: the call is aborted with `signal`. */
export function abortedBy(signal: AbortSignal): ConfigurationOptions {
  const pass = <T>(value: T) => new Observable(Promise.resolve(value));
  return {
    middleware: [{ pre: (context: RequestContext) => { context.setSignal(signal); return pass(context); }, post: pass }],
    middlewareMergeStrategy: 'append',
  };
}

/** The API server's own words for a failed call (its Status message), not the client's dump of headers and body. */
export function apiErrorMessage(err: unknown): string {
  if (!(err instanceof ApiException)) return (err as Error)?.message ?? String(err);
  const body = err.body as { message?: unknown } | string | undefined;
  const message = typeof body === 'object' && typeof body?.message === 'string' ? body.message : typeof body === 'string' ? body : '';
  return `HTTP ${err.code}${message === '' ? '' : ` ${message}`}`;
}

/** What a node-pods watch hands on, in order: every pod as it is now, and every pod deleted. */
export interface NodePodsHandler {
  put(pod: V1Pod): void;
  remove(pod: V1Pod): void;
}

/** Server-side end of each watch, as client-go's reflectors ask (5-10 min); the informer then resumes. */
const WATCH_SECONDS = 300;
const FIRST_RETRY_MS = 250;
const LAST_RETRY_MS = 30_000;

/**
 * Follows this node's pods with the client's informer: a list, then a watch from its
 * resourceVersion (field selector spec.nodeName, bookmarks on), resumed from the last
 * resourceVersion whenever it ends, and a new list when that version is too old (410). A watch that
 * breaks (the informer then stops) is started again after a back-off, from where it was.
 * `onListed` is called once, when the first list is in.
 */
export function watchNodePods(config: KubeConfig, nodeName: string, handler: NodePodsHandler, log: Logger, onListed?: (pods: number) => void): { stop(): void } {
  const core = coreClient(config);
  const fieldSelector = `spec.nodeName=${nodeName}`;
  const watch = new Watch(config);
  // The watch's idle limit (30 s by default, typed private, a plain field): longer than the server
  // keeps a watch open, so that a quiet node is not watched anew every 30 s.
  (watch as unknown as { requestTimeoutMs: number }).requestTimeoutMs = (WATCH_SECONDS + 30) * 1000;
  // Every event is logged at debug: the informer itself says nothing of bookmarks or of a 410.
  const logged = {
    watch: (path: string, query: Record<string, string | number | boolean | undefined>, onEvent: (phase: string, object: V1Pod, raw: unknown) => void, done: (err: unknown) => void) =>
      watch.watch(path, query, (phase: string, object: V1Pod & { code?: number }, raw: unknown) => {
        if (phase === 'ERROR' && object.code === 410) log.info({ resourceVersion: query.resourceVersion }, 'watch resourceVersion expired: listing again');
        else log.debug({ type: phase, resourceVersion: object.metadata?.resourceVersion }, 'watch event');
        onEvent(phase, object, raw);
      }, done),
  } as unknown as Watch;
  const path = `/api/v1/pods?fieldSelector=${encodeURIComponent(fieldSelector)}&allowWatchBookmarks=true&timeoutSeconds=${WATCH_SECONDS}`;
  const informer = new ListWatch<V1Pod>(path, logged, () => core.listPodForAllNamespaces({ fieldSelector }), false);

  let retryMs = FIRST_RETRY_MS;
  let retry: NodeJS.Timeout | undefined;
  let stopped = false;
  let listed = false;
  const put = (pod: V1Pod) => {
    retryMs = FIRST_RETRY_MS;
    handler.put(pod);
  };
  informer.on('add', put);
  informer.on('update', put);
  informer.on('delete', (pod) => handler.remove(pod));
  informer.on('connect', () => log.debug({ resourceVersion: informer.latestResourceVersion() }, 'watching this node\'s pods'));
  informer.on('error', (err: unknown) => {
    if (stopped) return;
    log.warn({ error: (err as Error)?.message ?? String(err), resourceVersion: informer.latestResourceVersion(), retryInMs: retryMs }, 'pod list/watch failed');
    retry = setTimeout(() => void start(), retryMs);
    retryMs = Math.min(retryMs * 2, LAST_RETRY_MS);
  });
  const start = async () => {
    await informer.start();
    if (!listed && informer.latestResourceVersion() !== '') {
      listed = true;
      onListed?.(informer.list().length);
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
