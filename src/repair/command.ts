import pino from 'pino';
import { z } from 'zod';
import { CniError } from '../cni/errors.ts';
import { parseFlags, readFlags, withUsage } from '../flags.ts';
import { loadKubeconfig, type KubeConnection } from '../kube/kubeconfig.ts';
import { clientConfig, coreClient, watchNodePods } from '../kube/node-pods.ts';
import { inClusterConnection } from '../kube/serviceaccount.ts';
import { repairController } from './controller.ts';

/** Each setting is a flag or, as a DaemonSet sets it, an environment variable; the flag wins. */
const ENVIRONMENT = { 'node-name': 'NODE_NAME', mode: 'REPAIR_MODE', kubeconfig: 'KUBECONFIG', 'log-level': 'LOG_LEVEL' } as const;

export const NodeName = z.string().max(253).regex(/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/, 'must be a Kubernetes node name');

const RepairFlags = z.object({
  'node-name': z.string({ error: 'required: the node whose pods to watch (NODE_NAME; spec.nodeName from the downward API)' }).pipe(NodeName),
  mode: z.enum(['label', 'delete']).default('label'),
  /** Absent: the pod's own service account (KUBERNETES_SERVICE_HOST and the mounted token). */
  kubeconfig: z.string().regex(/^\//, 'must be an absolute path').optional(),
  'log-level': z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info'),
});

/**
 * `istio-cni repair`: repairs the pods of one node that started without traffic capture (their
 * istio-validation init container exited 126), on its own; the installer runs the same controller
 * when REPAIR_ENABLED is set. Runs until SIGTERM or SIGINT.
 */
export function repairCommand(args: readonly string[]): Promise<number> {
  return withUsage('repair', () => repair(args));
}

async function repair(args: readonly string[]): Promise<number> {
  const fromEnv = Object.fromEntries(Object.entries(ENVIRONMENT).flatMap(([flag, name]) => (process.env[name] ? [[flag, process.env[name]]] : [])));
  const kinds = Object.fromEntries(Object.keys(ENVIRONMENT).map((flag) => [flag, 'value' as const]));
  const settings = parseFlags(RepairFlags, { ...fromEnv, ...readFlags(args, kinds) });

  let conn: KubeConnection;
  try {
    conn = settings.kubeconfig === undefined ? inClusterConnection(process.env) : loadKubeconfig(settings.kubeconfig);
  } catch (err) {
    if (!(err instanceof CniError)) throw err;
    process.stderr.write(`istio-cni repair: ${err.message}: ${err.details}\n`);
    return 1;
  }

  const log = pino(
    { level: settings['log-level'], base: { component: 'istio-cni-repair' }, timestamp: pino.stdTimeFunctions.isoTime },
    pino.destination({ fd: 1, sync: true }),
  );
  const config = clientConfig(conn);
  const controller = repairController(coreClient(config), { mode: settings.mode }, log);
  const node = settings['node-name'];
  const watch = watchNodePods(config, node, controller, log, (pods) => log.info({ node, pods }, 'listed the node\'s pods'));
  log.info({ node, mode: settings.mode, server: conn.server.origin }, 'repair controller started');
  await new Promise<void>((resolve) => {
    for (const signal of ['SIGTERM', 'SIGINT'] as const) process.once(signal, () => resolve());
  });
  watch.stop();
  controller.stop();
  log.info('repair controller stopped');
  return 0;
}
