/**
 * We run as root on every node: no shell anywhere in what we ship, no credential in any message, and
 * no netns but a pod's. (test/e2e/executable.test.ts has the node's own netns, a plain file,
 * /proc/1/ns/net and the 0600 log file; faults.test.ts the token after API errors. These add to them.)
 */
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, it } from 'vitest';
import * as h from '../harness/index.ts';
import { NOTHING, ourState, specErrorProblems } from '../hostile/oracle.ts';

afterAll(h.cleanupAll);

const BIN = h.DEFAULT_ISTIO_CNI_BIN;
/** Where build/build.mjs leaves the esbuild bundle of the plugin that the executable is compiled from. */
const BUNDLE = join(h.REPO_ROOT, 'dist', '.build', 'istio-cni', 'bundle.cjs');
const WEB = { pod: 'web-0', namespace: 'default' };

describe('no shell in the shipped code', () => {
  const bundle = readFileSync(BUNDLE, 'utf8');

  it('spawns only through Bun.spawn with an argv array, in one place', () => {
    for (const shellish of ['shell:', '/bin/sh', '/bin/bash', 'child_process', 'spawnSync', '.$`', '.$(', '.fork(', 'process.binding']) {
      assert.ok(!bundle.includes(shellish), `the bundle contains ${shellish}`);
    }
    const spawns = [...bundle.matchAll(/\.spawn\(/g)];
    assert.equal(spawns.length, 1, 'programs are started in one place (src/netns/exec.ts)');
    // What it passes: a copy of the argv array, never a command line.
    assert.match(bundle.slice(spawns[0]!.index, spawns[0]!.index + 40), /^\.spawn\(\[\.\.\.[\w$]+\],\{/);
  });
});

describe('credentials stay out of every message', () => {
  const broken: [string, (token: string) => string][] = [
    ['a block kubeconfig broken right after the token', (token) => `apiVersion: v1\nusers:\n- name: u\n  user:\n    token: ${token}\n   bad: [\n`],
    ['a flow kubeconfig cut short after the token', (token) => `clusters: [{name: k, cluster: {server: "https://127.0.0.1:1"}}]\nusers: [{name: u, user: {token: ${token}\n`],
    ['a token of the wrong type', (token) => `clusters: [{name: k, cluster: {server: "https://127.0.0.1:1"}}]\nusers: [{name: u, user: {token: [${token}]}}]\ncontexts: [{name: c, context: {cluster: k, user: u}}]\n`],
  ];
  for (const [name, text] of broken) {
    it(`reports ${name} without quoting it`, async () => {
      const dir = h.makeTempDir('icni-sec-');
      const token = 'eyJhbGciOiJSUzI1NiJ9.c2VjcmV0LXRva2VuLXZhbHVl.c2lnbmF0dXJl';
      const kubeconfig = join(dir, 'kubeconfig');
      writeFileSync(kubeconfig, text(token), { mode: 0o600 });
      const logFile = join(dir, 'istio-cni.log');
      const result = await h.runPlugin(BIN, {
        command: 'ADD',
        stdin: { cniVersion: '1.0.0', name: 'k8s', type: 'istio-cni', kubernetes: { kubeconfig }, log_file: logFile },
        containerId: 'c1',
        netns: '/run/netns/never-reached',
        ifName: 'eth0',
        cniArgs: { K8S_POD_NAMESPACE: 'default', K8S_POD_NAME: 'web-0' },
      });
      const { problems, error } = specErrorProblems(result);
      assert.deepEqual(problems, []);
      assert.equal(error?.code, 105);
      assert.match(error!.details, /kubeconfig/);
      for (const text of [result.stdout, result.stderr, readFileSync(logFile, 'utf8')]) {
        assert.ok(!text.includes('c2VjcmV0LXRva2VuLXZhbHVl'), `the token leaked: ${text}`);
      }
    });
  }
});

describe('CNI_NETNS must be a pod\'s network namespace', () => {
  it('refuses other namespace kinds, directories, and the node\'s netns under another name', async () => {
    const e = await h.makeE2E({ tag: 'nspath', pods: [h.injectedPod(WEB.pod, WEB.namespace)] });
    const dir = join(e.conf.confDir, 'paths');
    mkdirSync(dir);
    const link = join(dir, 'link-to-node');
    symlinkSync(e.topo.node.path, link);
    // A second mount of the node's netns file: same namespace, different path.
    const bound = join(dir, 'bound-node');
    writeFileSync(bound, '');
    // Opened without blocking: a FIFO nobody writes to is refused at once.
    const fifo = join(dir, 'fifo');
    await h.runOk(['/usr/bin/mkfifo', fifo]);
    await h.runOk(['/usr/bin/mount', '--bind', e.topo.node.path, bound]);
    h.registerCleanup(`umount ${bound}`, () => void h.run(['/usr/bin/umount', bound]));
    try {
      const refused: [string, RegExp][] = [
        ['/proc/self/ns/net', /node's own/],
        ['/proc/thread-self/ns/net', /node's own/],
        [link, /node's own/],
        [bound, /node's own/],
        ['/proc/self/ns/mnt', /not a network namespace/],
        [dir, /not a network namespace/],
        ['/dev/null', /not a network namespace/],
        [fifo, /not a network namespace/],
        [`${e.topo.pod.path}/..`, /not a network namespace|ENOTDIR/],
        ['relative/netns', /CNI_NETNS/],
      ];
      for (const [netns, why] of refused) {
        const result = await e.runDirect('ADD', WEB, { netns });
        const { problems, error } = specErrorProblems(result);
        assert.deepEqual(problems, [], netns);
        assert.ok(error!.code === 104 || error!.code === 4, `${netns}: ${result.stdout}`);
        assert.match(`${error!.msg} ${error!.details}`, why, netns);
      }
      assert.deepEqual(await ourState(e.topo.node), NOTHING);
    } finally {
      await h.run(['/usr/bin/umount', bound]);
    }
  });
});
