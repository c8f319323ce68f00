/**
 * decide() (src/kube/lookup.ts) against a local HTTP API server: every way the lookup can go wrong
 * is an error, never a decision to pass the pod (fail-closed); only a Pod that says so passes.
 * decide() runs under the Bun the executable is compiled with (its GET uses Bun's sockets).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { promisify } from 'node:util';
import fc from 'fast-check';
import { REPO_ROOT } from '../harness/conflist.ts';
import { cleanupAll, makeTempDir } from '../harness/proc.ts';

const BUN = join(REPO_ROOT, 'build', 'bun-runtime', 'node_modules', '@oven', 'bun-linux-x64', 'bin', 'bun');
const src = (path: string) => JSON.stringify(join(REPO_ROOT, 'src', path));

/** What decide() came to: the decision, or the SPEC error it threw. */
type Outcome = { redirect: boolean; apiAttempts: number } | { code: number; details: string };

/** decide(parseConfig(config), parseCniArgs(args)) in a Bun process. */
async function decideUnderBun(config: string, args: string): Promise<Outcome> {
  const script = `import { parseCniArgs } from ${src('cni/args.ts')};
import { parseConfig } from ${src('cni/config.ts')};
import { decide } from ${src('kube/lookup.ts')};
try {
  const d = await decide(parseConfig(process.argv[1]), parseCniArgs(process.argv[2]));
  process.stdout.write(JSON.stringify({ redirect: d.redirect, apiAttempts: d.apiAttempts }));
} catch (err) {
  process.stdout.write(JSON.stringify({ code: err.code ?? 0, details: err.details ?? String(err) }));
}`;
  const { stdout } = await promisify(execFile)(BUN, ['-e', script, config, args], { env: { PATH: process.env.PATH }, maxBuffer: 1 << 20 });
  return JSON.parse(stdout) as Outcome;
}

afterAll(cleanupAll);

/** What the server answers the next requests with: a status and a body, or a dropped connection. */
type Answer = { status: number; body: string } | 'drop';

const INJECTED = {
  kind: 'Pod',
  metadata: { name: 'web-0', namespace: 'default', annotations: { 'sidecar.istio.io/status': '{"containers":["istio-proxy"]}' } },
  spec: { containers: [{ name: 'app' }, { name: 'istio-proxy' }] },
};
const PLAIN = { ...INJECTED, metadata: { name: 'web-0', namespace: 'default' } };

let server: Server;
let answer: Answer = { status: 200, body: JSON.stringify(INJECTED) };
let requests = 0;
let kubeconfig = '';

beforeAll(async () => {
  server = createServer((_req, res) => {
    requests += 1;
    if (answer === 'drop') return void res.socket?.destroy();
    res.writeHead(answer.status, { 'Content-Type': 'application/json' });
    res.end(answer.body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const dir = makeTempDir('icni-decide-');
  kubeconfig = join(dir, 'kubeconfig');
  const { port } = server.address() as AddressInfo;
  writeFileSync(kubeconfig, `clusters: [{name: k, cluster: {server: "http://127.0.0.1:${port}"}}]\nusers: [{name: u, user: {token: t}}]\ncontexts: [{name: c, context: {cluster: k, user: u}}]\ncurrent-context: c\n`);
});
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

function config(extra: Record<string, unknown> = {}): string {
  return JSON.stringify({ cniVersion: '1.0.0', name: 'n', type: 'istio-cni', kubernetes: { kubeconfig }, pod_lookup_timeout_ms: 200, pod_lookup_budget_ms: 400, pod_lookup_not_found_ms: 100, pod_lookup_denied_ms: 100, ...extra });
}
const WEB = 'K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0';

function decideWith(a: Answer, extra: Record<string, unknown> = {}, args = WEB): Promise<Outcome> {
  answer = a;
  requests = 0;
  return decideUnderBun(config(extra), args);
}

async function failsWith(a: Answer, code: number, why: RegExp, extra: Record<string, unknown> = {}, args = WEB) {
  const outcome = await decideWith(a, extra, args);
  assert.ok('code' in outcome && outcome.code === code && why.test(outcome.details), `${JSON.stringify(a).slice(0, 100)}: ${JSON.stringify(outcome)}`);
}

describe('decide: the pod lookup fails closed', () => {
  it('captures an injected pod and passes a plain one, from the API', async () => {
    assert.deepEqual(await decideWith({ status: 200, body: JSON.stringify(INJECTED) }), { redirect: true, apiAttempts: 1 });
    assert.deepEqual(await decideWith({ status: 200, body: JSON.stringify(PLAIN) }), { redirect: false, apiAttempts: 1 });
  });

  it('a server that keeps failing is error 11, never a pass', async () => {
    await failsWith({ status: 500, body: '' }, 11, /HTTP 500/);
    await failsWith({ status: 503, body: '{"kind":"Status","message":"etcd down"}' }, 11, /etcd down/);
    await failsWith('drop', 11, /connection failed/);
    assert.ok(requests > 1, `${requests} requests: retried`);
  });

  it('an answer retrying cannot change is error 101, never a pass', async () => {
    await failsWith({ status: 401, body: '' }, 101, /HTTP 401/);
    await failsWith({ status: 403, body: '' }, 101, /HTTP 403/);
    await failsWith({ status: 404, body: '' }, 101, /HTTP 404/);
    await failsWith({ status: 200, body: 'not json' }, 101, /not JSON/);
    await failsWith({ status: 200, body: '{"kind":"Status"}' }, 101, /not a Pod/);
    await failsWith({ status: 200, body: `{"kind":"Pod","pad":"${'a'.repeat(5 * 1024 * 1024)}"}` }, 101, /larger than 4194304 bytes/);
  });

  it('runtime-supplied annotations with the status annotation still ask the API, and fail closed with it', async () => {
    await failsWith({ status: 500, body: '' }, 11, /HTTP 500/, { runtimeConfig: { 'io.kubernetes.cri.pod-annotations': { 'sidecar.istio.io/status': '{}' } } });
  });

  it('a pod cache that cannot answer falls back to the API, and fails closed with it', async () => {
    const withUid = 'K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_UID=0b8e6e3c-8d0c-4a8e-9b7a-1f2e3d4c5b6a';
    await failsWith({ status: 500, body: '' }, 11, /HTTP 500/, { pod_cache_socket: '/nonexistent/pod-cache.sock' }, withUid);
  });

  it('never passes a pod on any answer but a Pod that says so (generated answers)', async () => {
    const body = fc.oneof(
      fc.constant(JSON.stringify(INJECTED)),
      fc.constant(JSON.stringify(PLAIN)),
      fc.string({ maxLength: 80 }),
      fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v)),
      fc.nat({ max: 200 }).map((n) => JSON.stringify(INJECTED).slice(0, n)),
    );
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 200, max: 599 }), body, async (status, text) => {
        const outcome = await decideWith({ status, body: text });
        if ('code' in outcome) return assert.ok([11, 101].includes(outcome.code), JSON.stringify(outcome));
        if (!outcome.redirect) assert.ok(status === 200 && text === JSON.stringify(PLAIN), `passed on HTTP ${status}: ${text.slice(0, 80)}`);
      }),
      { numRuns: 40 },
    );
  });
});
