import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';

export interface HttpAnswer {
  status: number;
  body: string;
  contentType?: string;
}

/** Path -> what a GET of it answers. The probes' routes live in src/install/main.ts; metrics can join them. */
export type HttpRoutes = Record<string, () => HttpAnswer | Promise<HttpAnswer>>;

export interface HttpServer {
  port: number;
  close(): Promise<void>;
}

/**
 * The DaemonSet's HTTP endpoint (host network: the kubelet probes the node's address). GET or HEAD
 * of a route answers what the route returns; any other path is 404, any other method 405.
 */
export function serveHttp(listen: { address: string | undefined; port: number }, routes: HttpRoutes, log: Logger): Promise<HttpServer> {
  const server = createServer((req, res) => {
    const route = Object.hasOwn(routes, pathOf(req.url)) ? routes[pathOf(req.url)] : undefined;
    const send = (answer: HttpAnswer) => {
      res.writeHead(answer.status, { 'Content-Type': answer.contentType ?? 'text/plain; charset=utf-8', 'Cache-Control': 'no-store' });
      res.end(req.method === 'HEAD' ? undefined : answer.body);
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') return send({ status: 405, body: 'GET or HEAD only\n' });
    if (route === undefined) return send({ status: 404, body: `routes: ${Object.keys(routes).join(' ')}\n` });
    Promise.resolve()
      .then(route)
      .then(send, (err: Error) => {
        log.error({ path: pathOf(req.url), error: err.message }, 'http: route failed');
        send({ status: 500, body: `${err.message}\n` });
      });
  });
  // A probe that hangs must not hold a socket forever.
  server.requestTimeout = 10_000;
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(listen.port, listen.address, () => {
      server.off('error', reject);
      server.on('error', (err) => log.error({ error: err.message }, 'http: server error'));
      resolve({
        port: (server.address() as AddressInfo).port,
        close: () => new Promise<void>((done) => {
          server.close(() => done());
          server.closeAllConnections();
        }),
      });
    });
  });
}

function pathOf(url: string | undefined): string {
  return (url ?? '/').split('?')[0]!;
}
