import { z } from 'zod';
import { PluginConfig, POD_ANNOTATIONS_CAPABILITY } from '../cni/config.ts';

const AbsolutePath = z.string().regex(/^\/[^\0]*$/, 'must be an absolute path');
const FileName = z.string().regex(/^[^/\0]+$/, 'must be a file name without "/"').refine((n) => n !== '.' && n !== '..', 'must be a file name');
const Flag = z
  .enum(['true', 'false', '1', '0', 'yes', 'no', ''])
  .transform((v) => v === 'true' || v === '1' || v === 'yes');

/** Where `__KUBECONFIG_FILEPATH__` in CNI_NETWORK_CONFIG is replaced by the kubeconfig's host path. */
export const KUBECONFIG_PLACEHOLDER = '__KUBECONFIG_FILEPATH__';

/** The example conflist's entry: with the capability, containerd hands over the pod's annotations,
 * so a pod without a sidecar is passed with no API request. */
const DEFAULT_ENTRY = JSON.stringify({
  type: 'istio-cni',
  capabilities: { [POD_ANNOTATIONS_CAPABILITY]: true },
  log_level: 'info',
  kubernetes: { kubeconfig: KUBECONFIG_PLACEHOLDER, cni_bin_dir: '/opt/cni/bin', exclude_namespaces: ['kube-system'] },
});

/**
 * The installer's settings, from the environment, named as Istio's install-cni names them. The
 * CNI_* directories come in pairs: the MOUNTED_* path is where this container sees the host's
 * directory, the other is the host's own path (what the runtime on the node reads).
 */
const InstallEnv = z.object({
  CNI_NET_DIR: AbsolutePath.default('/etc/cni/net.d'),
  MOUNTED_CNI_NET_DIR: AbsolutePath.default('/host/etc/cni/net.d'),
  /** Comma-separated; the executable is copied into each. */
  MOUNTED_CNI_BIN_DIRS: z
    .string()
    .default('/host/opt/cni/bin')
    .transform((v) => v.split(',').map((d) => d.trim()).filter((d) => d !== ''))
    .pipe(z.array(AbsolutePath).min(1)),
  /** The config file to add our entry to; empty: the one the runtime uses (lowest-sorted valid). */
  CNI_CONF_NAME: z.union([FileName, z.literal('')]).default(''),
  KUBECFG_FILE_NAME: FileName.default('ZZZ-istio-cni-kubeconfig'),
  /** Our plugin entry (JSON); `__KUBECONFIG_FILEPATH__` is replaced by CNI_NET_DIR/KUBECFG_FILE_NAME. */
  CNI_NETWORK_CONFIG: z.string().default(DEFAULT_ENTRY),
  /** Unset: no kubeconfig is written (an operator running the installer by hand brings their own). */
  KUBERNETES_SERVICE_HOST: z.string().regex(/^[A-Za-z0-9.:-]+$/, 'must be a host name or IP address').optional(),
  KUBERNETES_SERVICE_PORT: z.coerce.number().int().min(1).max(65535).default(443),
  KUBERNETES_SERVICE_PROTOCOL: z.enum(['https', 'http']).default('https'),
  SKIP_TLS_VERIFY: Flag.default(false),
  /** The projected service-account volume: token, ca.crt. */
  SERVICE_ACCOUNT_PATH: AbsolutePath.default('/var/run/secrets/kubernetes.io/serviceaccount'),
  /** The executable to copy; default: this process's own executable (the single-executable app). */
  CNI_BINARY_SOURCE: AbsolutePath.optional(),
  /** This node (downward API spec.nodeName): the pod cache watches its pods. Unset: no cache. */
  NODE_NAME: z.string().max(253).regex(/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/, 'must be a Kubernetes node name').optional(),
  /** The pod cache's socket, the same path on the host and in this container (the DaemonSet mounts its directory there); empty: no cache. */
  POD_CACHE_SOCKET: z.union([AbsolutePath, z.literal('')]).default('/var/run/istio-cni/pod-cache.sock'),
  /**
   * Take the cni.istio.io/not-ready taint off NODE_NAME once the executable, the kubeconfig and our
   * entry are in place, and put it back when stopped (SIGTERM/SIGINT). Needs NODE_NAME and the API.
   */
  NODE_READINESS_TAINT: Flag.default(false),
  /** Where the probes' (and any other route's) HTTP server listens: an IP address, or empty for every address. */
  HTTP_ADDRESS: z.union([z.ipv4(), z.ipv6(), z.literal('')]).default(''),
  /** Its port; 0: any free port (the log says which). */
  HTTP_PORT: z.string().regex(/^\d{1,5}$/, 'must be a port number').default('8000').transform(Number).pipe(z.number().max(65535)),
  LOG_LEVEL: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info'),
  /** The HTTP port for /metrics, Istio's 15014 by default; 0: any free port (logged); empty: none. */
  MONITORING_PORT: z
    .union([z.literal(''), z.string().regex(/^[0-9]{1,5}$/, 'must be a port number (0-65535) or empty').transform(Number).pipe(z.number().max(65535))])
    .default(15014),
  /** Repair, as Istio's installer names its settings: on, and which of its two actions (one of them). */
  REPAIR_ENABLED: Flag.default(false),
  REPAIR_LABEL_PODS: Flag.default(false),
  REPAIR_DELETE_PODS: Flag.default(false),
});

export interface InstallSettings {
  hostNetDir: string;
  netDir: string;
  binDirs: string[];
  confName: string | undefined;
  kubeconfigName: string;
  /** Our plugin entry, placeholder replaced, checked against the plugin's own config schema. */
  entry: Record<string, unknown>;
  api: { server: string; skipTlsVerify: boolean } | undefined;
  serviceAccountDir: string;
  binarySource: string | undefined;
  /** The node-local pod cache: on when the node's name, the API server and a socket path are known. */
  podCache: { socketPath: string; nodeName: string } | undefined;
  /** The node whose readiness taint the installer takes off once installed and puts back when stopped; undefined: off. */
  readinessTaint: { nodeName: string } | undefined;
  /** The HTTP server of the probes: address (undefined: every address) and port. */
  http: { address: string | undefined; port: number };
  logLevel: z.output<typeof InstallEnv>['LOG_LEVEL'];
  monitoringPort: number | undefined;
  /** The repair controller in this process: on with a node name, the API server and one action. */
  repair: { mode: 'label' | 'delete'; nodeName: string } | undefined;
}

export class SettingsError extends Error {}

/** Parses the environment once; every problem is a SettingsError naming the variable. */
export function parseInstallSettings(env: NodeJS.ProcessEnv): InstallSettings {
  const parsed = InstallEnv.safeParse(env);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new SettingsError(`invalid environment: ${issue?.path.join('.')}: ${issue?.message}`);
  }
  const e = parsed.data;
  const kubeconfigHostPath = `${e.CNI_NET_DIR}/${e.KUBECFG_FILE_NAME}`;
  const podCache =
    e.NODE_NAME !== undefined && e.KUBERNETES_SERVICE_HOST !== undefined && e.POD_CACHE_SOCKET !== ''
      ? { socketPath: e.POD_CACHE_SOCKET, nodeName: e.NODE_NAME }
      : undefined;
  if (e.NODE_READINESS_TAINT && (e.NODE_NAME === undefined || e.KUBERNETES_SERVICE_HOST === undefined)) {
    throw new SettingsError('invalid environment: NODE_READINESS_TAINT: needs NODE_NAME and KUBERNETES_SERVICE_HOST (the node to untaint, the API to do it with)');
  }
  const entry = parseEntry(e.CNI_NETWORK_CONFIG, kubeconfigHostPath);
  return {
    hostNetDir: e.CNI_NET_DIR,
    netDir: e.MOUNTED_CNI_NET_DIR,
    binDirs: e.MOUNTED_CNI_BIN_DIRS,
    confName: e.CNI_CONF_NAME === '' ? undefined : e.CNI_CONF_NAME,
    kubeconfigName: e.KUBECFG_FILE_NAME,
    // The plugin asks the cache this installer runs.
    entry: podCache === undefined ? entry : { ...entry, pod_cache_socket: podCache.socketPath },
    api:
      e.KUBERNETES_SERVICE_HOST === undefined
        ? undefined
        : { server: serverUrl(e.KUBERNETES_SERVICE_PROTOCOL, e.KUBERNETES_SERVICE_HOST, e.KUBERNETES_SERVICE_PORT), skipTlsVerify: e.SKIP_TLS_VERIFY },
    serviceAccountDir: e.SERVICE_ACCOUNT_PATH,
    binarySource: e.CNI_BINARY_SOURCE,
    podCache,
    readinessTaint: e.NODE_READINESS_TAINT && e.NODE_NAME !== undefined ? { nodeName: e.NODE_NAME } : undefined,
    http: { address: e.HTTP_ADDRESS === '' ? undefined : e.HTTP_ADDRESS, port: e.HTTP_PORT },
    logLevel: e.LOG_LEVEL,
    monitoringPort: e.MONITORING_PORT === '' ? undefined : e.MONITORING_PORT,
    repair: repairSettings(e),
  };
}

function repairSettings(e: z.output<typeof InstallEnv>): InstallSettings['repair'] {
  if (!e.REPAIR_ENABLED) return undefined;
  if (e.REPAIR_LABEL_PODS === e.REPAIR_DELETE_PODS) {
    throw new SettingsError('invalid environment: REPAIR_ENABLED needs exactly one of REPAIR_LABEL_PODS and REPAIR_DELETE_PODS (repairing a pod in place, REPAIR_REPAIR_PODS, is not supported)');
  }
  if (e.NODE_NAME === undefined || e.KUBERNETES_SERVICE_HOST === undefined) {
    throw new SettingsError('invalid environment: REPAIR_ENABLED needs NODE_NAME (the node whose pods to repair) and KUBERNETES_SERVICE_HOST');
  }
  return { mode: e.REPAIR_LABEL_PODS ? 'label' : 'delete', nodeName: e.NODE_NAME };
}

function serverUrl(protocol: string, host: string, port: number): string {
  return `${protocol}://${host.includes(':') ? `[${host}]` : host}:${port}`;
}

/** The entry must be an `istio-cni` plugin object the plugin itself would accept. */
function parseEntry(template: string, kubeconfigHostPath: string): Record<string, unknown> {
  const text = template.replaceAll(KUBECONFIG_PLACEHOLDER, JSON.stringify(kubeconfigHostPath).slice(1, -1));
  let entry: unknown;
  try {
    entry = JSON.parse(text);
  } catch (err) {
    throw new SettingsError(`invalid environment: CNI_NETWORK_CONFIG: not JSON: ${(err as Error).message}`);
  }
  const shape = z.looseObject({ type: z.literal('istio-cni') }).safeParse(entry);
  if (!shape.success) throw new SettingsError('invalid environment: CNI_NETWORK_CONFIG: must be a JSON object with "type": "istio-cni"');
  const asPlugin = PluginConfig.safeParse({ ...shape.data, cniVersion: '1.0.0' });
  if (!asPlugin.success) {
    const issue = asPlugin.error.issues[0];
    throw new SettingsError(`invalid environment: CNI_NETWORK_CONFIG: ${issue?.path.join('.')}: ${issue?.message}`);
  }
  return shape.data;
}
