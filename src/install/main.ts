import { mkdirSync, watch, type FSWatcher } from 'node:fs';
import pino, { type Logger } from 'pino';
import type { NodePodsHandler } from '../kube/node-pods.ts';
import { VERSION } from '../version.ts';
import { serveHttp, type HttpRoutes, type HttpServer } from './http.ts';
import type { InstallerMetrics, InstallFailure } from './metrics.ts';
import { DIR_MODE, installBinary, missingPieces, placeEntry, removeBinary, removeEntries, removeKubeconfig, syncKubeconfig, type InstalledBinaries } from './installer.ts';
import { parseInstallSettings, SettingsError, type InstallSettings } from './settings.ts';

/** Coalesces a burst of file events (a writer's truncate + write + close) into one round. */
const SETTLE_MS = 100;
/** After a failed round, try again even if nothing changes (e.g. the token is not mounted yet). */
const RETRY_MS = 1000;
/** A failed taint removal is retried after RETRY_MS, doubling up to this. */
const LAST_TAINT_RETRY_MS = 30_000;
/** How long a stop waits to put the taint back (the DaemonSet gives the pod 10 s to finish). */
const TAINT_ON_STOP_MS = 5000;

/**
 * `istio-cni install [--once]`: the DaemonSet's entrypoint. Copies the executable into the CNI bin
 * dirs, writes the kubeconfig, puts our entry last in the runtime's network config and keeps both
 * in place until SIGTERM/SIGINT, then removes all three. `--once` installs and exits.
 */
export async function install(args: string[]): Promise<number> {
  if (args.some((a) => a !== '--once')) return usage('install [--once]');
  const started = start();
  if (started === undefined) return 1;
  const { settings, log } = started;
  try {
    const binaries = installBinary(settings, await executableToCopy(settings), log);
    mkdirSync(settings.netDir, { recursive: true, mode: DIR_MODE });
    if (args.includes('--once')) {
      syncKubeconfig(settings, log);
      const placement = placeEntry(settings, log);
      if (placement === 'placed' || placement === 'inserted') return 0;
      log.error({ dir: settings.netDir, placement }, 'our entry is not in place');
      return 1;
    }
    return await keepInstalled(settings, binaries, log);
  } catch (err) {
    log.error({ err }, 'install failed');
    return 1;
  }
}

/** `istio-cni uninstall`: what the installer does on SIGTERM, for an operator running it by hand. */
export async function uninstall(args: string[]): Promise<number> {
  if (args.length > 0) return usage('uninstall');
  const started = start();
  if (started === undefined) return 1;
  try {
    removeEverything(started.settings, started.log);
    return 0;
  } catch (err) {
    started.log.error({ err }, 'uninstall failed');
    return 1;
  }
}

function start(): { settings: InstallSettings; log: Logger } | undefined {
  try {
    const settings = parseInstallSettings(process.env);
    const log = pino({ level: settings.logLevel, base: { component: 'install' }, timestamp: pino.stdTimeFunctions.isoTime }, pino.destination({ fd: 2, sync: true }));
    return { settings, log };
  } catch (err) {
    if (!(err instanceof SettingsError)) throw err;
    process.stderr.write(`istio-cni: ${err.message}\n`);
    return undefined;
  }
}

function usage(synopsis: string): number {
  process.stderr.write(`usage: istio-cni ${synopsis}\n`);
  return 2;
}

async function executableToCopy(settings: InstallSettings): Promise<string> {
  if (settings.binarySource !== undefined) return settings.binarySource;
  // dist/istio-cni is a Bun executable (build/build.mjs); under `node` or `bun src/cli.ts` there is none to copy.
  const bun = (globalThis as { Bun?: { isStandaloneExecutable?: boolean } }).Bun;
  if (bun?.isStandaloneExecutable !== true) throw new SettingsError('not running as the single executable: set CNI_BINARY_SOURCE to the istio-cni executable to install');
  return process.execPath;
}

function removeEverything(settings: InstallSettings, log: Logger): void {
  removeEntries(settings, log);
  removeKubeconfig(settings, log);
  removeBinary(settings, log);
}

/**
 * Re-checks the kubeconfig and our entry whenever net.d or the service-account volume changes
 * (calico rewriting its config, a new file sorting first, kubelet swapping in a rotated token),
 * until a signal; then removes everything and resolves with the exit code. Beside it: the kubelet's
 * probes (/healthz, /readyz) on the HTTP port, metrics on their own port, this node's pods watched
 * for the pod cache and repair, and, with NODE_READINESS_TAINT, the node's readiness taint taken
 * off once everything is in place.
 */
async function keepInstalled(settings: InstallSettings, binaries: InstalledBinaries, log: Logger): Promise<number> {
  const { InstallerMetrics } = await import('./metrics.ts');
  const metrics = new InstallerMetrics();
  const metricsServer = await startMetrics(settings, metrics, log);
  // Serving before our entry names the socket: the plugin's first question finds it.
  const agents = await startNodeAgents(settings, metrics, log);
  const http = await startHttp(settings, binaries, log);
  const taint = settings.readinessTaint === undefined ? undefined : await readinessTaint(settings, settings.readinessTaint.nodeName, log);
  let timer: NodeJS.Timeout | undefined;
  let waiting = false;
  let insertedBefore = false;
  let ready = false;
  const round = () => {
    timer = undefined;
    let step: InstallFailure = 'CREATE_KUBECONFIG_FAILURE';
    try {
      syncKubeconfig(settings, log);
      step = 'CREATE_CNI_CONFIG_FAILURE';
      const placement = placeEntry(settings, log);
      if (placement === 'inserted') {
        metrics.inserted(insertedBefore);
        insertedBefore = true;
      }
      if (placement === 'no-config' && !waiting) log.info({ dir: settings.netDir }, 'waiting for a CNI network config');
      waiting = placement === 'no-config';
      const missing = missingPieces(settings, binaries);
      if ((missing.length === 0) !== ready) log.info({ missing }, missing.length === 0 ? 'ready: the executable, the kubeconfig and our entry are in place' : 'not ready');
      ready = missing.length === 0;
      metrics.setReady(ready);
      if (ready) taint?.remove();
    } catch (err) {
      metrics.failed(step);
      metrics.setReady(false);
      log.error({ err }, 'could not put our entry in place; retrying');
      timer ??= setTimeout(round, RETRY_MS);
    }
  };
  const soon = () => {
    if (timer === undefined) timer = setTimeout(round, SETTLE_MS);
  };

  const watchers: FSWatcher[] = [watch(settings.netDir, soon)];
  if (settings.api !== undefined) watchers.push(watch(settings.serviceAccountDir, soon));
  for (const w of watchers) w.on('error', (err) => log.error({ err }, 'watch failed'));

  const stopped = new Promise<number>((resolve) => {
    let stopping = false;
    // The handlers stay: a second signal while the taint goes back must not end the process uncleaned.
    const stop = async (signal: NodeJS.Signals) => {
      if (stopping) return;
      stopping = true;
      clearTimeout(timer);
      for (const w of watchers) w.close();
      // Tainted first: from here on no pod is scheduled onto the node until an installer is ready again.
      await taint?.restore();
      log.info({ signal }, 'removing our entry, the kubeconfig and the executable');
      let code = 0;
      try {
        removeEverything(settings, log);
      } catch (err) {
        log.error({ err }, 'clean-up failed');
        code = 1;
      }
      metrics.setReady(false);
      await Promise.all([agents.close(), http?.close(), metricsServer?.close()]);
      resolve(code);
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
  });
  round();
  // Logged once the signal handlers are in place: from here on a SIGTERM always cleans up.
  log.info({ version: VERSION, netDir: settings.netDir, binDirs: settings.binDirs, podCache: settings.podCache?.socketPath ?? 'off', repair: settings.repair?.mode ?? 'off', readinessTaint: taint !== undefined, http: http?.port ?? 'off', metrics: metricsServer?.port ?? 'off' }, 'watching for changes');
  return stopped;
}

/**
 * GET /healthz: 200 while the installer runs (the kubelet's liveness probe). GET /readyz: 200 when
 * a pod starting now would get the plugin (missingPieces, read from the host at each probe), else
 * 503 naming what is missing. A port that cannot be had is logged; the installer carries on (the
 * probes then fail, which the pod's status shows), since the node needs the plugin more than a probe.
 */
async function startHttp(settings: InstallSettings, binaries: InstalledBinaries, log: Logger): Promise<HttpServer | undefined> {
  const routes: HttpRoutes = {
    '/healthz': () => ({ status: 200, body: 'ok\n' }),
    '/readyz': () => {
      const missing = missingPieces(settings, binaries);
      return missing.length === 0 ? { status: 200, body: 'ready\n' } : { status: 503, body: `${missing.join('\n')}\n` };
    },
  };
  try {
    const server = await serveHttp(settings.http, routes, log);
    log.info({ address: settings.http.address ?? 'every address', port: server.port, routes: Object.keys(routes) }, 'http: serving');
    return server;
  } catch (err) {
    log.error({ address: settings.http.address ?? 'every address', port: settings.http.port, error: (err as Error).message }, 'http: cannot listen; running without probes');
    return undefined;
  }
}

/**
 * The node's readiness taint: remove() takes it off once (retried until it succeeds, so an API
 * server that is away only delays it), restore() puts it back when the installer stops, bounded
 * so that the clean-up still fits the pod's termination grace period.
 */
async function readinessTaint(settings: InstallSettings, nodeName: string, log: Logger): Promise<{ remove(): void; restore(): Promise<void> }> {
  // settings.ts refuses NODE_READINESS_TAINT without KUBERNETES_SERVICE_HOST.
  const api = settings.api!;
  const { apiErrorMessage, coreClient, serviceAccountConfig } = await import('../kube/node-pods.ts');
  const { READINESS_TAINT, setReadinessTaint } = await import('./taint.ts');
  const core = coreClient(serviceAccountConfig(api.server, api.skipTlsVerify, settings.serviceAccountDir));
  let state: 'on' | 'removing' | 'off' = 'on';
  let retryMs = RETRY_MS;
  let retry: NodeJS.Timeout | undefined;
  const remove = () => {
    if (state !== 'on') return;
    state = 'removing';
    setReadinessTaint(core, nodeName, false).then(
      (changed) => {
        state = 'off';
        log.info({ node: nodeName, taint: READINESS_TAINT.key, changed }, changed ? 'removed the node\'s readiness taint' : 'the node has no readiness taint');
      },
      (err: unknown) => {
        state = 'on';
        log.warn({ node: nodeName, error: apiErrorMessage(err), retryInMs: retryMs }, 'could not remove the node\'s readiness taint; retrying');
        retry = setTimeout(remove, retryMs);
        retryMs = Math.min(retryMs * 2, LAST_TAINT_RETRY_MS);
      },
    );
  };
  const restore = async () => {
    clearTimeout(retry);
    try {
      const changed = await setReadinessTaint(core, nodeName, true, AbortSignal.timeout(TAINT_ON_STOP_MS));
      log.info({ node: nodeName, taint: READINESS_TAINT.key, changed }, 'the node carries the readiness taint again');
    } catch (err) {
      // E.g. `kubectl delete -f deploy/`: the ServiceAccount and its RBAC are gone before this pod.
      log.warn({ node: nodeName, error: apiErrorMessage(err) }, 'could not put the node\'s readiness taint back');
    }
  };
  return { remove, restore };
}

/**
 * /metrics on its own port (Istio's installer serves it on 15014, apart from its probes), on every
 * address: Prometheus scrapes the node's. One that cannot be bound is logged; the installer carries on.
 */
async function startMetrics(settings: InstallSettings, metrics: InstallerMetrics, log: Logger): Promise<HttpServer | undefined> {
  if (settings.monitoringPort === undefined) return undefined;
  try {
    const server = await serveHttp({ address: undefined, port: settings.monitoringPort }, {
      '/metrics': async () => ({ status: 200, contentType: metrics.registry.contentType, body: await metrics.registry.metrics() }),
    }, log);
    log.info({ port: server.port, path: '/metrics' }, 'serving metrics');
    return server;
  } catch (err) {
    log.error({ port: settings.monitoringPort, error: (err as Error).message }, 'cannot serve metrics; running without them');
    return undefined;
  }
}

/**
 * The node-local pod cache (this node's pods served to the plugin on a unix socket) and repair
 * (pods that started without capture, labelled or deleted), both fed by one watch of this node's
 * pods, with the official client's informer.
 */
async function startNodeAgents(settings: InstallSettings, metrics: InstallerMetrics, log: Logger): Promise<{ close(): Promise<void> }> {
  const nothing = { close: async () => {} };
  if (settings.api === undefined) {
    log.info('pod cache and repair off: they need KUBERNETES_SERVICE_HOST');
    return nothing;
  }
  // Imported by name: esbuild keeps the client's generated API groups out only for static imports.
  const { coreClient, serviceAccountConfig, watchNodePods } = await import('../kube/node-pods.ts');
  const config = serviceAccountConfig(settings.api.server, settings.api.skipTlsVerify, settings.serviceAccountDir);
  const handlers: NodePodsHandler[] = [];
  const closing: (() => Promise<void> | void)[] = [];
  let onListed = (pods: number) => log.info({ pods }, 'listed this node\'s pods');

  if (settings.podCache === undefined) log.info('pod cache off: it needs NODE_NAME and POD_CACHE_SOCKET');
  else {
    const { PodStore } = await import('../podcache/store.ts');
    const { servePodCache } = await import('../podcache/server.ts');
    const store = new PodStore();
    try {
      const server = await servePodCache(settings.podCache.socketPath, store, log, {
        answered: (found) => metrics.cacheAnswered(found),
        reported: (report) => metrics.pluginReported(report),
      });
      closing.push(() => server.close());
      handlers.push({
        put: (pod) => {
          if (!store.put(pod)) log.warn({ pod: `${pod.metadata?.namespace}/${pod.metadata?.name}` }, 'pod cache: not a pod the plugin can read; left out');
        },
        remove: (pod) => store.remove(pod),
      });
      onListed = (pods) => {
        store.synced = true;
        log.info({ pods }, 'pod cache: listed this node\'s pods');
      };
      log.info({ socket: settings.podCache.socketPath, node: settings.podCache.nodeName }, 'pod cache: serving');
    } catch (err) {
      // The plugin then asks the API server, as without a cache: no reason to keep pods from starting.
      log.error({ error: (err as Error).message }, 'pod cache: cannot serve; running without it');
    }
  }

  if (settings.repair !== undefined) {
    const { repairController } = await import('../repair/controller.ts');
    const controller = repairController(coreClient(config), settings.repair, log, (type, result) => metrics.repair(type, result));
    handlers.push(controller);
    closing.push(() => controller.stop());
    log.info({ mode: settings.repair.mode, node: settings.repair.nodeName }, 'repair: on');
  }

  const nodeName = settings.repair?.nodeName ?? settings.podCache?.nodeName;
  if (handlers.length === 0 || nodeName === undefined) return nothing;
  const watch = watchNodePods(config, nodeName, { put: (pod) => handlers.forEach((h) => h.put(pod)), remove: (pod) => handlers.forEach((h) => h.remove(pod)) }, log, onListed);
  return {
    async close() {
      watch.stop();
      await Promise.all(closing.map((close) => close()));
    },
  };
}
