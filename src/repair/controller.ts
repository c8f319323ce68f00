import type { CoreV1Api, V1Pod } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { apiErrorMessage, type NodePodsHandler } from '../kube/node-pods.ts';
import { deletePod, labelPod } from './api.ts';
import { startedUncaptured, UNINITIALIZED_LABEL, WatchedPod } from './pod.ts';

export interface RepairSettings {
  /** label: set cni.istio.io/uninitialized=true (something else acts on it); delete: delete the pod so its owner makes a new one. */
  mode: 'label' | 'delete';
}

/** How one repair went, as Istio's repair controller counts them: done, not needed after all (the pod was gone or replaced), or failed. */
export type RepairResult = 'success' | 'skip' | 'fail';

/**
 * Repairs each pod of this node's watch (watchNodePods) that started without traffic capture, once:
 * labels it or deletes it. A failed patch or delete is logged and tried again at that pod's next
 * event. `counted` hears of every repair and how it went (the installer's metrics).
 */
export function repairController(
  core: CoreV1Api,
  settings: RepairSettings,
  log: Logger,
  counted: (mode: RepairSettings['mode'], result: RepairResult) => void = () => {},
): NodePodsHandler & { stop(): void } {
  /** UIDs of pods repaired and not yet seen deleted: each pod is repaired once, not once per event. */
  const repaired = new Set<string>();
  let stopped = false;

  const repair = async (pod: WatchedPod): Promise<void> => {
    const name = `${pod.metadata.namespace}/${pod.metadata.name}`;
    repaired.add(pod.metadata.uid);
    try {
      if (settings.mode === 'label') await labelPod(core, pod, UNINITIALIZED_LABEL, 'true');
      else if (!(await deletePod(core, pod))) {
        log.info({ pod: name, uid: pod.metadata.uid }, 'pod already gone or replaced: not deleted');
        counted(settings.mode, 'skip');
        return;
      }
      log.info({ pod: name, uid: pod.metadata.uid, action: settings.mode }, 'repaired a pod that started without traffic capture');
      counted(settings.mode, 'success');
    } catch (err) {
      // Left for its next event to try again.
      repaired.delete(pod.metadata.uid);
      if (stopped) return;
      log.error({ pod: name, error: apiErrorMessage(err) }, `could not ${settings.mode} pod`);
      counted(settings.mode, 'fail');
    }
  };

  return {
    put(object: V1Pod) {
      const pod = WatchedPod.safeParse(object);
      if (!pod.success) {
        log.warn({ pod: `${object.metadata?.namespace}/${object.metadata?.name}`, error: pod.error.issues[0]?.message }, 'not a pod repair can read; left alone');
        return;
      }
      if (!stopped && needsRepair(pod.data, settings, repaired)) void repair(pod.data);
    },
    remove(object: V1Pod) {
      if (object.metadata?.uid !== undefined) repaired.delete(object.metadata.uid);
    },
    stop() {
      stopped = true;
    },
  };
}

function needsRepair(pod: WatchedPod, settings: RepairSettings, repaired: ReadonlySet<string>): boolean {
  if (!startedUncaptured(pod) || repaired.has(pod.metadata.uid) || pod.metadata.deletionTimestamp !== undefined) return false;
  return settings.mode === 'delete' || pod.metadata.labels?.[UNINITIALIZED_LABEL] !== 'true';
}
