/**
 * The repair controller against the fake HTTPS API server's pod list/watch: a pod whose
 * istio-validation init container exited 126 is labelled (or deleted) once, a healthy one never;
 * a dropped watch resumes from its resourceVersion; an expired one (410) lists again.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { copyFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, it } from 'vitest';
import pino from 'pino';
import * as h from '../harness/index.ts';
import { loadKubeconfig } from '../../src/kube/kubeconfig.ts';
import { inClusterConnection } from '../../src/kube/serviceaccount.ts';
import { deletePod, listNodePods } from '../../src/repair/api.ts';
import { runRepairController, UNINITIALIZED_LABEL, type RepairSettings } from '../../src/repair/controller.ts';
import { WatchedPod } from '../../src/repair/pod.ts';

afterAll(h.cleanupAll);

const NODE = 'test-node';

/** What kubelet reports for istio-validation: crash-looping after exit 126, or completed. */
function validationStatus(exitCode: number): h.JsonObject {
  const terminated = { exitCode, reason: exitCode === 0 ? 'Completed' : 'Error', startedAt: '2024-05-01T10:00:00Z', finishedAt: '2024-05-01T10:00:05Z', containerID: 'containerd://abc' };
  const container = { name: 'istio-validation', image: 'docker.io/istio/proxyv2:1.22.3', imageID: '', ready: exitCode === 0, started: false };
  const initContainerStatuses =
    exitCode === 0
      ? [{ ...container, restartCount: 0, state: { terminated }, lastState: {} }]
      : [{ ...container, restartCount: 3, state: { waiting: { reason: 'CrashLoopBackOff', message: 'back-off 40s restarting failed container' } }, lastState: { terminated } }];
  return { status: { phase: 'Pending', initContainerStatuses } };
}
const broken = (name: string, overrides: h.JsonObject = {}) => h.injectedPod(name, 'default', h.deepMerge(validationStatus(126), overrides));
const healthy = (name: string) => h.injectedPod(name, 'default', validationStatus(0));

async function until(what: string, done: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await h.sleep(20);
  }
}

async function controller(pods: h.Pod[], mode: RepairSettings['mode']) {
  const api = await h.startFakeKubeApi({ pods });
  const collection = h.servePodWatch(api);
  const conn = loadKubeconfig(api.writeKubeconfig(undefined, { auth: 'token', caMode: 'data' }));
  const logs: Array<Record<string, unknown>> = [];
  const log = pino({ level: 'debug' }, { write: (line: string) => void logs.push(JSON.parse(line)) });
  const stop = new AbortController();
  const running = runRepairController(conn, { nodeName: NODE, mode }, log, stop.signal);
  await until('the first watch', () => collection.openWatches() === 1);
  return {
    api,
    pods: collection,
    conn,
    logs,
    label: (name: string) => (api.pods.get(`default/${name}`)?.metadata.labels as Record<string, string> | undefined)?.[UNINITIALIZED_LABEL],
    requests: (method: string, name: string) => api.requests.filter((r) => r.method === method && r.path === `/api/v1/namespaces/default/pods/${name}`),
    watchFrom: (n: number) => new URLSearchParams(collection.watches()[n]?.query).get('resourceVersion'),
    async stop() {
      stop.abort();
      await running;
      await api.close();
    },
  };
}

describe('repair controller, label mode', () => {
  it('labels a pod that started uncaptured once, and never a healthy or unannotated pod or another node\'s', async () => {
    const c = await controller(
      [
        broken('broken-0'),
        healthy('healthy-0'),
        h.plainPod('plain-0', 'default', validationStatus(126)),
        broken('elsewhere-0', { spec: { nodeName: 'other-node' } }),
      ],
      'label',
    );
    try {
      await until('broken-0 labelled', () => c.label('broken-0') === 'true');
      // More events for the same pod (kubelet updating its status), and a pod breaking later.
      c.pods.change('default', 'broken-0', { status: { initContainerStatuses: [{ name: 'istio-validation', restartCount: 4, state: { waiting: { reason: 'CrashLoopBackOff' } }, lastState: { terminated: { exitCode: 126 } } }] } });
      c.pods.change('default', 'healthy-0', { metadata: { annotations: { touched: 'yes' } } });
      c.pods.put(broken('late-0'));
      await until('late-0 labelled', () => c.label('late-0') === 'true');

      assert.equal(c.requests('PATCH', 'broken-0').length, 1);
      assert.equal(c.requests('PATCH', 'late-0').length, 1);
      for (const name of ['healthy-0', 'plain-0', 'elsewhere-0']) {
        assert.equal(c.requests('PATCH', name).length, 0, name);
        assert.equal(c.label(name), undefined, name);
      }
      assert.ok(c.logs.some((l) => l.msg === 'repaired a pod that started without traffic capture' && l.pod === 'default/broken-0'));
      // The list and the watch asked for this node's pods only.
      assert.equal(new URLSearchParams(c.pods.lists()[0]!.query).get('fieldSelector'), `spec.nodeName=${NODE}`);
      assert.equal(new URLSearchParams(c.pods.watches()[0]!.query).get('fieldSelector'), `spec.nodeName=${NODE}`);
    } finally {
      await c.stop();
    }
  });

  it('resumes a dropped watch from the last resourceVersion it saw (bookmarks count), without listing again', async () => {
    const c = await controller([healthy('healthy-0')], 'label');
    try {
      const listed = c.watchFrom(0);
      assert.equal(listed, c.pods.resourceVersion());
      c.pods.put(broken('elsewhere-0', { spec: { nodeName: 'other-node' } })); // no event for this node's watch...
      c.pods.bookmark(); // ...but the bookmark moves its resourceVersion on
      const bookmarked = c.pods.resourceVersion();
      await until('the bookmark', () => c.logs.some((l) => l.msg === 'watch event' && l.type === 'BOOKMARK'));
      assert.equal(c.pods.dropWatches(), 1);
      c.pods.put(broken('broken-0')); // happens while the watch is down
      await until('broken-0 labelled', () => c.label('broken-0') === 'true');
      assert.equal(c.watchFrom(1), bookmarked);
      assert.notEqual(bookmarked, listed);
      assert.equal(c.pods.lists().length, 1);
      assert.equal(c.requests('PATCH', 'broken-0').length, 1);
    } finally {
      await c.stop();
    }
  });

  it('lists again when its resourceVersion has expired (410), and repairs what it missed', async () => {
    const c = await controller([broken('broken-0'), healthy('healthy-0')], 'label');
    try {
      await until('broken-0 labelled', () => c.label('broken-0') === 'true');
      const watchedFrom = Number(c.watchFrom(0));
      // In one tick: the watch drops, a pod breaks, and the history that held it is compacted.
      c.pods.dropWatches();
      c.pods.put(broken('missed-0'));
      c.pods.compact();
      const relistedAt = c.pods.resourceVersion();
      await until('missed-0 labelled', () => c.label('missed-0') === 'true');
      assert.equal(c.pods.lists().length, 2);
      assert.ok(Number(c.watchFrom(1)) >= watchedFrom, 'the resumed watch used the old resourceVersion');
      assert.ok(c.logs.some((l) => l.msg === 'watch resourceVersion expired: listing again'));
      await until('a watch from the new list', () => c.pods.openWatches() === 1);
      assert.equal(c.watchFrom(c.pods.watches().length - 1), relistedAt);
      // The relist saw broken-0 again, already labelled: still one PATCH.
      assert.equal(c.requests('PATCH', 'broken-0').length, 1);
      assert.equal(c.requests('PATCH', 'missed-0').length, 1);
      assert.equal(c.requests('PATCH', 'healthy-0').length, 0);
    } finally {
      await c.stop();
    }
  });
});

describe('repair controller, delete mode', () => {
  it('deletes a pod that started uncaptured once and leaves a healthy pod', async () => {
    const c = await controller([broken('broken-0'), healthy('healthy-0')], 'delete');
    try {
      await until('broken-0 deleted', () => !c.api.pods.has('default/broken-0'));
      c.pods.put(broken('late-0'));
      await until('late-0 deleted', () => !c.api.pods.has('default/late-0'));
      assert.equal(c.requests('DELETE', 'broken-0').length, 1);
      assert.equal(c.requests('DELETE', 'healthy-0').length, 0);
      assert.ok(c.api.pods.has('default/healthy-0'));
    } finally {
      await c.stop();
    }
  });

  it('does not delete a newer pod of the same name (UID precondition)', async () => {
    const api = await h.startFakeKubeApi({ pods: [broken('web-0')] });
    const pods = h.servePodWatch(api);
    const conn = loadKubeconfig(api.writeKubeconfig(undefined, { auth: 'token', caMode: 'data' }));
    try {
      const stale = WatchedPod.parse(api.pods.get('default/web-0'));
      pods.remove('default', 'web-0');
      const replacement = pods.put(healthy('web-0'));
      assert.equal(await deletePod(conn, stale, AbortSignal.timeout(5_000)), false);
      assert.equal(api.pods.get('default/web-0')?.metadata.uid, replacement.metadata.uid);
      assert.equal(api.requests.at(-1)?.status, 409);
    } finally {
      await api.close();
    }
  });
});

describe('repair credentials', () => {
  it('talks to the API with the pod\'s service account (KUBERNETES_SERVICE_HOST, ca.crt, token)', async () => {
    const api = await h.startFakeKubeApi({ pods: [broken('web-0')] });
    h.servePodWatch(api);
    try {
      const dir = h.makeTempDir('icni-sa-');
      copyFileSync(api.pki.caCert, join(dir, 'ca.crt'));
      writeFileSync(join(dir, 'token'), `${api.token}\n`);
      const conn = inClusterConnection({ KUBERNETES_SERVICE_HOST: '127.0.0.1', KUBERNETES_SERVICE_PORT: String(api.port) }, dir);
      const list = await listNodePods(conn, NODE, AbortSignal.timeout(5_000));
      assert.deepEqual(list.items.map((p) => p.metadata.name), ['web-0']);
      assert.equal(api.requests.at(-1)?.auth, 'token');
    } finally {
      await api.close();
    }
  });
});

describe('istio-cni repair, the built executable', () => {
  it('configured from the environment, deletes the broken pod, and stops cleanly on SIGTERM', async () => {
    const api = await h.startFakeKubeApi({ pods: [broken('broken-0'), healthy('healthy-0')] });
    const pods = h.servePodWatch(api);
    const kubeconfig = api.writeKubeconfig(undefined, { auth: 'tokenFile', caMode: 'file' });
    const child = spawn(h.DEFAULT_ISTIO_CNI_BIN, ['repair'], {
      env: h.minimalEnv({ NODE_NAME: NODE, REPAIR_MODE: 'delete', KUBECONFIG: kubeconfig }),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const stopChild = h.trackChild(child, 'istio-cni repair');
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const exited = new Promise<number | null>((resolve) => child.once('close', resolve));
    try {
      await until('broken-0 deleted', () => !api.pods.has('default/broken-0'), 10_000);
      await until('the watch', () => pods.openWatches() === 1);
      child.kill('SIGTERM');
      assert.equal(await exited, 0, stderr);
      const lines = stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
      assert.ok(lines.some((l) => l.msg === 'repaired a pod that started without traffic capture' && l.action === 'delete' && l.pod === 'default/broken-0'), stdout);
      assert.equal(lines.at(-1)?.msg, 'repair controller stopped');
      assert.ok(api.pods.has('default/healthy-0'));
    } finally {
      await stopChild();
      await api.close();
    }
  });

  it('refuses to start without a node name: exit status 2 and what is missing', async () => {
    const r = await h.run([h.DEFAULT_ISTIO_CNI_BIN, 'repair', '--mode', 'label']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /^istio-cni repair: --node-name: required.*NODE_NAME/);
  });
});
