import type { CniArgs } from '../cni/args.ts';
import type { PluginConfig } from '../cni/config.ts';
import { askPodCache } from '../podcache/client.ts';
import { getPod } from './client.ts';
import { decideFromAnnotations, decideFromArgs, decideFromPod, type Decision, type PodRef } from './decision.ts';
import { loadKubeconfig } from './kubeconfig.ts';
import type { Pod } from './pod.ts';

/** A decision, where the pod came from when one was needed, and how many API requests it took. */
export type Decided = Decision & { apiAttempts: number; podSource?: 'cache' | 'api'; cacheMiss?: string };

/**
 * Whether this sandbox gets traffic capture, from the cheapest source that settles it: CNI_ARGS, then
 * the annotations the runtime passed in runtimeConfig, then the pod object from the node-local
 * cache, and from the API server when the cache cannot answer.
 */
export async function decide(config: PluginConfig, args: CniArgs): Promise<Decided> {
  const fromArgs = decideFromArgs(args, config);
  if ('redirect' in fromArgs) return { ...fromArgs, apiAttempts: 0 };
  const fromAnnotations = config.runtimeAnnotations && decideFromAnnotations(config.runtimeAnnotations);
  if (fromAnnotations) return { ...fromAnnotations, apiAttempts: 0 };
  const cached = await fromCache(config, fromArgs, args.podUid);
  if (typeof cached === 'object') return { ...decideFromPod(cached), apiAttempts: 0, podSource: 'cache' };
  const connection = loadKubeconfig(config.kubeconfigPath);
  const { pod, attempts } = await getPod(connection, fromArgs.namespace, fromArgs.name, config.podLookup);
  return { ...decideFromPod(pod), apiAttempts: attempts, podSource: 'api', ...(cached === undefined ? {} : { cacheMiss: cached }) };
}

/** The pod from the cache, why the cache could not give it, or undefined when there is no cache. */
async function fromCache(config: PluginConfig, pod: PodRef, uid: string | undefined): Promise<Pod | string | undefined> {
  if (config.podCache === undefined) return undefined;
  // Without the UID the cache cannot tell this pod from an older one of the same name.
  if (uid === undefined) return 'no K8S_POD_UID in CNI_ARGS';
  const lookup = await askPodCache(config.podCache.socketPath, { ...pod, uid }, config.podCache.timeoutMs);
  return 'pod' in lookup ? lookup.pod : lookup.miss;
}
