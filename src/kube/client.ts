import { readFileSync } from 'node:fs';
import { CniError, ErrorCode } from '../cni/errors.ts';
import type { KubeConnection } from './kubeconfig.ts';
import { get, type HttpResponse } from './http1.ts';
import { Pod } from './pod.ts';

export interface LookupOptions {
  timeoutMs: number;
}

/** GET /api/v1/namespaces/{ns}/pods/{name}. Transient failures are error 11 so the runtime retries;
 * anything else fails the ADD: a pod whose capture cannot be decided must not start uncaptured. */
export async function getPod(conn: KubeConnection, namespace: string, name: string, options: LookupOptions): Promise<Pod> {
  const path = `/api/v1/namespaces/${encodeURIComponent(namespace)}/pods/${encodeURIComponent(name)}`;
  const where = `GET ${conn.server.origin}${path}`;
  let response: HttpResponse;
  try {
    response = await request(conn, path, options.timeoutMs);
  } catch (err) {
    throw new CniError(ErrorCode.TryAgainLater, 'Kubernetes API unreachable', `${where}: ${(err as Error).message}`);
  }
  if (response.status === 429 || response.status >= 500) {
    throw new CniError(ErrorCode.TryAgainLater, 'Kubernetes API unavailable', `${where}: HTTP ${response.status}`);
  }
  if (response.status !== 200) {
    throw new CniError(ErrorCode.PodLookupFailed, `pod ${namespace}/${name} lookup failed`, `${where}: HTTP ${response.status} ${statusMessage(response.body)}`);
  }
  let document: unknown;
  try {
    document = JSON.parse(response.body);
  } catch {
    throw new CniError(ErrorCode.PodLookupFailed, `pod ${namespace}/${name} lookup failed`, `${where}: response is not JSON`);
  }
  const pod = Pod.safeParse(document);
  if (!pod.success) {
    const issue = pod.error.issues[0];
    throw new CniError(ErrorCode.PodLookupFailed, `pod ${namespace}/${name} lookup failed`, `${where}: not a Pod: ${issue?.path.join('.')}: ${issue?.message}`);
  }
  return pod.data;
}

/** The API server's Status message, when the body is one. */
function statusMessage(body: string): string {
  try {
    const message = (JSON.parse(body) as { message?: unknown }).message;
    return typeof message === 'string' ? message : '';
  } catch {
    return '';
  }
}

function bearerToken(conn: KubeConnection): string | undefined {
  if (conn.tokenFile === undefined) return conn.token;
  try {
    return readFileSync(conn.tokenFile, 'utf8').trim();
  } catch (err) {
    throw new CniError(ErrorCode.KubeconfigInvalid, 'invalid kubeconfig', `tokenFile: ${(err as Error).message}`);
  }
}

async function request(conn: KubeConnection, path: string, timeoutMs: number): Promise<HttpResponse> {
  const token = bearerToken(conn);
  const secure = conn.server.protocol === 'https:';
  const host = conn.server.hostname.replace(/^\[|\]$/g, '');
  // SNI carries names only, as node:https sends it.
  const isAddress = host.includes(':') || /^[\d.]+$/.test(host);
  return get({
    secure,
    host,
    port: Number(conn.server.port) || (secure ? 443 : 80),
    path: `${conn.server.pathname.replace(/\/$/, '')}${path}`,
    headers: { Accept: 'application/json', ...(token ? { Authorization: `Bearer ${token}` } : {}) },
    tls: { ca: conn.ca, cert: conn.cert, key: conn.key, rejectUnauthorized: !conn.insecure, servername: conn.serverName ?? (isAddress ? undefined : host) },
    timeoutMs,
  });
}
