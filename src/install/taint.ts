import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import type { KubeConnection } from '../kube/kubeconfig.ts';
import { openApiRequest, readText, statusError } from '../kube/transport.ts';
import type { InstallSettings } from './settings.ts';

/**
 * Current Istio's node readiness taint: a node registers with it (kubelet
 * `--register-with-taints=cni.istio.io/not-ready:NoSchedule`) and loses it once the CNI plugin is
 * ready there, so no pod is scheduled onto a node whose pods would start uncaptured.
 */
export const READINESS_TAINT = { key: 'cni.istio.io/not-ready', effect: 'NoSchedule' } as const;

const REQUEST_IDLE_MS = 10_000;
/** Another writer changed the node between our read and our patch: read it again, a few times. */
const CONFLICT_ATTEMPTS = 5;

// Taints are kept whole (value, timeAdded): the patch writes back every taint but ours as it was.
const Taint = z.looseObject({ key: z.string(), effect: z.string() });
const Node = z.object({
  metadata: z.object({ resourceVersion: z.string() }),
  spec: z.object({ taints: z.array(Taint).optional() }).optional(),
});

/** The installer's own connection to the API server: its service account's token (re-read per request) and CA. */
export function installerConnection(settings: InstallSettings): KubeConnection {
  if (settings.api === undefined) throw new Error('no API server (KUBERNETES_SERVICE_HOST)');
  const { skipTlsVerify } = settings.api;
  return {
    server: new URL(settings.api.server),
    ...(skipTlsVerify ? {} : { ca: readFileSync(join(settings.serviceAccountDir, 'ca.crt')) }),
    insecure: skipTlsVerify,
    tokenFile: join(settings.serviceAccountDir, 'token'),
  };
}

/**
 * Puts the readiness taint on the node (`wanted`) or takes every taint of that key off it. The node
 * is read, then merge-patched with its resourceVersion as a precondition, so a taint someone else
 * set meanwhile is never lost (409: read again). Resolves with whether the node changed.
 */
export async function setReadinessTaint(conn: KubeConnection, nodeName: string, wanted: boolean, signal?: AbortSignal): Promise<boolean> {
  const path = `/api/v1/nodes/${encodeURIComponent(nodeName)}`;
  for (let attempt = 1; ; attempt += 1) {
    const got = await openApiRequest(conn, { method: 'GET', path, idleTimeoutMs: REQUEST_IDLE_MS, signal });
    if (got.statusCode !== 200) throw await statusError(got);
    const node = Node.parse(JSON.parse(await readText(got)));
    const taints = node.spec?.taints ?? [];
    if (taints.some((t) => t.key === READINESS_TAINT.key) === wanted) return false;
    const next = wanted ? [...taints, READINESS_TAINT] : taints.filter((t) => t.key !== READINESS_TAINT.key);
    const patched = await openApiRequest(conn, {
      method: 'PATCH',
      path,
      // A merge patch replaces the whole list; resourceVersion makes it conditional on what we read.
      body: { contentType: 'application/merge-patch+json', json: { metadata: { resourceVersion: node.metadata.resourceVersion }, spec: { taints: next.length > 0 ? next : null } } },
      idleTimeoutMs: REQUEST_IDLE_MS,
      signal,
    });
    if (patched.statusCode === 409 && attempt < CONFLICT_ATTEMPTS) {
      patched.resume();
      continue;
    }
    if (patched.statusCode !== 200) throw await statusError(patched);
    patched.resume();
    return true;
  }
}
