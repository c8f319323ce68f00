import { z } from 'zod';
import { Pod } from '../kube/pod.ts';

/**
 * What the plugin and `istio-cni install` say to each other over the node-local socket: one JSON
 * object per line, in order, on the same connection; a `pod` query is answered by one line, a
 * `report` by none. Every message carries the protocol version and its kind, so new kinds can be
 * added without breaking either side: a server answers a kind it does not know with an `error`
 * line, and a client treats any answer it does not understand as a miss.
 */
export const PROTOCOL_VERSION = 1;
/** A line longer than this is not a message of ours (a pod answer holds a few kB of annotations). */
export const MAX_LINE_BYTES = 1 << 20;
/** The longest the server waits for its watch to show a pod it does not know yet. */
export const MAX_WAIT_MS = 5_000;

const Version = z.literal(PROTOCOL_VERSION);

/** "Which pod is this sandbox's?": namespace, name and the UID the runtime passed (K8S_POD_UID). */
export const PodQuery = z.object({
  v: Version,
  kind: z.literal('pod'),
  namespace: z.string().max(63),
  name: z.string().max(253),
  uid: z.string().max(128),
  /** How long the server may wait for its watch to catch up with the kubelet before saying it does not know the pod. */
  waitMs: z.number().int().min(0).max(MAX_WAIT_MS),
});
export type PodQuery = z.infer<typeof PodQuery>;

/** The verbs whose outcome the plugin reports. */
export const REPORTED_VERBS = ['ADD', 'DEL', 'CHECK'] as const;

/**
 * "This is how a verb went" (for the installer's metrics), sent once the plugin has answered the
 * runtime, never waited on: the verb, what was decided about the pod (none when nothing was, e.g.
 * DEL or an error before the decision), the SPEC error code (0: success) and how long it took.
 */
export const Report = z.object({
  v: Version,
  kind: z.literal('report'),
  verb: z.enum(REPORTED_VERBS),
  decision: z.enum(['redirect', 'pass', 'none']),
  code: z.number().int().min(0).max(999),
  durationMs: z.number().min(0).max(3_600_000),
});
export type Report = z.infer<typeof Report>;

export const Request = z.discriminatedUnion('kind', [PodQuery, Report]);
export type Request = z.infer<typeof Request>;

/** The pod, cut down to what the decision and the rules read; or why not. */
export const PodAnswer = z.discriminatedUnion('found', [
  z.object({ v: Version, kind: z.literal('pod'), found: z.literal(true), pod: Pod }),
  z.object({ v: Version, kind: z.literal('pod'), found: z.literal(false), reason: z.string() }),
]);
export type PodAnswer = z.infer<typeof PodAnswer>;

/** A request the server could not read or does not serve. */
export const ErrorAnswer = z.object({ v: Version, kind: z.literal('error'), message: z.string() });
export type ErrorAnswer = z.infer<typeof ErrorAnswer>;

export function encode(message: Request | PodAnswer | ErrorAnswer): string {
  return `${JSON.stringify(message)}\n`;
}
