import { z } from 'zod';

const EnvVar = z.object({ name: z.string(), value: z.string().optional() });

export const Container = z.object({
  name: z.string(),
  /** The proxy's image tag tells its Istio version (`rules_profile: auto`). */
  image: z.string().optional(),
  env: z.array(EnvVar).optional(),
  /** "Always" on an init container makes it a native sidecar. */
  restartPolicy: z.string().optional(),
  /** Non-zero ids here are the proxy's identity, exempt from capture. */
  securityContext: z
    .object({ runAsUser: z.number().int().optional(), runAsGroup: z.number().int().optional() })
    .optional(),
});
export type Container = z.infer<typeof Container>;

/** The parts of a Pod the plugin reads; the API server's other fields are ignored. */
export const Pod = z.object({
  metadata: z.object({
    name: z.string(),
    namespace: z.string(),
    /** Tells this pod from an older one of the same name (a StatefulSet's pod deleted and made again). */
    uid: z.string().optional(),
    annotations: z.record(z.string(), z.string()).optional(),
    labels: z.record(z.string(), z.string()).optional(),
  }),
  spec: z.object({
    containers: z.array(Container),
    initContainers: z.array(Container).optional(),
  }),
});
export type Pod = z.infer<typeof Pod>;
