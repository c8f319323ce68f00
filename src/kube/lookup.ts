import type { CniArgs } from '../cni/args.ts';
import type { PluginConfig } from '../cni/config.ts';
import { getPod } from './client.ts';
import { decideFromArgs, decideFromPod, type Decision } from './decision.ts';
import { loadKubeconfig } from './kubeconfig.ts';

const POD_LOOKUP_TIMEOUT_MS = 5_000;

/** Whether this sandbox gets traffic capture: from CNI_ARGS when they settle it, else from the pod object. */
export async function decide(config: PluginConfig, args: CniArgs): Promise<Decision> {
  const fromArgs = decideFromArgs(args, config.excludeNamespaces);
  if ('redirect' in fromArgs) return fromArgs;
  const connection = loadKubeconfig(config.kubeconfigPath);
  const pod = await getPod(connection, fromArgs.namespace, fromArgs.name, { timeoutMs: POD_LOOKUP_TIMEOUT_MS });
  return decideFromPod(pod);
}
