/**
 * The built dist/istio-cni as a process: what a runtime sees on stdout, stderr and the exit code,
 * for the verbs the libcni driver cannot send (STATUS, GC), bad input, its environment, its log,
 * and each kubeconfig form.
 */
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import * as h from '../harness/index.ts';

after(h.cleanupAll);

const BIN = h.DEFAULT_ISTIO_CNI_BIN;
const WEB = { pod: 'web-0', namespace: 'default' };

/** Runs the executable with exactly this environment (no PATH unless given) and stdin. */
async function plugin(env: Record<string, string>, stdin: unknown) {
  const input = typeof stdin === 'string' ? stdin : JSON.stringify(stdin);
  return h.run([BIN], { env, input });
}

function assertSpecError(stdout: string, code: number) {
  assert.equal(stdout.trim().split('\n').length, 1, `one JSON line on stdout, got ${stdout}`);
  const error = JSON.parse(stdout) as Record<string, unknown>;
  assert.deepEqual(Object.keys(error).sort(), ['cniVersion', 'code', 'details', 'msg']);
  assert.equal(error.code, code);
  assert.doesNotMatch(stdout, /\n\s+at /, 'no stack trace on stdout');
  return error;
}

describe('the executable', () => {
  it('answers VERSION as podman asks it, ignoring NODE_OPTIONS and needing no PATH', async () => {
    const result = await plugin({ CNI_COMMAND: 'VERSION', CNI_NETNS: 'dummy', NODE_OPTIONS: '--require=/nonexistent/hijack.js' }, { cniVersion: '1.0.0' });
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stderr, '');
    assert.deepEqual(JSON.parse(result.stdout), { cniVersion: '1.0.0', supportedVersions: ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] });
  });

  it("runs no code and takes no runtime option from Bun's variables in its environment (build/env-guard.mjs)", async () => {
    const dir = h.makeTempDir('icni-bunenv-');
    const trace = join(dir, 'preloaded');
    const preload = join(dir, 'preload.js');
    writeFileSync(preload, `require('node:fs').writeFileSync(${JSON.stringify(trace)}, 'ran');\n`);
    const hostile = {
      BUN_OPTIONS: `--preload ${preload}`, // runs the file before the plugin in an unguarded Bun executable
      BUN_BE_BUN: '1', // turns an unguarded Bun executable into the bun CLI (its help, exit 0)
      BUN_JSC_useJIT: '0',
      JSC_useJIT: '0',
    };
    const version = await plugin({ CNI_COMMAND: 'VERSION', ...hostile }, { cniVersion: '1.0.0' });
    assert.equal(version.code, 0, version.stderr);
    assert.equal(version.stderr, '');
    assert.deepEqual(JSON.parse(version.stdout).cniVersion, '1.0.0');
    // An ADD as well: bad input still gets its SPEC error, and nothing else.
    const add = await plugin({ CNI_COMMAND: 'ADD', ...hostile }, '{"cniVersion": "1.0.0"}');
    assert.equal(add.code, 1);
    assertSpecError(add.stdout, 4);
    assert.equal(statSync(trace, { throwIfNoEntry: false }), undefined, 'the preload never ran');
  });

  it('answers bad input with one SPEC error object and exit status 1', async () => {
    const cases: [Record<string, string>, string, number][] = [
      [{ CNI_COMMAND: 'ADD' }, '{"cniVersion": "1.0.0",', 6],
      [{ CNI_COMMAND: 'ADD' }, '{"cniVersion": "2.0.0"}', 1],
      [{ CNI_COMMAND: 'ADD' }, '{"cniVersion": "1.0.0"}', 4],
      [{ CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'c', CNI_NETNS: '/run/netns/x', CNI_IFNAME: 'eth0', CNI_ARGS: 'K8S_POD_NAME=$(reboot)' }, '{"cniVersion": "1.0.0"}', 4],
      [{ CNI_COMMAND: 'ADD' }, '{"cniVersion": "1.0.0", "iptables_backend": 42}', 7],
      [{ CNI_COMMAND: 'DESTROY' }, '{"cniVersion": "1.0.0"}', 4],
      [{ CNI_COMMAND: 'CHECK', CNI_CONTAINERID: 'c', CNI_NETNS: '/run/netns/x', CNI_IFNAME: 'eth0' }, '{"cniVersion": "0.3.1"}', 1],
      [{ CNI_COMMAND: 'GC' }, '{"cniVersion": "1.0.0"}', 1],
    ];
    for (const [env, stdin, code] of cases) {
      const result = await plugin(env, stdin);
      assert.equal(result.code, 1, `${JSON.stringify(env)} ${stdin}`);
      assertSpecError(result.stdout, code);
    }
  });

  it('answers STATUS and GC for cniVersion 1.1.0', async () => {
    const e = await h.makeE2E({ tag: 'status' });
    const status = await plugin({ CNI_COMMAND: 'STATUS', CNI_PATH: e.cniPath }, { cniVersion: '1.1.0', name: 'k8s', type: 'istio-cni', kubernetes: { kubeconfig: e.kubeconfigPath }, log_level: 'none' });
    assert.equal(status.code, 0, status.stdout);
    assert.equal(status.stdout, '');
    const missing = await plugin({ CNI_COMMAND: 'STATUS', CNI_PATH: e.cniPath }, { cniVersion: '1.1.0', kubernetes: { kubeconfig: '/nonexistent/kubeconfig' }, log_level: 'none' });
    assert.match(String(assertSpecError(missing.stdout, 50).details), /nonexistent/);
    const gc = await plugin({ CNI_COMMAND: 'GC', CNI_PATH: e.cniPath }, { cniVersion: '1.1.0', name: 'k8s', type: 'istio-cni', log_level: 'none', 'cni.dev/valid-attachments': [] });
    assert.equal(gc.code, 0, gc.stdout);
  });

  it('refuses to program the node\'s own netns or a file that is not a netns', async () => {
    const e = await h.makeE2E({ tag: 'ownns', pods: [h.injectedPod(WEB.pod, WEB.namespace)] });
    const notNetns = join(e.conf.confDir, 'not-a-netns');
    writeFileSync(notNetns, '');
    for (const netns of [e.topo.node.path, notNetns, '/proc/1/ns/net']) {
      const result = await e.runDirect('ADD', WEB, { netns });
      assert.equal(result.code, 1, netns);
      assertSpecError(result.stdout, 104);
    }
    assert.deepEqual((await h.iptablesS(e.topo.node, 'nft')).filter((l) => l.includes('ISTIO_')), []);
  });
});

describe('logging', () => {
  it('writes one JSON line per verb to a 0600 file', async () => {
    const e = await h.makeE2E({ tag: 'log', pods: [h.injectedPod(WEB.pod, WEB.namespace)] });
    assert.equal((await e.run('add', WEB)).code, 0);
    assert.equal((await e.run('del', WEB)).code, 0);
    const lines = readFileSync(e.conf.logFile!, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.deepEqual(lines.map((l) => l.verb), ['ADD', 'DEL']);
    const [add] = lines;
    assert.equal(add!.pod, 'default/web-0');
    assert.equal(add!.decision, 'redirect');
    assert.equal(add!.containerId, h.defaultContainerId(e.topo.pod));
    assert.equal(typeof add!.durationMs, 'number');
    assert.equal(statSync(e.conf.logFile!).mode & 0o777, 0o600);
    assert.doesNotMatch(readFileSync(e.conf.logFile!, 'utf8'), new RegExp(e.api!.token));
  });

  it('never fails a verb when the log file cannot be opened', async () => {
    const dir = h.makeTempDir('icni-log-');
    const blocker = join(dir, 'file');
    writeFileSync(blocker, '');
    const e = await h.makeE2E({ tag: 'nolog', pods: [h.injectedPod(WEB.pod, WEB.namespace)], conflist: { logFile: join(blocker, 'sub', 'istio-cni.log') } });
    const add = await e.run('add', WEB);
    assert.equal(add.code, 0, add.stderr);
    assert.equal((await h.iptablesS(e.topo.pod, 'nft')).filter((l) => l.startsWith('-N ISTIO_')).length, 4);
  });
});

describe('kubeconfig forms', () => {
  const forms: { name: string; kubeconfig: h.KubeconfigOptions; auth: string }[] = [
    { name: 'tokenFile with a CA file', kubeconfig: { auth: 'tokenFile', caMode: 'file' }, auth: 'token' },
    { name: 'client certificate data', kubeconfig: { auth: 'clientCert', caMode: 'data' }, auth: 'clientCert' },
    { name: 'client certificate files', kubeconfig: { auth: 'clientCert', caMode: 'file', clientCertMode: 'file' }, auth: 'clientCert' },
    { name: 'token with insecure-skip-tls-verify', kubeconfig: { auth: 'token', caMode: 'insecure' }, auth: 'token' },
    { name: 'a decoy context before the current one', kubeconfig: { auth: 'token', caMode: 'data', decoyContext: true }, auth: 'token' },
  ];
  for (const form of forms) {
    it(`looks the pod up with ${form.name}`, async () => {
      const e = await h.makeE2E({ tag: 'kcfg', pods: [h.injectedPod(WEB.pod, WEB.namespace)], kubeconfig: form.kubeconfig });
      const add = await e.run('add', WEB);
      assert.equal(add.code, 0, add.stderr);
      assert.deepEqual(e.api!.podRequests(WEB.namespace, WEB.pod).map((r) => r.auth), [form.auth]);
      assert.equal((await h.iptablesS(e.topo.pod, 'nft')).filter((l) => l.startsWith('-N ISTIO_')).length, 4);
    });
  }

  it('re-reads a rotated token file on every lookup', async () => {
    const e = await h.makeE2E({ tag: 'rotate', pods: [h.injectedPod(WEB.pod, WEB.namespace)], kubeconfig: { auth: 'tokenFile', caMode: 'data' } });
    writeFileSync(e.api!.tokenFile, 'stale-token\n');
    const refused = await e.run('add', WEB);
    assert.equal(refused.error?.code, 101);
    // A failed ADD is followed by DEL before the runtime retries: ptp's interface goes away.
    assert.equal((await e.run('del', WEB)).code, 0);
    writeFileSync(e.api!.tokenFile, `${e.api!.token}\n`);
    assert.equal((await e.run('add', WEB)).code, 0);
  });

  it('refuses an exec credential plugin with a clear error', async () => {
    const e = await h.makeE2E({ tag: 'exec', pods: [h.injectedPod(WEB.pod, WEB.namespace)] });
    const dir = join(e.conf.confDir, 'exec');
    mkdirSync(dir);
    const kubeconfig = join(dir, 'kubeconfig');
    writeFileSync(kubeconfig, [
      'apiVersion: v1', 'kind: Config', 'current-context: c',
      'clusters: [{name: k, cluster: {server: "https://127.0.0.1:6443", insecure-skip-tls-verify: true}}]',
      'users: [{name: u, user: {exec: {command: /bin/sh, args: ["-c", "id"], apiVersion: client.authentication.k8s.io/v1}}}]',
      'contexts: [{name: c, context: {cluster: k, user: u}}]', '',
    ].join('\n'));
    h.writeConflist({ dir: e.conf.confDir, netName: e.conf.netName, kubeconfig, iptablesBackend: 'nft' });
    const add = await e.run('add', WEB);
    assert.equal(add.error?.code, 105);
    assert.match(add.error?.details ?? '', /exec and auth-provider/);
  });
});
