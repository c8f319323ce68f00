import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';

/** What a route answers: the status (200 unless said), the content type and the body. */
export interface Answer {
  status?: number;
  contentType: string;
  body: string;
}
export type Route = () => Answer | Promise<Answer>;

export interface HttpServer {
  /** The port it listens on (the one asked for, or the kernel's pick for 0). */
  port: number;
  close(): Promise<void>;
}

/**
 * The DaemonSet's HTTP port: GET (or HEAD) of one of `routes`' paths, anything else 404/405. One
 * server for every route the node agent serves (metrics today; probes can be added beside it). It
 * listens on every address: the pod is on the host network and Prometheus scrapes the node's.
 */
export async function serveHttp(port: number, routes: Record<string, Route>, log: Logger): Promise<HttpServer> {
  const server: Server = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://node').pathname;
    const route = routes[path];
    const send = ({ status = 200, contentType, body }: Answer) => {
      res.writeHead(status, { 'Content-Type': contentType, 'Content-Length': Buffer.byteLength(body) });
      res.end(req.method === 'HEAD' ? undefined : body);
    };
    if (route === undefined) return send({ status: 404, contentType: 'text/plain', body: `no such path: ${path}\n` });
    if (req.method !== 'GET' && req.method !== 'HEAD') return send({ status: 405, contentType: 'text/plain', body: 'GET or HEAD only\n' });
    Promise.resolve()
      .then(route)
      .then(send, (err: unknown) => {
        log.error({ path, error: (err as Error)?.message ?? String(err) }, 'http: route failed');
        send({ status: 500, contentType: 'text/plain', body: 'internal error\n' });
      });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
