import type { IncomingMessage } from 'node:http';
import type { RequestOptions } from 'node:https';
import { bearerToken, endpoint, type KubeConnection } from './kubeconfig.ts';
import { USER_AGENT } from '../version.ts';
import { statusMessage } from './retry.ts';

export interface ApiRequest {
  method: 'GET' | 'PATCH' | 'DELETE';
  /** Path and query, e.g. /api/v1/pods?watch=true */
  path: string;
  body?: { contentType: string; json: unknown };
  /** Give up when the connection is idle this long. */
  idleTimeoutMs: number;
  signal?: AbortSignal;
}

/** An API call that did not get an HTTP answer (unreachable, reset, idle too long, aborted). */
export class ApiUnreachable extends Error {}

/** An HTTP answer other than the one the caller needs; `message` is the API server's Status message when it sent one. */
export class ApiStatusError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/**
 * Sends one request to the API server and resolves with the response as a stream (a watch is
 * read as it arrives). The token file is re-read for every request: service-account tokens rotate.
 */
export async function openApiRequest(conn: KubeConnection, request: ApiRequest): Promise<IncomingMessage> {
  const target = endpoint(conn, request.path);
  const secure = target.secure;
  const transport = secure ? await import('node:https') : await import('node:http');
  const token = bearerToken(conn);
  const body = request.body === undefined ? undefined : { type: request.body.contentType, text: JSON.stringify(request.body.json) };
  const options: RequestOptions = {
    method: request.method,
    hostname: target.host,
    port: target.port,
    path: target.path,
    headers: {
      Accept: 'application/json',
      'User-Agent': USER_AGENT,
      ...(token ? { Authorization: `Bearer ${token}` } : {}),
      // Node frames a DELETE body only when told its length.
      ...(body === undefined ? {} : { 'Content-Type': body.type, 'Content-Length': Buffer.byteLength(body.text) }),
    },
    ca: conn.ca,
    cert: conn.cert,
    key: conn.key,
    rejectUnauthorized: !conn.insecure,
    servername: conn.serverName,
    timeout: request.idleTimeoutMs,
    signal: request.signal,
    agent: false,
  };
  return new Promise((resolve, reject) => {
    const req = transport.request(options, resolve);
    // The socket's idle timeout also covers a response being streamed: a watch whose connection
    // died silently ends with an error instead of waiting forever.
    req.on('timeout', () => req.destroy(new ApiUnreachable(`idle for ${request.idleTimeoutMs} ms`)));
    req.on('error', (err) => reject(err instanceof ApiUnreachable ? err : new ApiUnreachable(err.message)));
    req.end(body?.text);
  });
}

/** The whole response body as text. */
export async function readText(res: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of res) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/** A non-2xx response as an ApiStatusError carrying the API server's Status message. */
export async function statusError(res: IncomingMessage): Promise<ApiStatusError> {
  // A body that is not a Status object leaves the HTTP status alone to say it.
  const message = statusMessage(await readText(res).catch(() => ''));
  return new ApiStatusError(res.statusCode ?? 0, `HTTP ${res.statusCode}${message === '' ? '' : ` ${message}`}`);
}
