import { mkdirSync, watch, type FSWatcher } from 'node:fs';
import pino, { type Logger } from 'pino';
import { installBinary, placeEntry, removeBinary, removeEntries, removeKubeconfig, syncKubeconfig } from './installer.ts';
import { parseInstallSettings, SettingsError, type InstallSettings } from './settings.ts';

/** Coalesces a burst of file events (a writer's truncate + write + close) into one round. */
const SETTLE_MS = 100;
/** After a failed round, try again even if nothing changes (e.g. the token is not mounted yet). */
const RETRY_MS = 1000;

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
    installBinary(settings, await executableToCopy(settings), log);
    mkdirSync(settings.netDir, { recursive: true });
    if (args.includes('--once')) {
      syncKubeconfig(settings, log);
      const placement = placeEntry(settings, log);
      if (placement === 'placed') return 0;
      log.error({ dir: settings.netDir, placement }, 'our entry is not in place');
      return 1;
    }
    return await keepInstalled(settings, log);
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
  const sea = await import('node:sea');
  if (!sea.isSea()) throw new SettingsError('not running as the single executable: set CNI_BINARY_SOURCE to the istio-cni executable to install');
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
 * until a signal; then removes everything and resolves with the exit code.
 */
async function keepInstalled(settings: InstallSettings, log: Logger): Promise<number> {
  // Serving before our entry names the socket: the plugin's first question finds it.
  const cache = await startPodCache(settings, log);
  let timer: NodeJS.Timeout | undefined;
  let waiting = false;
  const round = () => {
    timer = undefined;
    try {
      syncKubeconfig(settings, log);
      const placement = placeEntry(settings, log);
      if (placement === 'no-config' && !waiting) log.info({ dir: settings.netDir }, 'waiting for a CNI network config');
      waiting = placement === 'no-config';
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
    const stop = (signal: NodeJS.Signals) => {
      process.off('SIGTERM', stop);
      process.off('SIGINT', stop);
      clearTimeout(timer);
      for (const w of watchers) w.close();
      log.info({ signal }, 'removing our entry, the kubeconfig and the executable');
      let code = 0;
      try {
        removeEverything(settings, log);
      } catch (err) {
        log.error({ err }, 'clean-up failed');
        code = 1;
      }
      void (cache?.close() ?? Promise.resolve()).then(() => resolve(code));
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
  });
  round();
  // Logged once the signal handlers are in place: from here on a SIGTERM always cleans up.
  log.info({ netDir: settings.netDir, binDirs: settings.binDirs, podCache: settings.podCache?.socketPath ?? 'off' }, 'watching for changes');
  return stopped;
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
