import { ApiException, PatchStrategy, setHeaderOptions, type CoreV1Api } from '@kubernetes/client-node';
import type { WatchedPod } from './pod.ts';

/** Merge-patches one label onto the pod. */
export async function labelPod(core: CoreV1Api, pod: WatchedPod, key: string, value: string): Promise<void> {
  const { name, namespace } = pod.metadata;
  await core.patchNamespacedPod({ name, namespace, body: { metadata: { labels: { [key]: value } } } }, setHeaderOptions('Content-Type', PatchStrategy.MergePatch));
}

/**
 * Deletes the pod, only if it is still the same pod (a UID precondition: a StatefulSet may have
 * made a new pod of that name meanwhile). False when it was gone (404) or replaced (409) already.
 */
export async function deletePod(core: CoreV1Api, pod: WatchedPod): Promise<boolean> {
  const { name, namespace, uid } = pod.metadata;
  try {
    await core.deleteNamespacedPod({ name, namespace, body: { preconditions: { uid } } });
    return true;
  } catch (err) {
    if (err instanceof ApiException && (err.code === 404 || err.code === 409)) return false;
    throw err;
  }
}
