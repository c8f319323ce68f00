import type { Logger } from 'pino';
import type { KubeConnection } from '../kube/kubeconfig.ts';
import { deletePod, labelPod, listNodePods, watchNodePods, type PodEvent } from './api.ts';
import { startedUncaptured, type WatchedPod } from './pod.ts';

export const UNINITIALIZED_LABEL = 'cni.istio.io/uninitialized';

export interface RepairSettings {
  nodeName: string;
  /** label: set cni.istio.io/uninitialized=true (something else acts on it); delete: delete the pod so its owner makes a new one. */
  mode: 'label' | 'delete';
}

const FIRST_RETRY_MS = 250;
const LAST_RETRY_MS = 30_000;

/**
 * Lists this node's pods, then watches them from the list's resourceVersion, repairing each pod
 * that started without traffic capture once. A watch that ends or breaks is resumed from the last
 * resourceVersion seen; one whose resourceVersion is too old (410 Gone) starts over with a list.
 * Runs until `signal` aborts.
 */
export async function runRepairController(conn: KubeConnection, settings: RepairSettings, log: Logger, signal: AbortSignal): Promise<void> {
  /** UIDs of pods repaired and not yet seen deleted: each pod is repaired once, not once per event. */
  const repaired = new Set<string>();
  let resourceVersion: string | undefined;
  let retryMs = FIRST_RETRY_MS;
  let events = 0;
  const backOff = async (): Promise<void> => {
    await pause(retryMs, signal);
    retryMs = Math.min(retryMs * 2, LAST_RETRY_MS);
  };

  const repair = async (pod: WatchedPod): Promise<void> => {
    if (!needsRepair(pod, settings, repaired)) return;
    const name = `${pod.metadata.namespace}/${pod.metadata.name}`;
    repaired.add(pod.metadata.uid);
    try {
      if (settings.mode === 'label') await labelPod(conn, pod, UNINITIALIZED_LABEL, 'true', signal);
      else if (!(await deletePod(conn, pod, signal))) {
        log.info({ pod: name, uid: pod.metadata.uid }, 'pod already gone or replaced: not deleted');
        return;
      }
      log.info({ pod: name, uid: pod.metadata.uid, action: settings.mode }, 'repaired a pod that started without traffic capture');
    } catch (err) {
      // Leave it for its next event (or the next list) to try again; the watch carries on.
      repaired.delete(pod.metadata.uid);
      if (!signal.aborted) log.error({ pod: name, error: (err as Error).message }, `could not ${settings.mode} pod`);
    }
  };

  const onEvent = async (event: PodEvent): Promise<void> => {
    events += 1;
    retryMs = FIRST_RETRY_MS;
    log.debug({ type: event.type, resourceVersion: event.object.metadata.resourceVersion }, 'watch event');
    if (event.type === 'DELETED') repaired.delete(event.object.metadata.uid);
    else if (event.type !== 'BOOKMARK') await repair(event.object);
    resourceVersion = event.object.metadata.resourceVersion;
  };

  while (!signal.aborted) {
    try {
      if (resourceVersion === undefined) {
        const list = await listNodePods(conn, settings.nodeName, signal);
        const present = new Set(list.items.map((pod) => pod.metadata.uid));
        for (const uid of repaired) if (!present.has(uid)) repaired.delete(uid);
        for (const pod of list.items) await repair(pod);
        resourceVersion = list.metadata.resourceVersion;
        log.info({ node: settings.nodeName, pods: list.items.length, resourceVersion }, 'listed the node\'s pods');
      }
      const eventsBefore = events;
      const end = await watchNodePods(conn, settings.nodeName, resourceVersion, onEvent, signal);
      if (end === 'expired') {
        log.info({ resourceVersion }, 'watch resourceVersion expired: listing again');
        resourceVersion = undefined;
      } else if (events === eventsBefore) {
        // A stream that ended empty: do not hammer a server that keeps closing at once.
        await backOff();
      }
    } catch (err) {
      if (signal.aborted) break;
      log.warn({ error: (err as Error).message, resourceVersion, retryInMs: retryMs }, 'pod list/watch failed');
      await backOff();
    }
  }
}

function needsRepair(pod: WatchedPod, settings: RepairSettings, repaired: ReadonlySet<string>): boolean {
  if (!startedUncaptured(pod) || repaired.has(pod.metadata.uid) || pod.metadata.deletionTimestamp !== undefined) return false;
  return settings.mode === 'delete' || pod.metadata.labels?.[UNINITIALIZED_LABEL] !== 'true';
}

function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => {
      clearTimeout(timer);
      resolve();
    }, { once: true });
  });
}
