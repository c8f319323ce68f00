import { z } from 'zod';
import { ProfileChoice } from '../redirect/profile.ts';
import { CaptureDefaults } from '../redirect/settings.ts';
import { CniError, ErrorCode } from './errors.ts';
import { CniVersion, LATEST_VERSION } from './versions.ts';

const DEFAULT_KUBECONFIG = '/etc/cni/net.d/ZZZ-istio-cni-kubeconfig';
const DEFAULT_LOG_FILE = '/var/log/istio-cni.log';
const DEFAULT_EXCLUDED_NAMESPACES = ['kube-system'];
const DEFAULT_POD_NAMESPACE = 'istio-system';
/** The annotations containerd hands over when the plugin declares this capability. */
export const POD_ANNOTATIONS_CAPABILITY = 'io.kubernetes.cri.pod-annotations';

/** Milliseconds, bounded by kubelet's 4-minute RunPodSandbox deadline. */
const Milliseconds = z.number().int().min(1).max(240_000);

/** Istio's levels plus pino's; "none" (Istio) and "silent" (pino) switch logging off. */
const LogLevel = z
  .enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'none', 'silent'])
  .transform((level) => (level === 'none' ? 'silent' : level));

/** The previous result is printed back: one nested deeper than the runtime can read it (Go's
 * encoding/json stops at 10,000 levels) or than JSON.stringify can print must be refused here, before
 * the netns is touched, not after the rules are in. */
const PrevResult = z.record(z.string(), z.unknown()).refine(printable, 'nested too deeply to pass on');
const MAX_RESULT_DEPTH = 10_000;

function printable(value: unknown): boolean {
  if (nestingDepth(value) > MAX_RESULT_DEPTH) return false;
  try {
    JSON.stringify(value);
    return true;
  } catch {
    return false;
  }
}

/** How deep objects and arrays nest in a parsed JSON value, counted without recursing. */
function nestingDepth(value: unknown): number {
  let deepest = 0;
  const pending: [unknown, number][] = [[value, 1]];
  for (let next = pending.pop(); next !== undefined; next = pending.pop()) {
    const [item, depth] = next;
    if (typeof item !== 'object' || item === null) continue;
    deepest = Math.max(deepest, depth);
    for (const child of Object.values(item)) pending.push([child, depth + 1]);
  }
  return deepest;
}

const AbsolutePath = z.string().regex(/^\/[^\0]*$/, 'must be an absolute path');

/**
 * The plugin's entry in the conflist, as the runtime hands it over on stdin. Accepts both istio-cni's
 * older layout (`log_level`, `kubernetes.*`) and the current one (`plugin_log_level`, top-level
 * `exclude_namespaces`, `cni_agent_run_dir`). Unknown fields are ignored, as every CNI plugin does.
 */
export const PluginConfig = z
  .object({
    cniVersion: CniVersion,
    name: z.string().optional(),
    type: z.string().optional(),
    prevResult: PrevResult.optional(),
    log_level: LogLevel.optional(),
    plugin_log_level: LogLevel.optional(),
    log_file: AbsolutePath.optional(),
    kubernetes: z
      .object({
        kubeconfig: AbsolutePath.optional(),
        cni_bin_dir: AbsolutePath.optional(),
        exclude_namespaces: z.array(z.string()).optional(),
      })
      .optional(),
    exclude_namespaces: z.array(z.string()).optional(),
    cni_agent_run_dir: AbsolutePath.optional(),
    /** `nft`/`legacy`: iptables through that backend; `nftables`: native nftables, no iptables at all. */
    iptables_backend: z.enum(['auto', 'nft', 'legacy', 'nftables']).default('auto'),
    /** Istio's name for native nftables: `true` is `iptables_backend: "nftables"`. */
    native_nftables: z.boolean().optional(),
    capture: CaptureDefaults,
    rules_profile: ProfileChoice.default('seed'),
    pod_namespace: z.string().optional(),
    pod_lookup_timeout_ms: Milliseconds.default(3_000),
    pod_lookup_budget_ms: Milliseconds.default(10_000),
    pod_lookup_not_found_ms: Milliseconds.default(2_000),
    pod_lookup_denied_ms: Milliseconds.default(5_000),
    /** `istio-cni install`'s node-local pod cache; absent: every lookup goes to the API server. */
    pod_cache_socket: AbsolutePath.optional(),
    pod_cache_timeout_ms: Milliseconds.default(500),
    runtimeConfig: z
      .object({
        // containerd sends null for a pod without annotations: such a pod has none to decide from.
        [POD_ANNOTATIONS_CAPABILITY]: z
          .record(z.string(), z.string())
          .nullable()
          .optional()
          .transform((annotations) => (annotations === null ? {} : annotations)),
      })
      .optional(),
  })
  .transform((raw) => ({
    cniVersion: raw.cniVersion,
    prevResult: raw.prevResult,
    logLevel: raw.plugin_log_level ?? raw.log_level ?? 'info',
    logFile: raw.log_file ?? DEFAULT_LOG_FILE,
    kubeconfigPath:
      raw.kubernetes?.kubeconfig ??
      (raw.cni_agent_run_dir !== undefined ? `${raw.cni_agent_run_dir}/istio-cni-kubeconfig` : DEFAULT_KUBECONFIG),
    excludeNamespaces: new Set(
      raw.exclude_namespaces ?? raw.kubernetes?.exclude_namespaces ?? DEFAULT_EXCLUDED_NAMESPACES,
    ),
    iptablesBackend: raw.native_nftables ? 'nftables' : raw.iptables_backend,
    capture: raw.capture,
    rulesProfile: raw.rules_profile,
    podNamespace: raw.pod_namespace ?? DEFAULT_POD_NAMESPACE,
    podLookup: {
      attemptTimeoutMs: raw.pod_lookup_timeout_ms,
      budgetMs: raw.pod_lookup_budget_ms,
      notFoundMs: raw.pod_lookup_not_found_ms,
      deniedMs: raw.pod_lookup_denied_ms,
    },
    podCache: raw.pod_cache_socket === undefined ? undefined : { socketPath: raw.pod_cache_socket, timeoutMs: raw.pod_cache_timeout_ms },
    runtimeAnnotations: raw.runtimeConfig?.[POD_ANNOTATIONS_CAPABILITY],
  }));
export type PluginConfig = z.output<typeof PluginConfig>;

/** Best effort: the version to put in an error object before the config is known to be valid. */
export function versionOf(stdin: string): CniVersion {
  try {
    const parsed = CniVersion.safeParse((JSON.parse(stdin) as { cniVersion?: unknown } | null)?.cniVersion);
    return parsed.success ? parsed.data : LATEST_VERSION;
  } catch {
    return LATEST_VERSION;
  }
}

/** Decodes stdin: 6 when it is not JSON, 1 for an unsupported version, 7 for any other invalid field. */
export function parseConfig(stdin: string): PluginConfig {
  let document: unknown;
  try {
    document = JSON.parse(stdin);
  } catch (err) {
    throw new CniError(ErrorCode.DecodeFailure, 'failed to decode network configuration', (err as Error).message);
  }
  if (typeof document !== 'object' || document === null || Array.isArray(document)) {
    throw new CniError(ErrorCode.DecodeFailure, 'failed to decode network configuration', 'expected a JSON object');
  }
  const version = CniVersion.safeParse((document as { cniVersion?: unknown }).cniVersion);
  if (!version.success) {
    throw new CniError(ErrorCode.IncompatibleVersion, 'incompatible CNI version', version.error.issues[0]?.message ?? '');
  }
  const parsed = PluginConfig.safeParse(document);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new CniError(ErrorCode.InvalidConfig, 'invalid network configuration', `${issue?.path.join('.')}: ${issue?.message}`);
  }
  return parsed.data;
}
