import { z } from 'zod';

export const Port = z.number().int().min(1).max(65535);
const Id = z.number().int().min(0).max(0xffffffff);

/** Everything the rule builder needs to know about one pod; validated values only. */
export const RedirectSettings = z.object({
  /** The proxy's own traffic leaves uncaptured: it runs as this uid/gid. */
  proxyUid: Id,
  proxyGid: Id,
  /** Envoy's inbound listener (ISTIO_IN_REDIRECT target). */
  inboundPort: Port,
  /** Envoy's outbound listener (ISTIO_REDIRECT target). */
  outboundPort: Port,
  /** Inbound ports left alone, after the always-excluded ssh port 22. */
  excludeInboundPorts: z.array(Port),
});
export type RedirectSettings = z.infer<typeof RedirectSettings>;

/** Istio's defaults: the seed's rule set. */
export const DEFAULT_SETTINGS: RedirectSettings = {
  proxyUid: 1337,
  proxyGid: 1337,
  inboundPort: 15006,
  outboundPort: 15001,
  excludeInboundPorts: [15020],
};
