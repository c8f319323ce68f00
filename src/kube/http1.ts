import { bun, type BunSocket, type BunTlsOptions } from '../bun.ts';

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

/** TLS material the runtime cannot use (a CA, certificate or key that does not parse): no connection was made. */
export class TlsMaterialError extends Error {}

export interface GetRequest {
  secure: boolean;
  host: string;
  port: number;
  path: string;
  headers: Record<string, string>;
  /** CA, client certificate, verification and SNI for a secure request. */
  tls: BunTlsOptions;
  /** The whole request (connect, TLS handshake, headers, body) must finish within this. */
  timeoutMs: number;
}

/**
 * One GET over its own connection, HTTP/1.1 with `Connection: close`. The pod lookup needs nothing
 * more: a socket of Bun's own (src/bun.ts), not node:https nor node:tls, whose HTTP client and
 * stream layers cost an ADD more than the request (build/README.md).
 */
export function get(request: GetRequest): Promise<HttpResponse> {
  const host = request.host.includes(':') ? `[${request.host}]` : request.host;
  const head = [`GET ${request.path} HTTP/1.1`, `Host: ${host}:${request.port}`, 'Connection: close', ...Object.entries(request.headers).map(([k, v]) => `${k}: ${v}`)];
  let unsent = new TextEncoder().encode(`${head.join('\r\n')}\r\n\r\n`);
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let received = 0;
    let socket: BunSocket | undefined;
    let settled = false;
    const settle = (outcome: () => void) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket?.terminate();
      outcome();
    };
    let opened = false;
    // BoringSSL's errors before the connection opens, and PEM errors at any time (a client key is
    // read during the handshake; a server sends DER, never PEM), are about the CA, certificate or key.
    const isMaterial = (code = '') => /^ERR_(BORINGSSL$|OSSL_PEM_)/.test(code) || (!opened && code.startsWith('ERR_OSSL_'));
    const fail = (err: NodeJS.ErrnoException) => settle(() => reject(isMaterial(err.code) ? new TlsMaterialError(err.message) : err));
    const answered = () =>
      settle(() => {
        try {
          resolve(parseResponse(Buffer.concat(chunks)));
        } catch (err) {
          reject(err);
        }
      });
    const timer = setTimeout(() => fail(new RequestTimeout(`no answer within ${request.timeoutMs} ms`)), request.timeoutMs);
    const send = (s: BunSocket) => {
      unsent = unsent.subarray(Math.max(0, s.write(unsent)));
    };
    let connecting: Promise<BunSocket>;
    try {
      connecting = bun().connect({
        hostname: request.host,
        port: request.port,
        ...(request.secure ? { tls: request.tls } : {}),
        socket: {
          open: (s) => {
            opened = true;
            if (!request.secure) send(s);
          },
          // Verification failed: the error carries Node's codes (DEPTH_ZERO_SELF_SIGNED_CERT, ...).
          handshake: (s, authorized, error) => (authorized ? send(s) : fail(error ?? new Error('TLS handshake failed'))),
          drain: (s) => send(s),
          data: (s, chunk) => {
            received += chunk.length;
            if (received <= MAX_RESPONSE_BYTES) return void chunks.push(Buffer.from(chunk));
            // Settled first: the close that terminate() brings must not read the answer cut short.
            fail(new ResponseTooLarge(`response larger than ${MAX_RESPONSE_BYTES} bytes`));
            s.terminate();
          },
          // `Connection: close`: the server's end of the stream is the end of the answer.
          end: answered,
          close: answered,
          error: (_s, err) => fail(err),
          connectError: (_s, err) => fail(err),
        },
      });
    } catch (err) {
      // Bun may refuse the TLS material at once, without a promise.
      fail(err as NodeJS.ErrnoException);
      return;
    }
    connecting.then((s) => {
      socket = s;
      if (settled) s.terminate();
    }, fail);
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
