import { z } from 'zod';
import { CniError, ErrorCode } from './errors.ts';

/** RFC 1123 subdomain: what Kubernetes allows for a pod name. It ends up in a URL path. */
const PodName = z
  .string()
  .max(253)
  .regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/, 'not a valid Kubernetes pod name');
/**
 * A container runtime's name for the sandbox (podman's charset, e.g. `quirky_hopper`). Without a
 * namespace the name is never looked up, it only labels the log line; with one it must be a PodName.
 */
const SandboxName = z
  .string()
  .max(253)
  .regex(/^[A-Za-z0-9][A-Za-z0-9_.-]*$/, 'not a valid pod or container name');
/** RFC 1123 label: what Kubernetes allows for a namespace. */
const NamespaceName = z
  .string()
  .max(63)
  .regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/, 'not a valid Kubernetes namespace name');

/** libcni's UnmarshallableBool: "1"/"true" and "0"/"false", any case. */
const LooseBool = z
  .string()
  .toLowerCase()
  .pipe(z.enum(['1', 'true', '0', 'false']))
  .transform((value) => value === '1' || value === 'true');

export const CniArgs = z
  .object({
    IgnoreUnknown: LooseBool.optional(),
    K8S_POD_NAME: SandboxName.optional(),
    K8S_POD_NAMESPACE: NamespaceName.optional(),
    K8S_POD_INFRA_CONTAINER_ID: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]*$/).optional(),
    K8S_POD_UID: z.string().regex(/^[A-Za-z0-9-]+$/).optional(),
  })
  .superRefine((args, ctx) => {
    if (args.K8S_POD_NAMESPACE === undefined || args.K8S_POD_NAME === undefined) return;
    const name = PodName.safeParse(args.K8S_POD_NAME);
    if (!name.success) ctx.addIssue({ code: 'custom', path: ['K8S_POD_NAME'], message: name.error.issues[0]!.message });
  })
  .transform((args) => ({
    ignoreUnknown: args.IgnoreUnknown ?? false,
    podName: args.K8S_POD_NAME,
    podNamespace: args.K8S_POD_NAMESPACE,
    infraContainerId: args.K8S_POD_INFRA_CONTAINER_ID,
    podUid: args.K8S_POD_UID,
  }));
export type CniArgs = z.output<typeof CniArgs>;

const KNOWN_KEYS = new Set(['IgnoreUnknown', 'K8S_POD_NAME', 'K8S_POD_NAMESPACE', 'K8S_POD_INFRA_CONTAINER_ID', 'K8S_POD_UID']);

/** Parses CNI_ARGS ("K=V;K=V") the way libcni-based plugins do: unknown keys fail unless IgnoreUnknown is true. */
export function parseCniArgs(raw: string): CniArgs {
  const pairs: Record<string, string> = {};
  for (const pair of raw.split(';')) {
    if (pair === '') continue;
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new CniError(ErrorCode.InvalidEnvironment, 'invalid CNI_ARGS', `CNI_ARGS: invalid pair ${JSON.stringify(pair)}`);
    pairs[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  const parsed = CniArgs.safeParse(pairs);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new CniError(ErrorCode.InvalidEnvironment, 'invalid CNI_ARGS', `CNI_ARGS ${issue?.path.join('.')}: ${issue?.message}`);
  }
  const unknown = Object.keys(pairs).filter((key) => !KNOWN_KEYS.has(key));
  if (unknown.length > 0 && !parsed.data.ignoreUnknown) {
    throw new CniError(ErrorCode.InvalidEnvironment, 'invalid CNI_ARGS', `CNI_ARGS: unknown args ${JSON.stringify(unknown)}`);
  }
  return parsed.data;
}
