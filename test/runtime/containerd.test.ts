/**
 * The plugin where kubelet really runs it: Debian's containerd 1.6 (CRI plugin, runc, native
 * snapshotter) started by this test, driven over its CRI socket, running the conflist
 * ptp + host-local → istio-cni from the machine's root netns. The pod lookups go to the fake API
 * server on the root netns's 127.0.0.1.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, it } from 'vitest';
import * as h from '../harness/index.ts';
import { startContainerd, type Containerd, type PodSpec, type Sandbox } from '../harness/containerd.ts';
import { freeHostSubnet, hostLocalLeases, hostRoutesIn, restoreIpForwardAtCleanup } from '../harness/host-net.ts';
import type { PluginLogLine } from '../harness/cluster.ts';

afterAll(h.cleanupAll);

/** ISTIO_CNI_TEST_BACKEND=nftables runs these with native nftables (default iptables-nft). */
const BACKEND = h.captureBackend();
const SEED = h.seedRules(BACKEND);
const BURST = 20;


describe(`under containerd 1.6 (CRI), capture on ${BACKEND}`, () => {
  let api: h.FakeKubeApi;
  let conf: h.WrittenConflist;
  let subnet: string;
  let gateway: string;
  let ctd: Containerd;

  const pluginLog = (sandboxId: string): PluginLogLine[] =>
    readFileSync(conf.logFile!, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as PluginLogLine)
      .filter((l) => l.containerId === sandboxId);

  /** The pod as kubelet describes it to the runtime: metadata, and the pod's annotations. */
  const podSpec = (pod: h.Pod): PodSpec => ({
    name: pod.metadata.name,
    namespace: pod.metadata.namespace,
    uid: pod.metadata.uid,
    annotations: (pod.metadata.annotations ?? {}) as Record<string, string>,
  });

  const run = (name: string) => ctd.runPod(podSpec(api.pods.get(`default/${name}`)!));

  beforeAll(async () => {
    const pods = [h.injectedPod('web-0', 'default'), h.injectedPod('web-1', 'default'), h.plainPod('plain-0', 'default')];
    for (let i = 0; i < BURST; i += 1) pods.push(h.injectedPod(`burst-${i}`, 'default'));
    api = await h.startFakeKubeApi({ pods });
    subnet = await freeHostSubnet();
    gateway = subnet.replace(/0\/24$/, '1');
    restoreIpForwardAtCleanup();
    conf = h.writeConflist({
      netName: `icni-ctd-${process.pid}`,
      fileName: '10-icni-containerd.conflist',
      subnet,
      kubeconfig: api.writeKubeconfig(undefined, { auth: 'token', caMode: 'data' }),
      iptablesBackend: BACKEND,
    });
    ctd = await startContainerd({ cniBinDir: h.makeCniPath(), cniConfDir: conf.confDir, podSubnet: subnet });
  });

  it('gives an injected pod\'s sandbox the seed rules, and redirects a real connection from inside it', async () => {
    const sb = await run('web-0');
    assert.equal(sb.status.status.state, 'SANDBOX_READY');
    assert.ok(sb.ip.startsWith(subnet.replace(/0\/24$/, '')), `pod IP ${sb.ip} in ${subnet}`);
    assert.deepEqual(await h.natRules(sb.netns, BACKEND), SEED);

    const [add] = pluginLog(sb.id);
    assert.deepEqual({ verb: add?.verb, netns: add?.netns, pod: add?.pod, decision: add?.decision }, {
      verb: 'ADD', netns: sb.netns.path.replace(/^\/run\//, '/var/run/'), pod: 'default/web-0', decision: 'redirect',
    });

    // An app in the pod calling out (here: ptp's gateway on the node) lands on the proxy's outbound port.
    const outbound = await h.probe({
      listenNs: sb.netns, listenPort: 15001, connectNs: sb.netns, connectHost: gateway, connectPort: 8080,
      // The gateway lives in the machine's root netns; the redirect keeps the connection inside the pod.
      allowUnassignedTarget: true,
    });
    assert.equal(outbound.listener?.original_dst, `${gateway}:8080`);
    // A connection to the pod's own IP is inbound traffic for the proxy.
    const inbound = await h.probe({ listenNs: sb.netns, listenPort: 15006, connectNs: sb.netns, connectHost: sb.ip, connectPort: 8080 });
    assert.equal(inbound.listener?.original_dst, `${sb.ip}:8080`);
  });

  it('leaves a pod without a sidecar alone', async () => {
    const sb = await run('plain-0');
    assert.equal(sb.status.status.state, 'SANDBOX_READY');
    assert.deepEqual(await h.ownedRules(sb.netns, BACKEND), []);
    assert.deepEqual(pluginLog(sb.id).map((l) => [l.verb, l.decision]), [['ADD', 'pass']]);
  });

  it('Stop and Remove succeed and leave no netns, route, lease or chain behind', async () => {
    const sb = await run('web-1');
    assert.deepEqual(await h.natRules(sb.netns, BACKEND), SEED);
    await ctd.cri.stopPodSandbox(sb.id);
    assert.equal(existsSync(sb.netns.path), false, 'StopPodSandbox removes the pod netns');
    await ctd.cri.removePodSandbox(sb.id);

    assert.deepEqual((await hostRoutesIn(subnet)).filter((r) => r.startsWith(`${sb.ip} `)), []);
    assert.equal(hostLocalLeases(conf.ipamDataDir, conf.netName).includes(sb.ip), false);
    assert.equal((await ctd.cri.listPodSandbox()).some((s) => s.id === sb.id), false);
    // Stop: a DEL with the netns; Remove: containerd's second DEL, without one. Both succeed.
    assert.deepEqual(pluginLog(sb.id).map((l) => [l.verb, l.msg, l.netns === '' ? 'no netns' : 'netns']), [
      ['ADD', 'ADD ok', 'netns'],
      ['DEL', 'DEL ok', 'netns'],
      ['DEL', 'DEL ok', 'no netns'],
    ]);
  });

  it(`programs all ${BURST} sandboxes created at once`, async () => {
    const names = Array.from({ length: BURST }, (_, i) => `burst-${i}`);
    const sandboxes: Sandbox[] = await Promise.all(names.map(run));
    for (const sb of sandboxes) {
      assert.deepEqual(await h.natRules(sb.netns, BACKEND), SEED, `rules of ${sb.pod.name}`);
      assert.equal(pluginLog(sb.id)[0]?.decision, 'redirect', `log of ${sb.pod.name}`);
    }
    assert.equal(new Set(sandboxes.map((s) => s.ip)).size, BURST);
    await Promise.all(sandboxes.map((s) => ctd.removePod(s.id)));
  });

  it('10-x.conf beside 10-x.conflist: containerd uses the .conf; the installer chains it in place of the .conflist, and the next pod is captured', async () => {
    const original = readFileSync(conf.path, 'utf8');
    const [primary, entry] = conf.conflist.plugins as [Record<string, unknown>, Record<string, unknown>];
    // The same network as one plugin, without istio-cni, under the .conflist's stem.
    const single = conf.path.replace(/\.conflist$/, '.conf');
    writeFileSync(single, JSON.stringify({ cniVersion: conf.conflist.cniVersion, name: conf.netName, ...primary }));
    try {
      const shadowed = await run('web-1');
      assert.deepEqual(await h.ownedRules(shadowed.netns, BACKEND), [], 'the .conf was the network in force: no istio-cni in its chain');
      assert.deepEqual(pluginLog(shadowed.id), []);
      await ctd.removePod(shadowed.id);

      const bin = h.makeTempDir('icni-ctd-bin-');
      const r = await h.run([h.DEFAULT_ISTIO_CNI_BIN, 'install', '--once'], {
        env: h.minimalEnv({ MOUNTED_CNI_NET_DIR: conf.confDir, MOUNTED_CNI_BIN_DIRS: bin, CNI_NETWORK_CONFIG: JSON.stringify(entry), POD_CACHE_SOCKET: '' }),
      });
      assert.equal(r.code, 0, r.stderr);
      assert.equal(existsSync(single), false, 'the .conf became the .conflist');
      const chained = JSON.parse(readFileSync(conf.path, 'utf8')) as { plugins: Array<{ type: string }> };
      assert.deepEqual(chained.plugins.map((p) => p.type), ['ptp', 'istio-cni']);

      const captured = await run('web-1');
      assert.deepEqual(await h.natRules(captured.netns, BACKEND), SEED, 'containerd runs the chained list');
      await ctd.removePod(captured.id);
    } finally {
      rmSync(single, { force: true });
      writeFileSync(conf.path, original);
    }
  });

  it('leaves nothing on the machine once every sandbox is removed', async () => {
    for (const s of await ctd.cri.listPodSandbox()) await ctd.removePod(s.id);
    assert.deepEqual(await hostRoutesIn(subnet), []);
    assert.deepEqual(hostLocalLeases(conf.ipamDataDir, conf.netName), []);
    const cniNetns = (await h.listNetns('cni-')).filter((n) => h.ownedNetns().some((o) => o.name === n));
    assert.deepEqual(cniNetns, []);
  });
});
