/**
 * The installer's probes and the node readiness taint, through the built executable against a fake
 * node (temp dirs) and the fake API server, which serves this one Node object: the installer reads
 * it and merge-patches its taints with the resourceVersion it read as a precondition.
 */
import assert from 'node:assert/strict';
import type { IncomingMessage } from 'node:http';
import { request } from 'node:http';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, beforeEach, describe, it } from 'node:test';
import * as h from '../harness/index.ts';
import { CALICO, makeFakeNode, startInstaller, stopInstaller, waitFor, type FakeNode } from './node.ts';

after(h.cleanupAll);

const NODE_NAME = 'test-node';
const TAINT = { key: 'cni.istio.io/not-ready', effect: 'NoSchedule' };
const OTHER = { key: 'example.com/dedicated', value: 'db', effect: 'NoSchedule' };

interface Taint {
  key: string;
  effect: string;
  value?: string;
}

/** GET path on the installer's HTTP server: status and body. */
function probe(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    request({ host: '127.0.0.1', port, path, timeout: 2000 }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => (body += d)).on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    }).on('error', reject).end();
  });
}

/** The port the installer's log says its HTTP server took (HTTP_PORT=0: any free one). */
function httpPort(installer: h.Daemon): number {
  const line = installer.output().stderr.split('\n').find((l) => l.includes('"msg":"http: serving"'));
  return line === undefined ? 0 : (JSON.parse(line) as { port: number }).port;
}

/** Both appear in the installer's log, `first` before `then`. */
function logOrder(installer: h.Daemon, first: string, then: string): boolean {
  const log = installer.output().stderr;
  return log.includes(first) && log.indexOf(first) < log.indexOf(then);
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve) => {
    let body = '';
    req.setEncoding('utf8').on('data', (d: string) => (body += d)).on('end', () => resolve(body));
  });
}

describe('the installer\'s probes', () => {
  it('/readyz answers 503 naming what is missing until the executable, the kubeconfig and our entry are in place, as read from the host', async () => {
    const node = makeFakeNode();
    // calico's config is half-written: no network config the runtime could use.
    const calico = join(node.netDir, '10-calico.conflist');
    writeFileSync(calico, CALICO.slice(0, 40));
    const installer = await startInstaller(node);
    const port = httpPort(installer);
    assert.ok(port > 0, installer.output().stderr);

    assert.deepEqual(await probe(port, '/healthz'), { status: 200, body: 'ok\n' });
    const waiting = await probe(port, '/readyz');
    assert.equal(waiting.status, 503);
    assert.match(waiting.body, /no network config/);

    writeFileSync(calico, CALICO);
    await waitFor('ready', () => installer.output().stderr.includes('"msg":"ready: '));
    assert.deepEqual(await probe(port, '/readyz'), { status: 200, body: 'ready\n' });

    // Gone from the host (an operator's clean-up, another installer): not ready, whatever the last round said.
    rmSync(join(node.binDir, 'istio-cni'));
    const noBinary = await probe(port, '/readyz');
    assert.equal(noBinary.status, 503);
    assert.match(noBinary.body, /istio-cni: not the executable this installer put there/);
    assert.equal((await probe(port, '/metrics')).status, 404);
    assert.equal(await stopInstaller(installer), 0);
  });
});

describe('the node readiness taint (NODE_READINESS_TAINT)', () => {
  let api: h.FakeKubeApi;
  let taints: Taint[] = [];
  let resourceVersion = 100;
  /** Answer the next PATCH as if another writer had changed the node in between. */
  let interfere = false;
  const patches: Array<{ contentType: string | undefined; body: { metadata: { resourceVersion: string }; spec: { taints: Taint[] | null } }; status: number }> = [];

  before(async () => {
    api = await h.startFakeKubeApi({ pods: [] });
    api.addRoute(({ req, res, url, record }) => {
      if (url.pathname !== `/api/v1/nodes/${NODE_NAME}`) return false;
      const send = (status: number, body: unknown) => {
        record.status = status;
        res.writeHead(status, { 'Content-Type': 'application/json' }).end(JSON.stringify(body));
      };
      const nodeObject = () => ({ kind: 'Node', apiVersion: 'v1', metadata: { name: NODE_NAME, resourceVersion: String(resourceVersion) }, spec: taints.length > 0 ? { taints } : {} });
      if (req.method === 'GET') {
        send(200, nodeObject());
        return true;
      }
      if (req.method !== 'PATCH') return false;
      void readBody(req).then((text) => {
        const body = JSON.parse(text) as (typeof patches)[number]['body'];
        if (interfere) {
          interfere = false;
          taints = [...taints, OTHER];
          resourceVersion += 1;
        }
        const status = body.metadata.resourceVersion === String(resourceVersion) ? 200 : 409;
        patches.push({ contentType: req.headers['content-type'], body, status });
        if (status === 409) return send(409, { kind: 'Status', status: 'Failure', reason: 'Conflict', code: 409, message: 'the object has been modified' });
        taints = body.spec.taints ?? [];
        resourceVersion += 1;
        send(200, nodeObject());
      });
      return true;
    });
  });

  beforeEach(() => {
    patches.length = 0;
  });

  const taintedNode = (): FakeNode => {
    const node = makeFakeNode({ token: api.token, ca: api.pki.caPem, apiHost: '127.0.0.1', apiPort: api.port, env: { NODE_NAME, NODE_READINESS_TAINT: 'true', POD_CACHE_SOCKET: '' } });
    writeFileSync(join(node.netDir, '10-calico.conflist'), CALICO);
    return node;
  };

  it('is taken off once everything is in place, keeping the other taints, and put back on SIGTERM before our entry goes', async () => {
    taints = [OTHER, TAINT];
    const installer = await startInstaller(taintedNode());
    await waitFor('the taint removed', () => installer.output().stderr.includes('removed the node\'s readiness taint'), 5000);
    assert.deepEqual(taints, [OTHER], 'only ours removed');
    assert.equal(patches.length, 1);
    assert.equal(patches[0]!.contentType, 'application/merge-patch+json');
    assert.equal(patches[0]!.body.metadata.resourceVersion, '100', 'conditional on the node as read');
    assert.ok(logOrder(installer, '"msg":"ready: ', 'removed the node\'s readiness taint'), 'ready first, then untainted');

    assert.equal(await stopInstaller(installer), 0);
    assert.deepEqual(taints, [OTHER, TAINT]);
    assert.ok(logOrder(installer, 'carries the readiness taint again', '"msg":"removed our entry"'), 'tainted before the entry goes');
    const users = api.requests.filter((r) => r.path.startsWith('/api/v1/nodes/'));
    assert.ok(users.every((r) => r.auth === 'token' && /^istio-cni\//.test(r.userAgent ?? '')), 'as the service account, saying who it is');
  });

  it('a node changed between the read and the patch: read again, nothing lost', async () => {
    taints = [TAINT];
    resourceVersion = 200;
    interfere = true;
    const installer = await startInstaller(taintedNode());
    await waitFor('the taint removed', () => installer.output().stderr.includes('removed the node\'s readiness taint'), 5000);
    assert.deepEqual(patches.map((p) => p.status), [409, 200]);
    assert.deepEqual(taints, [OTHER], 'the other writer\'s taint kept, ours gone');
    assert.equal(await stopInstaller(installer), 0);
  });

  it('an untainted node is only read', async () => {
    taints = [];
    const installer = await startInstaller(taintedNode());
    await waitFor('the node read', () => installer.output().stderr.includes('the node has no readiness taint'), 5000);
    assert.equal(patches.length, 0);
    assert.equal(await stopInstaller(installer), 0);
    assert.deepEqual(taints, [TAINT]);
  });

  it('needs NODE_NAME and the API', async () => {
    const node = makeFakeNode({ env: { NODE_READINESS_TAINT: 'true' } });
    const r = await h.run([h.DEFAULT_ISTIO_CNI_BIN, 'install'], { env: node.env });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /NODE_READINESS_TAINT: needs NODE_NAME/);
  });
});
