import type { ConnectionOptions } from 'node:tls';

export interface HttpResponse {
  status: number;
  body: string;
  retryAfter?: string;
}

/** The whole request (connect, TLS, answer) did not finish in time. */
export class RequestTimeout extends Error {}

/**
 * The most a response may hold, headers included: a Pod is at most 1.5 MiB (etcd's request limit),
 * and an answer that never ends must not take the plugin's memory with it.
 */
export const MAX_RESPONSE_BYTES = 4 * 1024 * 1024;

/** The answer grew beyond MAX_RESPONSE_BYTES: asking again cannot help. */
export class ResponseTooLarge extends Error {}

export interface GetRequest {
  secure: boolean;
  host: string;
  port: number;
  path: string;
  headers: Record<string, string>;
  /** CA, client certificate, verification and SNI for a secure request. */
  tls: ConnectionOptions;
  /** The whole request (connect, TLS handshake, headers, body) must finish within this. */
  timeoutMs: number;
}

/**
 * One GET over its own connection, HTTP/1.1 with `Connection: close`. The pod lookup needs nothing
 * more, and node:https would load Node's whole HTTP client and server on every ADD (about 10 ms of
 * the plugin's start).
 */
export async function get(request: GetRequest): Promise<HttpResponse> {
  const socket = request.secure
    ? (await import('node:tls')).connect({ ...request.tls, host: request.host, port: request.port })
    : (await import('node:net')).connect({ host: request.host, port: request.port });
  const host = request.host.includes(':') ? `[${request.host}]` : request.host;
  const head = [`GET ${request.path} HTTP/1.1`, `Host: ${host}:${request.port}`, 'Connection: close', ...Object.entries(request.headers).map(([k, v]) => `${k}: ${v}`)];
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let received = 0;
    const timer = setTimeout(() => socket.destroy(new RequestTimeout(`no answer within ${request.timeoutMs} ms`)), request.timeoutMs);
    socket.once('close', () => clearTimeout(timer));
    socket.once(request.secure ? 'secureConnect' : 'connect', () => socket.write(`${head.join('\r\n')}\r\n\r\n`));
    socket.on('data', (chunk: Buffer) => {
      received += chunk.length;
      if (received > MAX_RESPONSE_BYTES) socket.destroy(new ResponseTooLarge(`response larger than ${MAX_RESPONSE_BYTES} bytes`));
      else chunks.push(chunk);
    });
    socket.once('error', reject);
    socket.once('end', () => {
      try {
        resolve(parseResponse(Buffer.concat(chunks)));
      } catch (err) {
        reject(err);
      }
    });
  });
}

/** A complete HTTP/1.1 response: status, then a body framed by Content-Length, chunks or the close. */
export function parseResponse(raw: Buffer): HttpResponse {
  const headerEnd = raw.indexOf('\r\n\r\n');
  if (headerEnd < 0) throw new Error('connection closed before the response headers');
  const [statusLine = '', ...headerLines] = raw.subarray(0, headerEnd).toString('latin1').split('\r\n');
  const status = /^HTTP\/1\.[01] (\d{3})/.exec(statusLine);
  if (!status) throw new Error(`not an HTTP response: ${JSON.stringify(statusLine.slice(0, 40))}`);
  const headers = new Map(headerLines.map((line) => {
    const colon = line.indexOf(':');
    return [line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim()] as const;
  }));
  let body = raw.subarray(headerEnd + 4);
  if (/\bchunked\b/i.test(headers.get('transfer-encoding') ?? '')) body = dechunk(body);
  else if (headers.has('content-length')) {
    const length = Number(headers.get('content-length'));
    if (!Number.isSafeInteger(length) || body.length < length) throw new Error('connection closed before the end of the response');
    body = body.subarray(0, length);
  }
  const retryAfter = headers.get('retry-after');
  return { status: Number(status[1]), body: body.toString('utf8'), ...(retryAfter !== undefined ? { retryAfter } : {}) };
}

function dechunk(data: Buffer): Buffer {
  const parts: Buffer[] = [];
  let at = 0;
  for (;;) {
    const lineEnd = data.indexOf('\r\n', at);
    if (lineEnd < 0) throw new Error('connection closed before the end of the response');
    const size = parseInt(data.subarray(at, lineEnd).toString('latin1'), 16);
    if (Number.isNaN(size)) throw new Error('malformed chunked response');
    if (size === 0) return Buffer.concat(parts);
    if (lineEnd + 2 + size > data.length) throw new Error('connection closed before the end of the response');
    parts.push(data.subarray(lineEnd + 2, lineEnd + 2 + size));
    at = lineEnd + 2 + size + 2;
  }
}
