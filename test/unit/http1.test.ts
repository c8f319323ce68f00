import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { describe, it } from 'vitest';
import { promisify } from 'node:util';
import { BUN_RUNTIME, REPO_ROOT } from '../harness/conflist.ts';
import { parseResponse, type GetRequest } from '../../src/kube/http1.ts';

/** get(request) run under the Bun the executable is compiled with (get() uses Bun's sockets). */
async function getUnderBun(request: GetRequest): Promise<unknown> {
  const script = `import { get } from ${JSON.stringify(join(REPO_ROOT, 'src', 'kube', 'http1.ts'))};
process.stdout.write(JSON.stringify(await get(${JSON.stringify(request)})));`;
  const { stdout } = await promisify(execFile)(BUN_RUNTIME, ['-e', script], { env: { PATH: process.env.PATH } });
  return JSON.parse(stdout);
}

const raw = (text: string) => Buffer.from(text, 'utf8');

describe('HTTP/1.1 response parsing (the pod GET)', () => {
  it('reads a body framed by Content-Length, ignoring anything after it', () => {
    assert.deepEqual(parseResponse(raw('HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n{"a":"\u00e9"}extra')), { status: 200, body: '{"a":"\u00e9"}' });
  });

  it('joins a chunked body', () => {
    assert.deepEqual(parseResponse(raw('HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{"me\r\n9\r\nssage":1}\r\n0\r\n\r\n')), { status: 404, body: '{"message":1}' });
  });

  it('reads to the close when the body has no framing', () => {
    assert.deepEqual(parseResponse(raw('HTTP/1.0 500 Internal Server Error\r\n\r\noops')), { status: 500, body: 'oops' });
  });

  it('refuses a response cut short', () => {
    assert.throws(() => parseResponse(raw('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"a"')), /before the end/);
    assert.throws(() => parseResponse(raw('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n{"a"')), /before the end/);
    assert.throws(() => parseResponse(raw('HTTP/1.1 200 OK\r\nContent-Le')), /before the response headers/);
    assert.throws(() => parseResponse(raw('SSH-2.0-OpenSSH\r\n\r\n')), /not an HTTP response/);
  });

  it('GETs from a real server: path, headers, chunked and fixed-length answers', async () => {
    const seen: Array<{ url?: string; auth?: string; host?: string }> = [];
    const server = createServer((req, res) => {
      seen.push({ url: req.url, auth: req.headers.authorization, host: req.headers.host });
      if (req.url === '/chunked') {
        res.writeHead(200, { 'Content-Type': 'application/json' });
        res.write('{"kind":');
        res.end('"Pod"}');
      } else {
        res.writeHead(403, { 'Content-Length': 2 }).end('no');
      }
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as AddressInfo).port;
    try {
      const request = { secure: false, host: '127.0.0.1', port, headers: { Authorization: 'Bearer t0k' }, tls: { rejectUnauthorized: true }, timeoutMs: 2000 };
      assert.deepEqual(await getUnderBun({ ...request, path: '/chunked' }), { status: 200, body: '{"kind":"Pod"}' });
      assert.deepEqual(await getUnderBun({ ...request, path: '/x' }), { status: 403, body: 'no' });
      assert.deepEqual(seen, [
        { url: '/chunked', auth: 'Bearer t0k', host: `127.0.0.1:${port}` },
        { url: '/x', auth: 'Bearer t0k', host: `127.0.0.1:${port}` },
      ]);
    } finally {
      server.close();
    }
  });
});
