/**
 * The node-local pod cache through the built dist/istio-cni: `istio-cni install` (as the DaemonSet
 * runs it, with NODE_NAME) lists and watches this node's pods on the fake API server and answers
 * the plugin on a unix socket; the plugin asks it first and falls back to the direct pod GET. Both
 * run in this machine's network namespace (the fake API server listens on 127.0.0.1); each ADD gets
 * a fresh pod netns.
 */
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import type { ServerResponse } from 'node:http';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as h from '../harness/index.ts';
import { CALICO, makeFakeNode, readConflist, startInstaller, stopInstaller, waitFor } from '../install/node.ts';

after(h.cleanupAll);

const NODE_NAME = 'test-node';
const TIMEOUT_MS = 400;
/** How late timers and process start may be on a shared 2-core machine. */
const SLACK_MS = 1500;
const WEB = 'web-0';
/** Binds a unix socket and exits: the file stays, no one listens. */
const STALE_SOCKET = 'import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])';

let api: h.FakeKubeApi;
let pods: h.PodCollection;
let dir: string;
let kubeconfig: string;
let socketPath: string;
let installer: h.Daemon;
/** Watch requests held open without events while set: the cache then misses what happens meanwhile. */
let held: ServerResponse[] | undefined;

before(async () => {
  api = await h.startFakeKubeApi({ pods: [h.injectedPod(WEB, 'default')] });
  api.addRoute(({ url, res, record }) => {
    if (held === undefined || url.pathname !== '/api/v1/pods' || url.searchParams.get('watch') !== 'true') return false;
    record.status = 200;
    res.writeHead(200, { 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked' });
    res.flushHeaders();
    held.push(res);
    return true;
  });
  pods = h.servePodWatch(api);
  dir = h.makeTempDir('icni-podcache-');
  kubeconfig = api.writeKubeconfig(dir, { auth: 'token', caMode: 'data' });
  const node = makeFakeNode({
    token: api.token,
    ca: api.pki.caPem,
    apiHost: '127.0.0.1',
    apiPort: api.port,
    env: { NODE_NAME, POD_CACHE_SOCKET: join(dir, 'run', 'istio-cni', 'pod-cache.sock') },
  });
  writeFileSync(join(node.netDir, '10-calico.conflist'), CALICO);
  // A socket file left behind by an installer that was killed: the new one must replace it.
  mkdirSync(join(dir, 'run', 'istio-cni'), { recursive: true });
  await h.runOk(['/usr/bin/python3', '-c', STALE_SOCKET, join(dir, 'run', 'istio-cni', 'pod-cache.sock')]);
  installer = await startInstaller(node);
  await waitFor('the cache\'s first list', () => installer.output().stderr.includes('listed this node\'s pods'), 5000);
  // The entry the installer wrote names the socket it serves.
  socketPath = readConflist(join(node.netDir, '10-calico.conflist')).plugins.at(-1)!.pod_cache_socket as string;
  assert.equal(socketPath, join(dir, 'run', 'istio-cni', 'pod-cache.sock'));
});

function config(socket = socketPath): Record<string, unknown> {
  return {
    cniVersion: '1.0.0',
    name: 'podcache-test',
    type: 'istio-cni',
    kubernetes: { kubeconfig },
    log_file: join(dir, 'istio-cni.log'),
    iptables_backend: 'nft',
    pod_cache_socket: socket,
    pod_cache_timeout_ms: TIMEOUT_MS,
  };
}

interface LogLine {
  decision: string;
  podSource?: string;
  cacheMiss?: string;
  apiAttempts: number;
  durationMs: number;
}

/** One ADD into a fresh netns: what the plugin logged, the pod GETs it made, and the nat rules it left. */
async function add(name: string, uid: string | undefined, socket?: string) {
  const before = api.podRequests('default', name).length;
  const netns = await h.createNetns({ tag: 'podcache' });
  const r = await h.runPlugin(h.DEFAULT_ISTIO_CNI_BIN, {
    command: 'ADD',
    stdin: config(socket),
    containerId: `podcache-${name}`,
    netns,
    ifName: 'eth0',
    cniArgs: { K8S_POD_NAMESPACE: 'default', K8S_POD_NAME: name, ...(uid === undefined ? {} : { K8S_POD_UID: uid }) },
  });
  assert.equal(r.code, 0, r.stdout);
  const rules = await h.iptablesS(netns, 'nft');
  await h.deleteNetns(netns);
  const lines = readFileSync(join(dir, 'istio-cni.log'), 'utf8').trim().split('\n');
  return { log: JSON.parse(lines.at(-1)!) as LogLine, gets: api.podRequests('default', name).length - before, rules, wallMs: r.durationMs };
}

const uidOf = (name: string) => api.pods.get(`default/${name}`)!.metadata.uid;
const redirected = (rules: string[]) => rules.includes('-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001');

/** A socket server in this test standing in for a broken cache: `onLine` hears each pod query (the plugin's reports are dropped). */
async function fakeCache(onLine: (socket: import('node:net').Socket) => void): Promise<{ path: string; server: Server }> {
  const path = join(h.makeTempDir('icni-fakecache-'), 'pod-cache.sock');
  const server = createServer((socket) => {
    socket.on('error', () => socket.destroy());
    socket.once('data', (line) => {
      if (line.toString().includes('"kind":"pod"')) onLine(socket);
    });
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  h.registerCleanup(`fake cache ${path}`, () => server.close(), async () => void server.close());
  return { path, server };
}

describe('node-local pod cache', () => {
  it('serves on a root-only socket in a root-only directory, in place of a stale socket file', () => {
    assert.equal(statSync(socketPath).mode & 0o777, 0o600);
    assert.ok(statSync(socketPath).isSocket());
    assert.equal(statSync(dirname(socketPath)).mode & 0o777, 0o700);
  });

  it('a warm cache answers: the injected pod gets its rules with no API request, and the log says so', async () => {
    const r = await add(WEB, uidOf(WEB));
    assert.ok(redirected(r.rules), r.rules.join('\n'));
    assert.equal(r.gets, 0);
    assert.equal(r.log.podSource, 'cache');
    assert.equal(r.log.apiAttempts, 0);
    assert.equal(r.log.decision, 'redirect');
  });

  it('a pod that appears while the plugin waits is answered from the cache (the watch lagging the kubelet)', async () => {
    const pending = add('late-0', 'uid-late-0');
    await h.sleep(100);
    pods.put(h.injectedPod('late-0', 'default', { metadata: { uid: 'uid-late-0' } }));
    const r = await pending;
    assert.equal(r.gets, 0);
    assert.equal(r.log.podSource, 'cache');
    assert.ok(redirected(r.rules));
  });

  it('a pod the cache never learns of: waits at most pod_cache_timeout_ms, then the direct GET decides', async () => {
    api.setPod(h.injectedPod('unwatched-0', 'default'));
    const r = await add('unwatched-0', uidOf('unwatched-0'));
    assert.ok(redirected(r.rules));
    assert.equal(r.gets, 1);
    assert.equal(r.log.podSource, 'api');
    assert.match(r.log.cacheMiss ?? '', /pod not in the cache/);
    assert.ok(r.log.durationMs >= TIMEOUT_MS - 100 && r.log.durationMs < TIMEOUT_MS + SLACK_MS, `took ${r.log.durationMs} ms`);
  });

  it('without K8S_POD_UID the cache is not asked (it could not tell the pod from an older one)', async () => {
    const r = await add(WEB, undefined);
    assert.equal(r.gets, 1);
    assert.match(r.log.cacheMiss ?? '', /no K8S_POD_UID/);
  });

  it('a stale socket file (no one listening): falls back to the GET at once', async () => {
    const path = join(h.makeTempDir('icni-stale-'), 'pod-cache.sock');
    await h.runOk(['/usr/bin/python3', '-c', STALE_SOCKET, path]);
    assert.ok(statSync(path).isSocket());
    const r = await add(WEB, uidOf(WEB), path);
    assert.ok(redirected(r.rules));
    assert.equal(r.gets, 1);
    assert.match(r.log.cacheMiss ?? '', /ECONNREFUSED/);
    assert.ok(r.log.durationMs < TIMEOUT_MS, `took ${r.log.durationMs} ms`);
  });

  it('a socket that answers garbage, or another shape: falls back to the GET', async () => {
    for (const [answer, why] of [['garbage\n', /not JSON/], ['{"v":1,"kind":"pod","found":true,"pod":{"metadata":{}}}\n', /not understood/], ['{"v":2,"kind":"pod","found":false,"reason":"x"}\n', /not understood/]] as const) {
      const fake = await fakeCache((socket) => socket.end(answer));
      const r = await add(WEB, uidOf(WEB), fake.path);
      assert.ok(redirected(r.rules));
      assert.equal(r.gets, 1);
      assert.match(r.log.cacheMiss ?? '', why);
    }
  });

  it('a socket that answers too slowly: the plugin gives up after pod_cache_timeout_ms and uses the GET', async () => {
    const fake = await fakeCache(() => {});
    const r = await add(WEB, uidOf(WEB), fake.path);
    assert.ok(redirected(r.rules));
    assert.equal(r.gets, 1);
    assert.match(r.log.cacheMiss ?? '', new RegExp(`no answer within ${TIMEOUT_MS} ms`));
    assert.ok(r.log.durationMs >= TIMEOUT_MS && r.log.durationMs < TIMEOUT_MS + SLACK_MS, `took ${r.log.durationMs} ms`);
  });

  it('a pod deleted and made again with the same name never gets the old pod\'s answer', async () => {
    api.setPod(h.injectedPod('db-0', 'default'));
    pods.put(api.pods.get('default/db-0')!);
    const oldUid = uidOf('db-0');
    assert.equal((await add('db-0', oldUid)).log.podSource, 'cache');

    // The cache stops hearing of changes: it still holds the old db-0 when the new one starts.
    held = [];
    pods.dropWatches();
    await waitFor('the cache\'s watch to be held', () => held!.length === 1, 5000);
    pods.remove('default', 'db-0');
    pods.put(h.injectedPod('db-0', 'default', { metadata: { annotations: { 'traffic.sidecar.istio.io/includeInboundPorts': '9080' } } }));
    const newUid = uidOf('db-0');
    assert.notEqual(newUid, oldUid);
    const during = await add('db-0', newUid);
    assert.equal(during.log.podSource, 'api');
    assert.match(during.log.cacheMiss ?? '', new RegExp(`holds another pod of that name \\(uid ${oldUid}\\)`));
    assert.ok(during.rules.includes('-A ISTIO_INBOUND -p tcp -m tcp --dport 9080 -j ISTIO_IN_REDIRECT'), 'the new pod\'s rules');

    // The watch resumes and brings the change: the new pod is answered from the cache.
    const watchesBefore = pods.watches().length;
    for (const res of held) res.end();
    held = undefined;
    await waitFor('the watch to resume', () => pods.watches().length > watchesBefore && pods.openWatches() === 1, 5000);
    const afterResume = await add('db-0', newUid);
    assert.equal(afterResume.gets, 0);
    assert.equal(afterResume.log.podSource, 'cache');
    assert.ok(afterResume.rules.includes('-A ISTIO_INBOUND -p tcp -m tcp --dport 9080 -j ISTIO_IN_REDIRECT'));
    // The old sandbox's UID is not answered either.
    assert.equal((await add('db-0', oldUid)).log.podSource, 'api');
  });

  it('the watch dropped mid-stream is resumed from its resourceVersion (no new list), and one too old lists again', async () => {
    const lists = pods.lists().length;
    const watches = pods.watches().length;
    const version = pods.resourceVersion();
    pods.dropWatches();
    pods.put(h.injectedPod('after-drop-0', 'default'));
    await waitFor('the watch to resume', () => pods.watches().length > watches && pods.openWatches() === 1, 10_000);
    assert.equal(pods.lists().length, lists, 'resumed, not listed again');
    const resumedFrom = new URLSearchParams(pods.watches().at(-1)!.query).get('resourceVersion');
    assert.ok(Number(resumedFrom) >= Number(version), `resumed from ${resumedFrom}`);
    const r = await add('after-drop-0', uidOf('after-drop-0'));
    assert.equal(r.gets, 0);
    assert.equal(r.log.podSource, 'cache');

    // A change the cache misses, then the history compacted past it: the resumed watch gets 410 Expired and lists again.
    held = [];
    pods.dropWatches();
    await waitFor('the cache\'s watch to be held', () => held!.length === 1, 5000);
    pods.put(h.injectedPod('after-compact-0', 'default'));
    pods.compact();
    for (const res of held) res.end();
    held = undefined;
    await waitFor('a new list', () => pods.lists().length === lists + 1 && pods.openWatches() === 1, 10_000);
    const listed = await add('after-compact-0', uidOf('after-compact-0'));
    assert.equal(listed.gets, 0);
    assert.equal(listed.log.podSource, 'cache');
  });

  it('SIGTERM stops the cache and removes its socket', async () => {
    assert.equal(await stopInstaller(installer), 0);
    assert.throws(() => statSync(socketPath), /ENOENT/);
  });
});
