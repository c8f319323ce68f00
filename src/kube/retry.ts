/** How long a pod lookup may take; all three come from the plugin config. */
export interface LookupPolicy {
  /** One request: connect, TLS, answer. */
  attemptTimeoutMs: number;
  /** Every attempt and every wait between them. */
  budgetMs: number;
  /** How long a 404 is retried: the pod may not be visible yet (a static pod's mirror). */
  notFoundMs: number;
  /** How long 401 and 403 are retried: a kube-apiserver that has just started answers them until its token and RBAC caches are filled. */
  deniedMs: number;
}

export type Answer = { kind: 'answer'; status: number; body: string; retryAfter?: string };
/** What one request came to. */
export type Attempt = Answer | { kind: 'timeout'; afterMs: number } | { kind: 'too-large'; limitBytes: number } | { kind: 'failure'; error: NodeJS.ErrnoException };

/**
 * OpenSSL's verification failures as Node reports them: the server is not who the kubeconfig says, and
 * asking again cannot change that.
 */
const UNTRUSTED_CERTIFICATE = new Set([
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_REJECTED',
  'CERT_SIGNATURE_FAILURE',
  'CERT_UNTRUSTED',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'ERR_TLS_CERT_ALTNAME_INVALID',
  'HOSTNAME_MISMATCH',
  'INVALID_CA',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
]);

/**
 * Whether another attempt can help, and what went wrong in words. Retried: no answer in time, a failed
 * connection, 404, 401 and 403 (each briefly: LookupPolicy), 429 and 5xx. Not retried: an untrusted
 * server certificate, an answer too large to read and any other status.
 */
export function judge(attempt: Attempt): { retry: boolean; reason: string } {
  switch (attempt.kind) {
    case 'timeout':
      return { retry: true, reason: `no answer within ${attempt.afterMs} ms` };
    case 'too-large':
      return { retry: false, reason: `response larger than ${attempt.limitBytes} bytes` };
    case 'failure':
      if (UNTRUSTED_CERTIFICATE.has(attempt.error.code ?? '')) {
        return { retry: false, reason: `server certificate not trusted (${attempt.error.code}): ${attempt.error.message}` };
      }
      return { retry: true, reason: `connection failed${attempt.error.code ? ` (${attempt.error.code})` : ''}: ${attempt.error.message}` };
    case 'answer': {
      const status = attempt.status;
      const message = statusMessage(attempt.body);
      return { retry: status === 401 || status === 403 || status === 404 || status === 429 || status >= 500, reason: `HTTP ${status}${message ? ` ${message}` : ''}` };
    }
  }
}

/** Retry-After in milliseconds (delay-seconds or an HTTP date); undefined when absent or unreadable. */
export function retryAfterMs(header: string | undefined, nowMs: number): number | undefined {
  if (header === undefined) return undefined;
  const value = header.trim();
  if (/^\d+$/.test(value)) return Number(value) * 1000;
  // All three HTTP-date forms start with the day's name.
  if (!/^[A-Z][a-z]{2}/.test(value)) return undefined;
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, date - nowMs);
}

/** 100 ms doubling to 1 s, jittered down by up to half so that many nodes do not retry in step. */
export function backoffMs(attempt: number, random: () => number = Math.random): number {
  const ceiling = Math.min(1_000, 100 * 2 ** (attempt - 1));
  return Math.round(ceiling * (0.5 + random() / 2));
}

/** The API server's Status message, when the body is one. */
function statusMessage(body: string): string {
  try {
    const message = (JSON.parse(body) as { message?: unknown } | null)?.message;
    return typeof message === 'string' ? message : '';
  } catch {
    return '';
  }
}
