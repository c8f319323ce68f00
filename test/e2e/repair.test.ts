/**
 * The repair controller, through the built executable (`istio-cni repair`, on @kubernetes/client-node's
 * informer), against the fake HTTPS API server's pod list/watch: a pod whose istio-validation init
 * container exited 126 is labelled (or deleted) once, a healthy one never; a dropped watch resumes
 * from its resourceVersion; an expired one (410) lists again. The installer runs the same controller
 * (test/e2e/metrics.test.ts).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, describe, it } from 'node:test';
import * as h from '../harness/index.ts';
import { UNINITIALIZED_LABEL } from '../../src/repair/pod.ts';

after(h.cleanupAll);

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

async function until(what: string, done: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await h.sleep(20);
  }
}

/** `istio-cni repair` as a DaemonSet would run it (settings in its environment), logging at debug level to stdout. */
function startRepair(env: NodeJS.ProcessEnv) {
  const child = spawn(h.DEFAULT_ISTIO_CNI_BIN, ['repair'], { env: h.minimalEnv({ NODE_NAME: NODE, LOG_LEVEL: 'debug', ...env }), stdio: ['ignore', 'pipe', 'pipe'] });
  const kill = h.trackChild(child, 'istio-cni repair');
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exited = new Promise<number | null>((resolve) => child.once('close', resolve));
  return {
    logs: () => stdout.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>),
    output: () => ({ stdout, stderr }),
    /** SIGTERM, and the exit code. */
    async stop(): Promise<number | null> {
      child.kill('SIGTERM');
      const code = await exited;
      await kill();
      return code;
    },
  };
}

/** `routeFirst`: a route of the test's, tried before the fake's pod routes. */
async function controller(pods: h.Pod[], mode: 'label' | 'delete', routeFirst?: (collection: () => h.PodCollection) => Parameters<h.FakeKubeApi['addRoute']>[0]) {
  const api = await h.startFakeKubeApi({ pods });
  if (routeFirst !== undefined) api.addRoute(routeFirst(() => collection));
  const collection = h.servePodWatch(api);
  const repair = startRepair({ REPAIR_MODE: mode, KUBECONFIG: api.writeKubeconfig(undefined, { auth: 'token', caMode: 'data' }) });
  await until('the first watch', () => collection.openWatches() === 1);
  return {
    api,
    pods: collection,
    logs: repair.logs,
    label: (name: string) => (api.pods.get(`default/${name}`)?.metadata.labels as Record<string, string> | undefined)?.[UNINITIALIZED_LABEL],
    requests: (method: string, name: string) => api.requests.filter((r) => r.method === method && r.path === `/api/v1/namespaces/default/pods/${name}`),
    watchFrom: (n: number) => new URLSearchParams(collection.watches()[n]?.query).get('resourceVersion'),
    async stop() {
      assert.equal(await repair.stop(), 0, repair.output().stderr);
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
      assert.ok(c.logs().some((l) => l.msg === 'repaired a pod that started without traffic capture' && l.pod === 'default/broken-0'));
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
      await until('the bookmark', () => c.logs().some((l) => l.msg === 'watch event' && l.type === 'BOOKMARK'));
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
      assert.ok(c.logs().some((l) => l.msg === 'watch resourceVersion expired: listing again'));
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
    // The pod is replaced by a new one of the same name (a StatefulSet) just as the DELETE arrives.
    let replacement: h.Pod | undefined;
    const c = await controller([broken('web-0')], 'delete', (collection) => ({ req, url }) => {
      if (req.method === 'DELETE' && url.pathname === '/api/v1/namespaces/default/pods/web-0' && replacement === undefined) {
        collection().remove('default', 'web-0');
        replacement = collection().put(healthy('web-0'));
      }
      return false;
    });
    try {
      await until('the DELETE', () => c.requests('DELETE', 'web-0').length === 1);
      await until('its log line', () => c.logs().some((l) => l.msg === 'pod already gone or replaced: not deleted'));
      assert.equal(c.requests('DELETE', 'web-0')[0]?.status, 409);
      assert.equal(c.api.pods.get('default/web-0')?.metadata.uid, replacement?.metadata.uid);
      assert.ok(!c.logs().some((l) => l.msg === 'repaired a pod that started without traffic capture'));
    } finally {
      await c.stop();
    }
  });
});

describe('istio-cni repair, the built executable', () => {
  it('configured from the environment, deletes the broken pod, and stops cleanly on SIGTERM', async () => {
    const api = await h.startFakeKubeApi({ pods: [broken('broken-0'), healthy('healthy-0')] });
    const pods = h.servePodWatch(api);
    const repair = startRepair({ REPAIR_MODE: 'delete', LOG_LEVEL: 'info', KUBECONFIG: api.writeKubeconfig(undefined, { auth: 'tokenFile', caMode: 'file' }) });
    try {
      await until('broken-0 deleted', () => !api.pods.has('default/broken-0'));
      await until('the watch', () => pods.openWatches() === 1);
      assert.equal(await repair.stop(), 0, repair.output().stderr);
      const lines = repair.logs();
      assert.ok(lines.some((l) => l.msg === 'repaired a pod that started without traffic capture' && l.action === 'delete' && l.pod === 'default/broken-0'), repair.output().stdout);
      assert.equal(lines.at(-1)?.msg, 'repair controller stopped');
      assert.ok(api.pods.has('default/healthy-0'));
      // The kubeconfig's tokenFile: every request carried the token.
      for (const r of api.requests) assert.equal(r.auth, 'token', `${r.method} ${r.path}`);
    } finally {
      await repair.stop();
      await api.close();
    }
  });

  it('refuses to start without a node name: exit status 2 and what is missing', async () => {
    const r = await h.run([h.DEFAULT_ISTIO_CNI_BIN, 'repair', '--mode', 'label']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /^istio-cni repair: --node-name: required.*NODE_NAME/);
  });
});
