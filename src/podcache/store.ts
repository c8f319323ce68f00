import { podForDecision } from '../kube/decision.ts';
import { Pod } from '../kube/pod.ts';
import { PROTOCOL_VERSION, type PodAnswer, type PodQuery } from './protocol.ts';

/**
 * This node's pods as the watch last showed them, cut down to what the plugin needs, keyed by
 * namespace/name. A query names the UID the runtime passed: a pod of the same name but another UID
 * (an older or a newer one) is never the answer. A pod not there yet (the watch may lag the kubelet
 * a little) is waited for, up to the query's waitMs.
 */
export class PodStore {
  private readonly pods = new Map<string, Pod>();
  private readonly waiting = new Map<string, Set<() => void>>();
  /** False until the first list is in: until then "not found" means nothing. */
  synced = false;

  /** Stores what the watch delivered; false when it is not a pod the plugin could read. */
  put(object: unknown): boolean {
    const parsed = Pod.safeParse(object);
    if (!parsed.success) return false;
    const key = keyOf(parsed.data.metadata);
    this.pods.set(key, podForDecision(parsed.data));
    for (const wake of this.waiting.get(key) ?? []) wake();
    return true;
  }

  /** Forgets a deleted pod, unless a newer pod of that name has taken its place already. */
  remove(object: unknown): void {
    const parsed = Pod.safeParse(object);
    if (!parsed.success) return;
    const key = keyOf(parsed.data.metadata);
    if (this.pods.get(key)?.metadata.uid === parsed.data.metadata.uid) this.pods.delete(key);
  }

  get size(): number {
    return this.pods.size;
  }

  async find(query: PodQuery): Promise<PodAnswer> {
    const key = keyOf(query);
    const match = () => {
      const pod = this.pods.get(key);
      return pod?.metadata.uid === query.uid ? pod : undefined;
    };
    const pod = match() ?? (query.waitMs > 0 ? await this.waitFor(key, match, query.waitMs) : undefined);
    if (pod !== undefined) return { v: PROTOCOL_VERSION, kind: 'pod', found: true, pod };
    const other = this.pods.get(key);
    const why = !this.synced
      ? 'the cache has not listed this node\'s pods yet'
      : other !== undefined
        ? `the cache holds another pod of that name (uid ${other.metadata.uid ?? 'none'})`
        : 'pod not in the cache';
    return { v: PROTOCOL_VERSION, kind: 'pod', found: false, reason: `${why} after ${query.waitMs} ms` };
  }

  private waitFor(key: string, match: () => Pod | undefined, ms: number): Promise<Pod | undefined> {
    return new Promise((resolve) => {
      const wakers = this.waiting.get(key) ?? new Set();
      this.waiting.set(key, wakers);
      const done = (pod: Pod | undefined) => {
        clearTimeout(timer);
        wakers.delete(wake);
        if (wakers.size === 0) this.waiting.delete(key);
        resolve(pod);
      };
      const wake = () => {
        const pod = match();
        if (pod !== undefined) done(pod);
      };
      const timer = setTimeout(() => done(undefined), ms);
      wakers.add(wake);
    });
  }
}

function keyOf(pod: { namespace: string; name: string }): string {
  return `${pod.namespace}/${pod.name}`;
}
