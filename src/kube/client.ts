import { monotonicMs } from '../clock.ts';
import { CniError, ErrorCode } from '../cni/errors.ts';
import { get, MAX_RESPONSE_BYTES, RequestTimeout, ResponseTooLarge, TlsMaterialError } from './http1.ts';
import { bearerToken, endpoint, type KubeConnection } from './kubeconfig.ts';
import { USER_AGENT } from '../version.ts';
import { Pod } from './pod.ts';
import { backoffMs, judge, retryAfterMs, type Attempt, type LookupPolicy } from './retry.ts';

export type { LookupPolicy };

/** Below this much time left another attempt cannot get an answer: stop instead. */
const MIN_ATTEMPT_MS = 50;

/**
 * GET /api/v1/namespaces/{ns}/pods/{name}, retried inside the policy's budget. Every way out is a pod
 * or an error: a pod whose capture cannot be decided must not start uncaptured. A spent budget is
 * error 11 (the runtime tries the sandbox again later); an answer that retrying cannot change
 * (a 404, 401 or 403 that stays for its whole window, an untrusted certificate) is error 101.
 */
export async function getPod(conn: KubeConnection, namespace: string, name: string, policy: LookupPolicy): Promise<{ pod: Pod; attempts: number }> {
  const path = `/api/v1/namespaces/${encodeURIComponent(namespace)}/pods/${encodeURIComponent(name)}`;
  const where = `GET ${conn.server.origin}${path}`;
  const lookupFailed = (why: string) => new CniError(ErrorCode.PodLookupFailed, `pod ${namespace}/${name} lookup failed`, `${where}: ${why}`);
  const started = monotonicMs();
  const deadline = started + policy.budgetMs;
  let firstNotFoundAt = Infinity;
  let firstDeniedAt = Infinity;
  /** Each distinct failure and how often: the last attempt, cut short by the budget, may not be the telling one. */
  const failures = new Map<string, number>();
  for (let attempt = 1; ; attempt += 1) {
    const result = await attemptGet(conn, path, Math.min(policy.attemptTimeoutMs, deadline - monotonicMs()));
    if (result.kind === 'answer' && result.status === 200) return { pod: parsePod(result.body, lookupFailed), attempts: attempt };
    const step = judge(result);
    if (!step.retry) throw lookupFailed(step.reason);
    failures.set(step.reason, (failures.get(step.reason) ?? 0) + 1);

    const now = monotonicMs();
    const status = result.kind === 'answer' ? result.status : 0;
    const notFound = status === 404;
    const denied = status === 401 || status === 403;
    if (notFound) firstNotFoundAt = Math.min(firstNotFoundAt, now);
    if (denied) firstDeniedAt = Math.min(firstDeniedAt, now);
    // These answers may change in a moment; one that stays for its whole window is the answer.
    const windowEnd = notFound ? firstNotFoundAt + policy.notFoundMs : denied ? firstDeniedAt + policy.deniedMs : Infinity;
    const giveUpAt = Math.min(deadline, windowEnd);
    // Retry-After is a floor: never sooner than the server asked, never sooner than the backoff.
    const asked = result.kind === 'answer' ? retryAfterMs(result.retryAfter, Date.now()) : undefined;
    const wait = Math.max(asked ?? 0, backoffMs(attempt));
    if (now + wait + MIN_ATTEMPT_MS > giveUpAt) {
      const tried = `${attempt} attempt${attempt === 1 ? '' : 's'} in ${Math.round(now - started)} ms`;
      // A pod that stays missing, or a refusal that stays, is an answer; a budget spent first is an outage.
      if (windowEnd <= deadline) throw lookupFailed(`${step.reason}, still after ${tried}`);
      const beyond = asked !== undefined ? `; the server asked to retry after ${asked} ms, beyond the ${policy.budgetMs} ms budget` : '';
      const seen = [...failures].map(([reason, times]) => (times > 1 ? `${reason} (${times}×)` : reason)).join('; ');
      throw new CniError(ErrorCode.TryAgainLater, 'Kubernetes API not available within the pod lookup budget', `${where}: ${seen} (${tried}${beyond})`);
    }
    await new Promise((resolve) => setTimeout(resolve, wait));
  }
}

/**
 * One GET of the API root for STATUS: it needs the same credentials and trust as a pod lookup, so an
 * answer of 200 means ADD can work. Returns what is wrong, or undefined.
 */
export async function probeApi(conn: KubeConnection, timeoutMs: number): Promise<string | undefined> {
  const result = await attemptGet(conn, '/api', timeoutMs);
  if (result.kind === 'answer' && result.status === 200) return undefined;
  return `GET ${conn.server.origin}/api: ${judge(result).reason}`;
}

function parsePod(body: string, lookupFailed: (why: string) => CniError): Pod {
  let document: unknown;
  try {
    document = JSON.parse(body);
  } catch {
    throw lookupFailed('response is not JSON');
  }
  const pod = Pod.safeParse(document);
  if (!pod.success) {
    const issue = pod.error.issues[0];
    throw lookupFailed(`not a Pod: ${issue?.path.join('.')}: ${issue?.message}`);
  }
  return pod.data;
}

/** One request; never throws for what the network or the server did, only reports it. */
async function attemptGet(conn: KubeConnection, path: string, timeoutMs: number): Promise<Attempt> {
  const token = bearerToken(conn);
  const target = endpoint(conn, path);
  // SNI carries names only, as node:https sends it; an address is checked against the certificate's IP SANs.
  const isAddress = target.host.includes(':') || /^[\d.]+$/.test(target.host);
  try {
    const response = await get({
      ...target,
      headers: { Accept: 'application/json', 'User-Agent': USER_AGENT, ...(token ? { Authorization: `Bearer ${token}` } : {}) },
      tls: { ca: conn.ca, cert: conn.cert, key: conn.key, rejectUnauthorized: !conn.insecure, serverName: conn.serverName ?? (isAddress ? undefined : target.host) },
      timeoutMs,
    });
    return { kind: 'answer', ...response };
  } catch (err) {
    // The kubeconfig's CA, certificate or key does not parse: its error, not an outage to retry.
    if (err instanceof TlsMaterialError) throw new CniError(ErrorCode.KubeconfigInvalid, 'invalid kubeconfig', `TLS credentials unusable: ${err.message}`);
    if (err instanceof RequestTimeout) return { kind: 'timeout', afterMs: Math.round(timeoutMs) };
    if (err instanceof ResponseTooLarge) return { kind: 'too-large', limitBytes: MAX_RESPONSE_BYTES };
    return { kind: 'failure', error: err as NodeJS.ErrnoException };
  }
}
