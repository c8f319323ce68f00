import { z } from 'zod';
import { CniError, ErrorCode } from './errors.ts';

/** RFC 1123 subdomain: what Kubernetes allows for a pod name. It ends up in a URL path. */
const PodName = z
  .string()
  .max(253)
  .regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/, 'not a valid Kubernetes pod name');
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
    K8S_POD_NAME: PodName.optional(),
    K8S_POD_NAMESPACE: NamespaceName.optional(),
    K8S_POD_INFRA_CONTAINER_ID: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]*$/).optional(),
    K8S_POD_UID: z.string().regex(/^[A-Za-z0-9-]+$/).optional(),
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
