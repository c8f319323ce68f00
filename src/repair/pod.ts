import { z } from 'zod';
import { NOT_CAPTURED_EXIT_CODE } from '../validate/validate.ts';

const Terminated = z.object({ exitCode: z.number().int() });
const ContainerState = z.object({ terminated: Terminated.optional() });

/** The parts of a Pod the repair controller reads; the API server's other fields are ignored. */
export const WatchedPod = z.object({
  metadata: z.object({
    name: z.string(),
    namespace: z.string(),
    uid: z.string(),
    labels: z.record(z.string(), z.string()).optional(),
    annotations: z.record(z.string(), z.string()).optional(),
    /** A string from a watch event, a Date from the client's list: only its presence counts. */
    deletionTimestamp: z.unknown().optional(),
  }),
  status: z
    .object({
      initContainerStatuses: z
        .array(z.object({ name: z.string(), state: ContainerState.optional(), lastState: ContainerState.optional() }))
        .optional(),
    })
    .optional(),
});
export type WatchedPod = z.infer<typeof WatchedPod>;

/** What label mode sets on a pod that started without capture (Istio's broken-pod label). */
export const UNINITIALIZED_LABEL = 'cni.istio.io/uninitialized';
export const SIDECAR_STATUS_ANNOTATION = 'sidecar.istio.io/status';
export const VALIDATION_CONTAINER = 'istio-validation';

/**
 * A pod started without traffic capture: it has an injected sidecar and its istio-validation
 * init container's latest termination (the current state when it has ended, else the previous
 * run while it is restarting or waiting to) was exit status 126.
 */
export function startedUncaptured(pod: WatchedPod): boolean {
  if (pod.metadata.annotations?.[SIDECAR_STATUS_ANNOTATION] === undefined) return false;
  const validation = pod.status?.initContainerStatuses?.find((c) => c.name === VALIDATION_CONTAINER);
  const latest = validation?.state?.terminated ?? validation?.lastState?.terminated;
  return latest?.exitCode === NOT_CAPTURED_EXIT_CODE;
}
