import { mkdirSync, watch, type FSWatcher } from 'node:fs';
import pino, { type Logger } from 'pino';
import { VERSION } from '../version.ts';
import { serveHttp, type HttpRoutes, type HttpServer } from './http.ts';
import { installBinary, missingPieces, placeEntry, removeBinary, removeEntries, removeKubeconfig, syncKubeconfig, type InstalledBinaries } from './installer.ts';
import { parseInstallSettings, SettingsError, type InstallSettings } from './settings.ts';
import { installerConnection, READINESS_TAINT, setReadinessTaint } from './taint.ts';

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
    mkdirSync(settings.netDir, { recursive: true });
    if (args.includes('--once')) {
      syncKubeconfig(settings, log);
      const placement = placeEntry(settings, log);
      if (placement === 'placed') return 0;
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
 * until a signal; then removes everything and resolves with the exit code. Meanwhile it answers
 * the kubelet's probes and, with NODE_READINESS_TAINT, takes the node's readiness taint off once
 * everything is in place.
 */
async function keepInstalled(settings: InstallSettings, binaries: InstalledBinaries, log: Logger): Promise<number> {
  // Serving before our entry names the socket: the plugin's first question finds it.
  const cache = await startPodCache(settings, log);
  const http = await startHttp(settings, binaries, log);
  const taint = settings.readinessTaint === undefined ? undefined : readinessTaint(settings, settings.readinessTaint.nodeName, log);
  let timer: NodeJS.Timeout | undefined;
  let waiting = false;
  let ready = false;
  const round = () => {
    timer = undefined;
    try {
      syncKubeconfig(settings, log);
      const placement = placeEntry(settings, log);
      if (placement === 'no-config' && !waiting) log.info({ dir: settings.netDir }, 'waiting for a CNI network config');
      waiting = placement === 'no-config';
      const missing = missingPieces(settings, binaries);
      if ((missing.length === 0) !== ready) log.info({ missing }, missing.length === 0 ? 'ready: the executable, the kubeconfig and our entry are in place' : 'not ready');
      ready = missing.length === 0;
      if (ready) taint?.remove();
    } catch (err) {
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
      await Promise.all([cache?.close(), http?.close()]);
      resolve(code);
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
  });
  round();
  // Logged once the signal handlers are in place: from here on a SIGTERM always cleans up.
  log.info({ version: VERSION, netDir: settings.netDir, binDirs: settings.binDirs, podCache: settings.podCache?.socketPath ?? 'off', readinessTaint: taint !== undefined, http: http?.port ?? 'off' }, 'watching for changes');
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
function readinessTaint(settings: InstallSettings, nodeName: string, log: Logger): { remove(): void; restore(): Promise<void> } {
  let state: 'on' | 'removing' | 'off' = 'on';
  let retryMs = RETRY_MS;
  let retry: NodeJS.Timeout | undefined;
  const remove = () => {
    if (state !== 'on') return;
    state = 'removing';
    setReadinessTaint(installerConnection(settings), nodeName, false).then(
      (changed) => {
        state = 'off';
        log.info({ node: nodeName, taint: READINESS_TAINT.key, changed }, changed ? 'removed the node\'s readiness taint' : 'the node has no readiness taint');
      },
      (err: Error) => {
        state = 'on';
        log.warn({ node: nodeName, error: err.message, retryInMs: retryMs }, 'could not remove the node\'s readiness taint; retrying');
        retry = setTimeout(remove, retryMs);
        retryMs = Math.min(retryMs * 2, LAST_TAINT_RETRY_MS);
      },
    );
  };
  const restore = async () => {
    clearTimeout(retry);
    try {
      const changed = await setReadinessTaint(installerConnection(settings), nodeName, true, AbortSignal.timeout(TAINT_ON_STOP_MS));
      log.info({ node: nodeName, taint: READINESS_TAINT.key, changed }, 'the node carries the readiness taint again');
    } catch (err) {
      // E.g. `kubectl delete -f deploy/`: the ServiceAccount and its RBAC are gone before this pod.
      log.warn({ node: nodeName, error: (err as Error).message }, 'could not put the node\'s readiness taint back');
    }
  };
  return { remove, restore };
}

/** The node-local pod cache: this node's pods from a watch, served to the plugin on a unix socket. */
async function startPodCache(settings: InstallSettings, log: Logger): Promise<{ close(): Promise<void> } | undefined> {
  if (settings.podCache === undefined || settings.api === undefined) {
    log.info('pod cache off: it needs NODE_NAME, KUBERNETES_SERVICE_HOST and POD_CACHE_SOCKET');
    return undefined;
  }
  const { PodStore } = await import('../podcache/store.ts');
  const { servePodCache } = await import('../podcache/server.ts');
  const { watchNodePods } = await import('../podcache/watch.ts');
  const store = new PodStore();
  let server: Awaited<ReturnType<typeof servePodCache>>;
  try {
    server = await servePodCache(settings.podCache.socketPath, store, log);
  } catch (err) {
    // The plugin then asks the API server, as without a cache: no reason to keep pods from starting.
    log.error({ error: (err as Error).message }, 'pod cache: cannot serve; running without it');
    return undefined;
  }
  const watch = watchNodePods({ ...settings.api, serviceAccountDir: settings.serviceAccountDir }, settings.podCache.nodeName, store, log);
  log.info({ socket: settings.podCache.socketPath, node: settings.podCache.nodeName }, 'pod cache: serving');
  return {
    async close() {
      watch.stop();
      await server.close();
    },
  };
}
