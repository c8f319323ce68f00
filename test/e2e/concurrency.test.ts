/**
 * Many pods at once, straight to the built executable (no libcni, to keep it fast): 64 ADDs in
 * parallel on 64 netns, then 64 DELs, on each backend (both iptables backends and native nftables); then ADD/ADD/CHECK/DEL over and over on one
 * netns. No verb may fail, no chain may leak, no rule may be doubled.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, it } from 'vitest';
import * as h from '../harness/index.ts';
import { classify, NOTHING, ourState } from '../hostile/oracle.ts';

afterAll(h.cleanupAll);

const BIN = h.DEFAULT_ISTIO_CNI_BIN;
const PODS = 64;
const BACKENDS = ['nft', 'legacy', 'nftables'] as const;

let api: h.FakeKubeApi;
let node: h.Netns;
let kubeconfig: string;
let logDir: string;

beforeAll(async () => {
  api = await h.startFakeKubeApi({ pods: Array.from({ length: PODS }, (_, i) => h.injectedPod(`web-${i}`, 'default')) });
  node = await h.createNetns({ tag: 'conc-node' });
  await api.exposeIn(node);
  kubeconfig = api.writeKubeconfig(undefined, { auth: 'token', caMode: 'data' });
  logDir = h.makeTempDir('icni-conc-');
});

function verb(command: string, netns: h.Netns, pod: string, backend: h.CaptureBackend) {
  const stdin = { cniVersion: '1.0.0', name: 'k8s', type: 'istio-cni', kubernetes: { kubeconfig }, log_file: join(logDir, 'istio-cni.log'), iptables_backend: backend };
  return h.runPlugin(BIN, {
    command,
    stdin,
    containerId: `c-${pod}`,
    netns,
    ifName: 'eth0',
    cniArgs: { IgnoreUnknown: '1', K8S_POD_NAMESPACE: 'default', K8S_POD_NAME: pod },
    hostNetns: node,
    timeoutMs: 120_000,
  });
}

function assertOk(results: h.PluginRunResult[], what: string) {
  const failed = results.map((r, i) => ({ i, r })).filter(({ r }) => r.code !== 0);
  assert.deepEqual(failed.map(({ i, r }) => `${what} #${i}: ${r.code} ${r.stdout}${r.stderr}`), []);
}

describe('64 pods at once', () => {
  for (const backend of BACKENDS) {
    it(`ADD then DEL on 64 netns in parallel, ${backend}`, async () => {
      const pods = await Promise.all(Array.from({ length: PODS }, () => h.createNetns({ tag: 'conc-pod' })));
      assertOk(await Promise.all(pods.map((ns, i) => verb('ADD', ns, `web-${i}`, backend))), 'ADD');
      const added = await Promise.all(pods.map((ns) => ourState(ns)));
      assert.deepEqual(added.map((s) => classify(s[backend])), pods.map(() => 'full'), 'every netns holds the rule set exactly once');
      assertOk(await Promise.all(pods.map((ns, i) => verb('DEL', ns, `web-${i}`, backend))), 'DEL');
      const deleted = await Promise.all(pods.map((ns) => ourState(ns)));
      assert.deepEqual(deleted, pods.map(() => (NOTHING)), 'no chain left behind');
      assert.deepEqual(await ourState(node), NOTHING);
      await Promise.all(pods.map((ns) => h.deleteNetns(ns)));
    });
  }
});

describe('one netns, over and over', () => {
  it('ADD, ADD again, CHECK, DEL eight times on each backend', async () => {
    const ns = await h.createNetns({ tag: 'conc-again' });
    for (const backend of BACKENDS) {
      for (let round = 0; round < 8; round++) {
        for (const command of ['ADD', 'ADD', 'CHECK']) {
          const r = await verb(command, ns, 'web-0', backend);
          assert.equal(r.code, 0, `${backend} round ${round} ${command}: ${r.stdout}`);
          assert.equal(classify((await ourState(ns))[backend]), 'full', `${backend} round ${round} after ${command}`);
        }
        const del = await verb('DEL', ns, 'web-0', backend);
        assert.equal(del.code, 0, `${backend} round ${round} DEL: ${del.stdout}`);
        assert.deepEqual(await ourState(ns), NOTHING, `${backend} round ${round} after DEL`);
      }
    }
  });
});
