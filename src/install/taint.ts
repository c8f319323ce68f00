import { ApiException, PatchStrategy, setHeaderOptions, type CoreV1Api } from '@kubernetes/client-node';
import { abortedBy } from '../kube/node-pods.ts';

/**
 * Current Istio's node readiness taint: a node registers with it (kubelet
 * `--register-with-taints=cni.istio.io/not-ready:NoSchedule`) and loses it once the CNI plugin is
 * ready there, so no pod is scheduled onto a node whose pods would start uncaptured.
 */
export const READINESS_TAINT = { key: 'cni.istio.io/not-ready', effect: 'NoSchedule' } as const;

/** Another writer changed the node between our read and our patch: read it again, a few times. */
const CONFLICT_ATTEMPTS = 5;

/**
 * Puts the readiness taint on the node (`wanted`) or takes every taint of that key off it. The node
 * is read, then merge-patched with its resourceVersion as a precondition, so a taint someone else
 * set meanwhile is never lost (409: read again). Resolves with whether the node changed.
 */
export async function setReadinessTaint(core: CoreV1Api, nodeName: string, wanted: boolean, signal?: AbortSignal): Promise<boolean> {
  const options = signal === undefined ? undefined : abortedBy(signal);
  for (let attempt = 1; ; attempt += 1) {
    const node = await core.readNode({ name: nodeName }, options);
    // Taints are kept whole (value, timeAdded): the patch writes back every taint but ours as it was.
    const taints = node.spec?.taints ?? [];
    if (taints.some((t) => t.key === READINESS_TAINT.key) === wanted) return false;
    const next = wanted ? [...taints, READINESS_TAINT] : taints.filter((t) => t.key !== READINESS_TAINT.key);
    // A merge patch replaces the whole list; resourceVersion makes it conditional on what we read.
    const body = { metadata: { resourceVersion: node.metadata?.resourceVersion }, spec: { taints: next.length > 0 ? next : null } };
    try {
      await core.patchNode({ name: nodeName, body }, setHeaderOptions('Content-Type', PatchStrategy.MergePatch, options));
      return true;
    } catch (err) {
      if (!(err instanceof ApiException && err.code === 409 && attempt < CONFLICT_ATTEMPTS)) throw err;
    }
  }
}
