import type { CniArgs } from '../cni/args.ts';
import type { PluginConfig } from '../cni/config.ts';
import { getPod } from './client.ts';
import { decideFromAnnotations, decideFromArgs, decideFromPod, type Decision } from './decision.ts';
import { loadKubeconfig } from './kubeconfig.ts';

/** A decision and how many API requests it took. */
export type Decided = Decision & { apiAttempts: number };

/**
 * Whether this sandbox gets traffic capture, from the cheapest source that settles it: CNI_ARGS, then
 * the annotations the runtime passed in runtimeConfig, then the pod object from the API.
 */
export async function decide(config: PluginConfig, args: CniArgs): Promise<Decided> {
  const fromArgs = decideFromArgs(args, config);
  if ('redirect' in fromArgs) return { ...fromArgs, apiAttempts: 0 };
  const fromAnnotations = config.runtimeAnnotations && decideFromAnnotations(config.runtimeAnnotations);
  if (fromAnnotations) return { ...fromAnnotations, apiAttempts: 0 };
  const connection = loadKubeconfig(config.kubeconfigPath);
  const { pod, attempts } = await getPod(connection, fromArgs.namespace, fromArgs.name, config.podLookup);
  return { ...decideFromPod(pod), apiAttempts: attempts };
}
