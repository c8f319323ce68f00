/**
 * The pod lookup through the built dist/istio-cni: every kubeconfig form, every fault of the API
 * server, and STATUS. The plugin runs directly in this machine's network namespace so that it reaches
 * the fake API server over real TCP (a reset is a real RST); the pod's netns is a fresh test netns.
 * Small budgets keep the faulty ADDs short; each one's wall time is asserted to stay inside its budget.
 */
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, it } from 'vitest';
import * as h from '../harness/index.ts';

afterAll(h.cleanupAll);

const WEB = { namespace: 'default', name: 'web-0' };
const POLICY = { pod_lookup_timeout_ms: 300, pod_lookup_budget_ms: 1500, pod_lookup_not_found_ms: 600, pod_lookup_denied_ms: 600 };
/** What the wall time of one plugin run may add to the lookup: process start and exit (generous: a shared 2-core machine). */
const START_AND_EXIT_MS = 1000;
/** How late the plugin's own timers may fire under load. */
const TIMER_SLACK_MS = 250;

let api: h.FakeKubeApi;
let dir: string;
let kubeconfig: string;

beforeAll(async () => {
  api = await h.startFakeKubeApi({ pods: [h.injectedPod(WEB.name, WEB.namespace)] });
  dir = h.makeTempDir('icni-lookup-');
  kubeconfig = api.writeKubeconfig(dir, { auth: 'token', caMode: 'data' });
});

function fresh(): void {
  api.clearRequests();
  delete api.behavior.fault;
  delete api.behavior.faultTimes;
}

function pluginConfig(kubeconfigPath: string, cniVersion = '1.0.0'): Record<string, unknown> {
  return { cniVersion, name: 'lookup-test', type: 'istio-cni', kubernetes: { kubeconfig: kubeconfigPath }, log_file: join(dir, 'istio-cni.log'), ...POLICY };
}

/** One ADD of web-0 into a new netns; `rules` tells whether our chains ended up there. */
async function add(kubeconfigPath = kubeconfig, pod = WEB) {
  const netns = await h.createNetns({ tag: 'lookup' });
  const r = await h.runPlugin(h.DEFAULT_ISTIO_CNI_BIN, {
    command: 'ADD',
    stdin: pluginConfig(kubeconfigPath),
    containerId: 'lookup-test',
    netns,
    ifName: 'eth0',
    cniArgs: { K8S_POD_NAMESPACE: pod.namespace, K8S_POD_NAME: pod.name },
  });
  const rules = (await h.iptablesS(netns, 'nft')).some((l) => l.includes('ISTIO_'));
  await h.deleteNetns(netns);
  return { ...r, error: r.code === 0 ? undefined : (r.json as { code: number; msg: string; details: string }), rules };
}

async function status(kubeconfigPath = kubeconfig) {
  const r = await h.runPlugin(h.DEFAULT_ISTIO_CNI_BIN, { command: 'STATUS', stdin: pluginConfig(kubeconfigPath, '1.1.0') });
  return { ...r, error: r.code === 0 ? undefined : (r.json as { code: number; msg: string; details: string }) };
}

function assertRedirected(r: Awaited<ReturnType<typeof add>>): void {
  assert.equal(r.code, 0, r.stdout);
  assert.equal(r.rules, true, 'the injected pod got its rules');
}

/** An ADD during which the API server's answer changes (`change`) once it has answered `status`. */
async function addChangingAfter(status: number, change: () => void): ReturnType<typeof add> {
  const watcher = setInterval(() => {
    if (api.requests.some((r) => r.status === status)) {
      change();
      clearInterval(watcher);
    }
  }, 5);
  try {
    return await add();
  } finally {
    clearInterval(watcher);
  }
}

/** Failed, fail-closed (nothing programmed), with this code, inside the budget. */
function assertFailed(r: Awaited<ReturnType<typeof add>>, code: number, details: RegExp): void {
  assert.equal(r.code, 1, r.stdout);
  assert.equal(r.error?.code, code, r.stdout);
  assert.match(r.error?.details ?? '', details);
  assert.equal(r.rules, false, 'a failed ADD programs nothing');
  assertWithin(r, POLICY.pod_lookup_budget_ms);
}

/** The ADD, as the plugin timed it from its start to its log line, and as the wall clock saw the process. */
function assertWithin(r: { durationMs: number }, limitMs: number): void {
  const logged = lastLogLine();
  assert.ok(logged.durationMs <= limitMs + TIMER_SLACK_MS, `the plugin took ${logged.durationMs} ms`);
  assert.ok(r.durationMs < limitMs + START_AND_EXIT_MS, `the process took ${Math.round(r.durationMs)} ms`);
}

function lastLogLine(): { durationMs: number; apiAttempts?: number; reason?: string } {
  const lines = readFileSync(join(dir, 'istio-cni.log'), 'utf8').trim().split('\n');
  return JSON.parse(lines.at(-1)!);
}

function writeText(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text, { mode: 0o600 });
  return path;
}

describe('kubeconfig forms', () => {
  it('inline token with certificate-authority-data', async () => {
    fresh();
    assertRedirected(await add());
    assert.deepEqual(api.requests.map((r) => [r.auth, r.status]), [['token', 200]]);
    // The API server's audit log names who asked: the plugin and the version it was built as.
    const { version } = JSON.parse(readFileSync(join(h.REPO_ROOT, 'package.json'), 'utf8')) as { version: string };
    assert.equal(api.requests[0]?.userAgent, `istio-cni/${version}`);
  });

  it('tokenFile, relative to the kubeconfig, re-read on every lookup as it rotates', async () => {
    fresh();
    const rotating = join(dir, 'rotating');
    mkdirSync(rotating, { recursive: true });
    writeFileSync(join(rotating, 'token'), 'expired-token\n');
    const path = api.writeKubeconfig(rotating, { auth: 'none', caMode: 'file', user: { tokenFile: 'token' } });
    assertFailed(await add(path), 101, /HTTP 401/);
    writeFileSync(join(rotating, 'token'), `${api.token}\n`);
    assertRedirected(await add(path));
    // The expired token's 401 is retried briefly (each attempt reads the file again), then error 101.
    const answers = api.requests.map((r) => [r.auth, r.status]);
    assert.deepEqual(answers.at(-1), ['token', 200]);
    assert.ok(answers.length >= 3 && answers.slice(0, -1).every(([auth, status]) => auth === 'badToken' && status === 401), JSON.stringify(answers));
  });

  it('client-certificate and client-key files with certificate-authority file', async () => {
    fresh();
    assertRedirected(await add(api.writeKubeconfig(dir, { auth: 'clientCert', clientCertMode: 'file', caMode: 'file' })));
    assert.equal(api.requests[0]?.auth, 'clientCert');
    assert.equal(api.requests[0]?.clientCN, 'system:node:test-node');
  });

  it('client-certificate-data and client-key-data; a certificate from another CA is refused', async () => {
    fresh();
    assertRedirected(await add(api.writeKubeconfig(dir, { auth: 'clientCert', clientCertMode: 'data', caMode: 'data' })));
    assertFailed(await add(api.writeKubeconfig(dir, { auth: 'clientCert', caMode: 'data', badCredentials: true })), 101, /HTTP 401/);
    const auths = api.requests.map((r) => r.auth);
    assert.ok(auths[0] === 'clientCert' && auths.length >= 3 && auths.slice(1).every((a) => a === 'badClientCert'), JSON.stringify(auths));
  });

  it('current-context picks its cluster and user over others listed first', async () => {
    fresh();
    assertRedirected(await add(api.writeKubeconfig(dir, { auth: 'token', caMode: 'data', decoyContext: true })));
    assert.equal(api.requests.length, 1);
  });

  it('insecure-skip-tls-verify accepts a server certificate from any CA', async () => {
    fresh();
    await api.presentCertificate('foreign');
    try {
      assertRedirected(await add(api.writeKubeconfig(dir, { auth: 'token', caMode: 'insecure' })));
      assertFailed(await add(), 101, /server certificate not trusted/);
    } finally {
      await api.presentCertificate('own');
    }
  });

  it('tls-server-name verifies the certificate against that name instead of the address', async () => {
    fresh();
    await api.presentCertificate('named');
    try {
      assertRedirected(await add(api.writeKubeconfig(dir, { auth: 'token', caMode: 'data', tlsServerName: 'kubernetes.default.svc' })));
      assertFailed(await add(), 101, /server certificate not trusted \(ERR_TLS_CERT_ALTNAME_INVALID\)/);
    } finally {
      await api.presentCertificate('own');
    }
  });

  it('refuses exec and auth-provider credential plugins without calling the API', async () => {
    fresh();
    const exec = api.writeKubeconfig(dir, { auth: 'none', caMode: 'data', user: { exec: { apiVersion: 'client.authentication.k8s.io/v1', command: '/usr/bin/aws', args: ['eks', 'get-token'] } } });
    assertFailed(await add(exec), 105, /exec and auth-provider credential plugins are not supported/);
    const provider = api.writeKubeconfig(dir, { auth: 'none', caMode: 'data', user: { 'auth-provider': { name: 'gcp' } } });
    assertFailed(await add(provider), 105, /exec and auth-provider/);
    assert.equal(api.requests.length, 0);
  });

  it('reports a missing, unreadable, malformed or incomplete kubeconfig as error 105', async () => {
    fresh();
    assertFailed(await add(join(dir, 'absent')), 105, /absent: ENOENT/);
    assertFailed(await add(dir), 105, /is a directory/);
    assertFailed(await add(writeText('broken', 'clusters: [\n  - name: x\n')), 105, /not YAML/);
    assertFailed(await add(writeText('no-server', 'clusters: [{name: c, cluster: {}}]\ncontexts: [{name: x, context: {cluster: c}}]\n')), 105, /clusters\.0\.cluster\.server/);
    const elsewhere = readFileSync(kubeconfig, 'utf8').replace('current-context: istio-cni-context', 'current-context: gone');
    assertFailed(await add(writeText('no-context', elsewhere)), 105, /current-context "gone" not found/);
    const unusableKey = api.writeKubeconfig(dir, { auth: 'clientCert', caMode: 'data' });
    writeText('unusable-key', readFileSync(unusableKey, 'utf8').replace(/client-key-data: .*/, `client-key-data: ${Buffer.from('not a key').toString('base64')}`));
    assertFailed(await add(join(dir, 'unusable-key')), 105, /TLS credentials unusable/);
    assert.equal(api.requests.length, 0);
  });
});

describe('API server faults', () => {
  it('a slow answer: the attempt times out, the next attempt succeeds', async () => {
    fresh();
    api.behavior.fault = { kind: 'delay', ms: 2000 };
    api.behavior.faultTimes = 1;
    assertRedirected(await add());
    assert.equal(api.requests.length, 2);
  });

  it('no answer at all: attempts time out until the budget is spent, then error 11', async () => {
    fresh();
    api.behavior.fault = { kind: 'hang' };
    const r = await add();
    assertFailed(r, 11, /no answer within 300 ms \([2-9]×\).* \(\d attempts in \d+ ms\)/);
    assert.ok(api.requests.length >= 3, `${api.requests.length} attempts`);
    assert.ok(lastLogLine().durationMs >= POLICY.pod_lookup_budget_ms - 400, `gave up after only ${lastLogLine().durationMs} ms`);
  });

  it('dropped connections are retried; error 11 when they never stop', async () => {
    fresh();
    api.behavior.fault = { kind: 'drop' };
    api.behavior.faultTimes = 2;
    assertRedirected(await add());
    assert.equal(api.requests.length, 3);
    fresh();
    api.behavior.fault = { kind: 'drop' };
    assertFailed(await add(), 11, /connection failed: connection closed before the response headers/);
    assert.ok(api.requests.length >= 3, `${api.requests.length} attempts`);
  });

  it('reset connections are retried; error 11 when they never stop', async () => {
    fresh();
    api.behavior.fault = { kind: 'reset' };
    api.behavior.faultTimes = 1;
    const before = api.connections;
    assertRedirected(await add());
    assert.equal(api.connections - before, 2);
    fresh();
    api.behavior.fault = { kind: 'reset' };
    const start = api.connections;
    assertFailed(await add(), 11, /connection failed \(ECONNRESET\)/);
    assert.ok(api.connections - start >= 3, `${api.connections - start} attempts`);
    assert.equal(api.requests.length, 0);
  });

  it('a closed port is retried until the budget is spent', async () => {
    fresh();
    const closed = api.writeKubeconfig(dir, { auth: 'token', caMode: 'data', server: 'https://127.0.0.1:1' });
    assertFailed(await add(closed), 11, /ECONNREFUSED/);
  });

  it('HTTP 500 is retried; error 11 naming it when it persists', async () => {
    fresh();
    api.behavior.fault = { kind: 'status', status: 500 };
    api.behavior.faultTimes = 2;
    assertRedirected(await add());
    assert.deepEqual(api.requests.map((r) => r.status), [500, 500, 200]);
    fresh();
    api.behavior.fault = { kind: 'status', status: 500 };
    assertFailed(await add(), 11, /HTTP 500 fake apiserver forced status 500/);
  });

  it('HTTP 429 waits as long as Retry-After asks', async () => {
    fresh();
    api.behavior.fault = { kind: 'status', status: 429, retryAfter: '1' };
    api.behavior.faultTimes = 1;
    assertRedirected(await add());
    assert.deepEqual(api.requests.map((r) => r.status), [429, 200]);
    const gap = api.requests[1]!.at - api.requests[0]!.at;
    assert.ok(gap >= 990, `retried after ${gap} ms`);
  });

  it('HTTP 429 with a Retry-After beyond the budget fails at once with error 11', async () => {
    fresh();
    api.behavior.fault = { kind: 'status', status: 429, retryAfter: '30' };
    const r = await add();
    assertFailed(r, 11, /HTTP 429 .*retry after 30000 ms, beyond the 1500 ms budget/);
    assert.equal(api.requests.length, 1);
    assertWithin(r, 300);
  });

  it('HTTP 401 and 403 are retried for pod_lookup_denied_ms (a kube-apiserver that just started answers them until its caches fill), then error 101', async () => {
    for (const code of [401, 403]) {
      fresh();
      api.behavior.fault = { kind: 'status', status: code };
      const r = await add();
      assertFailed(r, 101, new RegExp(`HTTP ${code}.*, still after \\d+ attempts`));
      assert.ok(api.requests.length >= 2, `HTTP ${code}: ${api.requests.length} attempts`);
      assertWithin(r, POLICY.pod_lookup_denied_ms);
    }
    // The refusal ends (the authorizer's caches are filled): the pod is captured.
    fresh();
    api.behavior.fault = { kind: 'status', status: 403 };
    assertRedirected(await addChangingAfter(403, () => void delete api.behavior.fault));
    assert.equal(api.requests.at(0)?.status, 403);
    assert.equal(api.requests.at(-1)?.status, 200);
  });

  it('HTTP 404 is retried briefly (the pod may not be visible yet), then error 101', async () => {
    fresh();
    api.deletePod(WEB.namespace, WEB.name);
    // The pod shows up once the plugin has been told it is not there.
    assertRedirected(await addChangingAfter(404, () => api.setPod(h.injectedPod(WEB.name, WEB.namespace))));
    assert.equal(api.requests.at(0)?.status, 404);
    assert.equal(api.requests.at(-1)?.status, 200);

    fresh();
    const ghost = { namespace: 'default', name: 'ghost-0' };
    const r = await add(kubeconfig, ghost);
    assertFailed(r, 101, /HTTP 404 pods "ghost-0" not found, still after \d attempts/);
    assert.ok(api.requests.length >= 2, `${api.requests.length} attempts`);
    assertWithin(r, POLICY.pod_lookup_not_found_ms);
  });

  it('a server certificate from another CA fails at once with error 101', async () => {
    fresh();
    await api.presentCertificate('foreign');
    try {
      const start = api.connections;
      assertFailed(await add(), 101, /server certificate not trusted \((SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT_LOCALLY)\)/);
      assert.equal(api.connections - start, 1);
      assert.equal(api.requests.length, 0);
    } finally {
      await api.presentCertificate('own');
    }
  });
});

describe('STATUS (cniVersion 1.1.0)', () => {
  it('succeeds when the kubeconfig loads and the API answers with its credentials', async () => {
    fresh();
    const r = await status();
    assert.equal(r.code, 0, r.stdout);
    assert.equal(r.stdout, '');
    assert.deepEqual(api.requests.map((q) => [q.path, q.auth, q.status]), [['/api', 'token', 200]]);
  });

  it('is error 50 with the reason while the kubeconfig is missing', async () => {
    const r = await status(join(dir, 'not-written-yet'));
    assert.equal(r.error?.code, 50);
    assert.match(r.error?.details ?? '', /not-written-yet: ENOENT/);
  });

  it('is error 50 with the reason while the API cannot be used', async () => {
    fresh();
    const refused = await status(api.writeKubeconfig(dir, { auth: 'token', caMode: 'data', server: 'https://127.0.0.1:1' }));
    assert.equal(refused.error?.code, 50);
    assert.match(refused.error?.details ?? '', /GET https:\/\/127\.0\.0\.1:1\/api: connection failed \(ECONNREFUSED\)/);

    const unauthorized = await status(api.writeKubeconfig(dir, { auth: 'token', caMode: 'data', badCredentials: true }));
    assert.equal(unauthorized.error?.code, 50);
    assert.match(unauthorized.error?.details ?? '', /HTTP 401/);

    api.behavior.fault = { kind: 'hang' };
    const silent = await status();
    assert.equal(silent.error?.code, 50);
    assert.match(silent.error?.details ?? '', /no answer within 300 ms/);
    assertWithin(silent, POLICY.pod_lookup_timeout_ms);
    fresh();

    await api.presentCertificate('foreign');
    try {
      const untrusted = await status();
      assert.equal(untrusted.error?.code, 50);
      assert.match(untrusted.error?.details ?? '', /server certificate not trusted/);
    } finally {
      await api.presentCertificate('own');
    }
  });
});
