/**
 * The start-up race and node faults on the real cluster (issue 13), run by cluster.test.ts on its
 * cluster, after its own tests and before the uninstall and `down`:
 *   1. the race (pods that start before the DaemonSet), repaired in label mode, then in delete mode;
 *   2. the node readiness taint keeping pods Pending until the installer is ready;
 *   3. a rolling update of the DaemonSet to another image while 20 pods are created;
 *   5. the installer killed (SIGKILL) and restarted by the kubelet;
 *   6. containerd and the kubelet restarted (a reboot stand-in);
 *   4. kube-apiserver stopped for 30 s while 10 pods are created (last: it turns the pod cache off).
 *
 * "No pod ever ran without rules" is observed for every pod, not sampled, and not by the plugin or
 * istio-validation: each pod's app container reports, at every start, from inside its own network
 * namespace, whether its traffic is captured (cluster/standin, reportCapture) into a host dir, and
 * a watch of the namespace (from before the first pod) records every pod and whether its app ever
 * ran (test/harness/cluster-watch.ts). A pod whose app ran without a report counts as uncaptured.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, statSync, watch as watchDir } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, it, type TestContext } from 'vitest';
import * as h from '../harness/index.ts';
import * as c from '../harness/cluster.ts';
import type { SandboxRef } from '../harness/cluster-host.ts';
import { importUpgradeImage, UPGRADE_IMAGE, upgradeVersion } from '../harness/cluster-images.ts';
import { captureVerdict, PodWatch, reportingDeployment, type PodRecord } from '../harness/cluster-watch.ts';
import { kubeInject, makeMeshNamespace } from '../harness/istio-inject.ts';

const BACKEND = h.captureBackend();
const SEED = h.seedRules(BACKEND);
const NS = 'icni-race';
const TAINT_KEY = 'cni.istio.io/not-ready';
const UNINITIALIZED = 'cni.istio.io/uninitialized';
const NOT_CAPTURED = 126;
const NODE_BINARY = join(c.paths.cniBin, 'istio-cni');
const PRIMARY = join(c.paths.cniNet, c.PRIMARY_CONFLIST);

interface ApiPod {
  metadata: { name: string; uid: string; labels?: Record<string, string>; deletionTimestamp?: string };
  spec: { nodeName?: string };
  status: { phase?: string; conditions?: Array<{ type: string; status: string }> };
}

const sha256 = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');
const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
const isReady = (pod: ApiPod) => pod.status.conditions?.some((x) => x.type === 'Ready' && x.status === 'True') === true;

async function deploy(app: string, replicas: number): Promise<void> {
  await c.kubectl(['-n', NS, 'apply', '-f', '-'], { input: await kubeInject(reportingDeployment(app, replicas)) });
}

/** The app's pods that are not on their way out. */
async function podsOf(app: string): Promise<ApiPod[]> {
  const all = (await c.kubectlJson<{ items: ApiPod[] }>(['-n', NS, 'get', 'pods', '-l', `app=${app}`])).items;
  return all.filter((p) => p.metadata.deletionTimestamp === undefined);
}

/** The app's `replicas` pods Ready, as the API says and as the watch has seen. */
async function waitReady(watch: PodWatch, app: string, replicas: number, timeoutMs: number): Promise<ApiPod[]> {
  let pods: ApiPod[] = [];
  await c.waitUntil(`${replicas} ${app} pods Ready`, async () => {
    pods = await podsOf(app);
    const ready = pods.filter(isReady).length;
    return (pods.length === replicas && ready === replicas) || `${ready} of ${pods.length} Ready`;
  }, timeoutMs, 500);
  await c.waitUntil(`the watch saw the ${app} pods Ready`, async () => pods.every((p) => watch.pods.get(p.metadata.uid)?.readyAt !== undefined), 10_000, 100);
  return pods;
}

async function nodeTaints(): Promise<Array<{ key: string; effect: string }>> {
  return (await c.kubectlJson<{ spec: { taints?: Array<{ key: string; effect: string }> } }>(['get', 'node', c.NODE_NAME])).spec.taints ?? [];
}

/** The repair controller's patches and deletes (the audit log: our ServiceAccount's requests). */
function repairActions(verb: 'patch' | 'delete'): string[] {
  return c.auditEvents()
    .filter((e) => e.verb === verb && e.objectRef?.resource === 'pods' && e.objectRef.subresource === undefined)
    .map((e) => `${e.objectRef!.namespace}/${e.objectRef!.name}`)
    .sort();
}

/** Each pod's istio-validation runs, as the watch saw them: 126 is "not captured". */
const validationExits = (pod: PodRecord) => [...pod.validationRuns.values()];

/** What the plugin logged for the app's pods. */
const pluginLines = (app: string) => c.pluginLog().filter((l) => l.pod?.startsWith(`${NS}/${app}-`));

/** The pod of the DaemonSet and its installer container's restarts and container ID. */
async function installerContainer(): Promise<{ pod: string; restarts: number; ready: boolean; id: string; image: string; startedAt?: string }> {
  const [pod, ...others] = (await c.daemonSetPods()).filter((p) => p.metadata.deletionTimestamp === undefined);
  assert.equal(others.length, 0);
  const s = pod!.status.containerStatuses?.find((x) => x.name === 'install-cni');
  return {
    pod: pod!.metadata.name,
    restarts: s?.restartCount ?? 0,
    ready: s?.ready ?? false,
    id: (s?.containerID ?? '').replace(/^containerd:\/\//, ''),
    image: s?.image ?? '',
    ...(s?.state?.running && { startedAt: s.state.running.startedAt }),
  };
}

/** The installer's process on the node: `istio-cni install` in the container's cgroup. */
function installerPid(containerId: string): number {
  for (const entry of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      const argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (argv[0] !== '/usr/local/bin/istio-cni' || argv[1] !== 'install') continue;
      if (readFileSync(`/proc/${entry}/cgroup`, 'utf8').includes(containerId)) return Number(entry);
    } catch {
      // A process that went away meanwhile.
    }
  }
  throw new Error(`no istio-cni install process in container ${containerId}`);
}

interface NodeFiles {
  /** Conflist reads that did not parse (a half-written file). */
  unreadable: string[];
  /** How many istio-cni entries each read of a conflist held. */
  entryCounts: Set<number>;
  /** The executable on the node by inode: its sha256 (hashed when first seen). */
  binaries: Map<number, string>;
  /** Looks that found no executable on the node. */
  binaryMissing: number;
  looks: number;
}

/**
 * What the runtime would have read from the node's CNI dirs while a fault runs: every conflist at
 * each change of net.d (inotify) and every 25 ms, and the executable (hashed once per new file).
 */
function observeNodeFiles(): { stop(): NodeFiles } {
  const seen: NodeFiles = { unreadable: [], entryCounts: new Set(), binaries: new Map(), binaryMissing: 0, looks: 0 };
  const look = () => {
    seen.looks += 1;
    for (const name of readdirSync(c.paths.cniNet).filter((f) => f.endsWith('.conflist') && !f.startsWith('.'))) {
      let text: string;
      try {
        text = readFileSync(join(c.paths.cniNet, name), 'utf8');
      } catch {
        continue; // renamed away between the listing and the read
      }
      try {
        const list = JSON.parse(text) as { plugins: Array<{ type: string }> };
        seen.entryCounts.add(list.plugins.filter((p) => p.type === 'istio-cni').length);
      } catch (err) {
        seen.unreadable.push(`${name}: ${(err as Error).message}`);
      }
    }
    const stat = statSync(NODE_BINARY, { throwIfNoEntry: false });
    if (stat === undefined) seen.binaryMissing += 1;
    else if (!seen.binaries.has(stat.ino)) seen.binaries.set(stat.ino, sha256(NODE_BINARY));
  };
  const watcher = watchDir(c.paths.cniNet, look);
  const timer = setInterval(look, 25);
  look();
  return {
    stop() {
      watcher.close();
      clearInterval(timer);
      look();
      return seen;
    },
  };
}

/** The chart's values for repair in label mode (cluster/values.yaml sets delete mode: Istio's deletePods wins over labelPods). */
const LABEL_MODE = ['repair.deletePods=false'];

export function startupRaceScenarios(sandboxes: SandboxRef[]): void {
  describe('the start-up race and node faults', { sequential: true }, () => {
    let watch: PodWatch;
    const summary: string[] = [];

    beforeAll(async () => {
      await makeMeshNamespace(NS);
      watch = new PodWatch(NS);
      await watch.listed;
    });

    afterAll(async () => {
      await watch.stop();
      if (summary.length > 0) console.log(`# start-up race and node faults:\n${summary.map((l) => `#   ${l}`).join('\n')}`);
    });

    /** Every pod of the app: rules as the seed's in its netns (through the CRI), nothing on legacy. */
    const assertCaptured = async (pods: ApiPod[]) => {
      for (const pod of pods) {
        const sandbox = await c.podSandbox(pod.metadata.uid);
        sandboxes.push(sandbox);
        assert.deepEqual(await h.natRules(sandbox.netns, BACKEND), SEED, pod.metadata.name);
        assert.ok(await h.iptablesIsEmpty(sandbox.netns, 'legacy'), `${pod.metadata.name}: nothing on legacy`);
      }
    };

    /** No pod of the app ever ran its app without capture; the closing line of the scenario. */
    const verdict = async (t: TestContext, scenario: string, app: string, recoveredMs: number, more = '') => {
      // A report is written as the app starts, which may be a moment after its pod is Ready.
      await c.waitUntil(`a capture report from every ${app} pod whose app ran`, async () => captureVerdict(watch, app).unreported.length === 0, 15_000, 250).catch(() => undefined);
      const v = captureVerdict(watch, app);
      assert.deepEqual(v.ranUncaptured, [], 'pods whose app ran without capture');
      assert.deepEqual(v.unreported, [], 'pods whose app ran and never reported');
      const line = `${scenario}: ${v.created} pods created, ${v.ranUncaptured.length + v.unreported.length} ran without rules, recovered in ${seconds(recoveredMs)}${more}`;
      t.annotate(line);
      summary.push(line);
    };

    /** The DaemonSet gone and its installer's taint off: a node where pods start without the plugin. */
    const nodeWithoutPlugin = async () => {
      await c.deleteDaemonSet();
      if ((await nodeTaints()).some((x) => x.key === TAINT_KEY)) await c.kubectl(['taint', 'node', c.NODE_NAME, `${TAINT_KEY}:NoSchedule-`]);
      const primary = JSON.parse(readFileSync(PRIMARY, 'utf8')) as { plugins: Array<{ type: string }> };
      assert.deepEqual(primary.plugins.map((p) => p.type), ['bridge'], 'no istio-cni in the chain');
    };

    /** The app's pods start without rules: each one's istio-validation exits 126 at least once, and no app runs. */
    const raceTo126 = async (app: string, replicas: number): Promise<PodRecord[]> => {
      await deploy(app, replicas);
      await c.waitUntil(`every ${app} pod's istio-validation exited ${NOT_CAPTURED}`, async () => {
        const pods = watch.of(app);
        return (pods.length === replicas && pods.every((p) => validationExits(p).includes(NOT_CAPTURED))) || `${pods.filter((p) => validationExits(p).includes(NOT_CAPTURED)).length} of ${pods.length}`;
      }, 120_000, 500);
      const raced = watch.of(app);
      assert.ok(raced.every((p) => !p.appStarted), 'istio-validation kept every app from starting');
      assert.deepEqual(pluginLines(app), [], 'the plugin was not in the chain');
      return raced;
    };

    it('1a. the race: pods started before the DaemonSet fail istio-validation (126); repair in label mode labels each once; recreated, they get the seed\'s rules', async (t) => {
      await nodeWithoutPlugin();
      const raced = await raceTo126('race-label', 4);

      const started = Date.now();
      await c.installDaemonSet(LABEL_MODE);
      await c.waitUntil('every raced pod labelled', async () => {
        const labelled = (await podsOf('race-label')).filter((p) => p.metadata.labels?.[UNINITIALIZED] === 'true').map((p) => p.metadata.uid);
        return raced.every((r) => labelled.includes(r.uid)) || `${labelled.length} of ${raced.length}`;
      }, 60_000, 250);
      // What an operator (or a controller acting on the label) does: delete them; the Deployment makes new ones.
      await c.kubectl(['-n', NS, 'delete', 'pods', '-l', `app=race-label,${UNINITIALIZED}=true`, '--wait=false']);
      const fresh = await waitReady(watch, 'race-label', 4, 180_000);
      const recovered = Date.now() - started;

      assert.deepEqual(repairActions('patch'), raced.map((p) => `${NS}/${p.name}`).sort(), 'one label patch for each raced pod, none for any other pod');
      assert.deepEqual(repairActions('delete'), []);
      for (const pod of fresh) {
        assert.ok(!raced.some((r) => r.uid === pod.metadata.uid), 'a new pod');
        assert.deepEqual(validationExits(watch.pods.get(pod.metadata.uid)!), [0], `${pod.metadata.name}: istio-validation passed at once`);
      }
      await assertCaptured(fresh);
      await verdict(t, '1a race, label mode', 'race-label', recovered, ` (from the DaemonSet's apply; ${raced.length} labelled, then deleted by the test as an operator would)`);
      await c.kubectl(['-n', NS, 'delete', 'deployment', 'race-label', '--wait=false']);
    });

    it('1b. the race again, repair in delete mode: each raced pod deleted once, its replacement captured; healthy pods never touched', async (t) => {
      await nodeWithoutPlugin();
      const raced = await raceTo126('race-delete', 4);

      const started = Date.now();
      await c.installDaemonSet();
      await c.waitUntil('the raced pods gone', async () => raced.every((r) => watch.pods.get(r.uid)!.goneAt !== undefined) || 'not yet', 60_000, 250);
      const fresh = await waitReady(watch, 'race-delete', 4, 180_000);
      const recovered = Date.now() - started;

      assert.deepEqual(repairActions('delete'), raced.map((p) => `${NS}/${p.name}`).sort(), 'one delete for each raced pod, none for any other pod');
      assert.equal(repairActions('patch').length, 4, 'the label patches of 1a, no more');
      for (const pod of fresh) assert.deepEqual(validationExits(watch.pods.get(pod.metadata.uid)!), [0], pod.metadata.name);
      await assertCaptured(fresh);
      await verdict(t, '1b race, delete mode', 'race-delete', recovered, ` (from the DaemonSet's apply; ${raced.length} deleted by repair)`);
      await c.kubectl(['-n', NS, 'delete', 'deployment', 'race-delete', '--wait=false']);
    });

    it('2. the taint: the stopped installer put it back; pods created meanwhile stay Pending, then start with rules once the installer is ready', async (t) => {
      await c.deleteDaemonSet();
      assert.ok((await nodeTaints()).some((x) => x.key === TAINT_KEY && x.effect === 'NoSchedule'), 'the installer tainted the node as it stopped');
      await deploy('taint', 5);
      await c.waitUntil('every taint pod unschedulable', async () => {
        const pods = watch.of('taint');
        return (pods.length === 5 && pods.every((p) => p.unschedulable)) || `${pods.filter((p) => p.unschedulable).length} of ${pods.length}`;
      }, 60_000, 250);
      assert.ok(watch.of('taint').every((p) => p.boundAt === undefined), 'none bound to the node');

      const started = Date.now();
      await c.installDaemonSet();
      const pods = await waitReady(watch, 'taint', 5, 180_000);
      const recovered = Date.now() - started;
      assert.ok(!(await nodeTaints()).some((x) => x.key === TAINT_KEY), 'the installer took the taint off');
      for (const pod of pods) assert.deepEqual(validationExits(watch.pods.get(pod.metadata.uid)!), [0], `${pod.metadata.name}: captured from its first start`);
      await assertCaptured(pods);
      await verdict(t, '2 taint', 'taint', recovered, ' (from the DaemonSet\'s apply)');
    });

    it('3. a rolling update to a new image while 20 pods are created: every pod ends Running with its rules, one entry, the new executable, no half-written file', async (t) => {
      const newExecutable = await importUpgradeImage(c.paths.containerdSocket, c.SNAPSHOTTER);
      const [oldHash, newHash] = [sha256(NODE_BINARY), sha256(newExecutable)];
      assert.notEqual(oldHash, newHash, 'the upgrade is another executable');
      const files = observeNodeFiles();

      const started = Date.now();
      await c.upgradeRelease([`image=${UPGRADE_IMAGE}`]);
      await deploy('roll', 20);
      await c.kubectl(['-n', 'kube-system', 'rollout', 'status', 'daemonset/istio-cni-node', '--timeout=180s'], { timeoutMs: 200_000 });
      const pods = await waitReady(watch, 'roll', 20, 300_000);
      const recovered = Date.now() - started;
      const seen = files.stop();

      assert.equal(sha256(NODE_BINARY), newHash, 'the executable on the node is the new image\'s');
      assert.deepEqual([...new Set(seen.binaries.values())].filter((x) => x !== oldHash && x !== newHash), [], 'never another (a partial) executable');
      assert.deepEqual(seen.unreadable, [], 'never a half-written conflist');
      assert.ok(Math.max(...seen.entryCounts) <= 1, `our entry at most once in every read: ${[...seen.entryCounts]}`);
      const lists = readdirSync(c.paths.cniNet).filter((f) => f.endsWith('.conflist'));
      assert.deepEqual(lists, [c.PRIMARY_CONFLIST]);
      const primary = JSON.parse(readFileSync(PRIMARY, 'utf8')) as { plugins: Array<{ type: string }> };
      assert.deepEqual(primary.plugins.map((p) => p.type), ['bridge', 'istio-cni']);
      const installer = await installerContainer();
      assert.equal(installer.image, UPGRADE_IMAGE);
      const log = (await c.kubectl(['-n', 'kube-system', 'logs', installer.pod, '-c', 'install-cni'])).stdout;
      assert.match(log, new RegExp(`"version":"${upgradeVersion().replace(/[.+]/g, '\\$&')}"`), 'the new installer runs');

      await assertCaptured(pods);
      const waited = watch.of('roll').filter((p) => p.unschedulable).length;
      const repaired = repairActions('delete').filter((x) => x.startsWith(`${NS}/roll-`)).length;
      await verdict(t, '3 rolling update', 'roll', recovered, ` (from the image change; ${waited} pods waited on the taint, ${repaired} deleted by repair; ${seen.looks} looks at the node's files)`);
      await c.kubectl(['-n', NS, 'delete', 'deployment', 'roll', '--wait=false']);
    });

    it('5. the installer killed (SIGKILL) and restarted: the executable and our entry stayed, once; new pods kept getting their rules', async (t) => {
      const before = await installerContainer();
      const pid = installerPid(before.id);
      const files = observeNodeFiles();

      const started = Date.now();
      process.kill(pid, 'SIGKILL');
      await deploy('kill', 5);
      let restarted = before;
      await c.waitUntil('the installer restarted and Ready', async () => {
        restarted = await installerContainer();
        return (restarted.restarts === before.restarts + 1 && restarted.ready) || `restarts ${restarted.restarts}, ready ${restarted.ready}`;
      }, 120_000, 250);
      const installerBack = Date.now() - started;
      const pods = await waitReady(watch, 'kill', 5, 180_000);
      const recovered = Date.now() - started;
      const seen = files.stop();

      assert.equal(seen.binaryMissing, 0, 'the executable never left the node');
      assert.deepEqual([...seen.entryCounts], [1], 'our entry in the conflist at every look, once');
      assert.deepEqual(seen.unreadable, []);
      assert.ok(!(await nodeTaints()).some((x) => x.key === TAINT_KEY), 'a killed installer did not stop for good: no taint');
      const restartedLog = (await c.kubectl(['-n', 'kube-system', 'logs', before.pod, '-c', 'install-cni'])).stdout;
      assert.doesNotMatch(restartedLog, /"msg":"inserted our entry"/, 'the restarted installer found its entry in place: nothing rewritten');
      const adds = pluginLines('kill').filter((l) => l.verb === 'ADD');
      assert.ok(adds.length >= 5 && adds.every((l) => l.decision === 'redirect'), JSON.stringify(adds.map((l) => [l.decision, l.code, l.podSource])));
      // The kubelet restarts a crashed container after a back-off: pods set up meanwhile had no
      // installer (and no pod cache: the plugin asked the API server).
      const whileDown = adds.filter((l) => Date.parse(l.time as string) < Date.parse(restarted.startedAt!)).length;
      await assertCaptured(pods);
      await verdict(t, '5 installer SIGKILL', 'kill', recovered, ` (the installer Ready again ${seconds(installerBack)} after the kill; ${whileDown} of the ${adds.length} ADDs ran while it was down)`);
    });

    it('6. a reboot stand-in: containerd and the kubelet restarted; existing pods keep their rules (CHECK through libcni says so), new pods get theirs', async (t) => {
      const existing = [...await podsOf('taint'), ...await podsOf('kill')];
      const before = new Map<string, string>();
      for (const pod of existing) before.set(pod.metadata.uid, (await c.podSandbox(pod.metadata.uid)).id);

      const started = Date.now();
      await c.stopComponent('kubelet');
      await c.stopComponent('containerd');
      await c.startComponent('containerd');
      await c.startComponent('kubelet');
      await deploy('reboot', 3);
      const pods = await waitReady(watch, 'reboot', 3, 180_000);
      const recovered = Date.now() - started;

      for (const pod of existing) {
        const sandbox = await c.podSandbox(pod.metadata.uid);
        assert.equal(sandbox.id, before.get(pod.metadata.uid), `${pod.metadata.name}: the same sandbox`);
        assert.deepEqual(await h.natRules(sandbox.netns, BACKEND), SEED, pod.metadata.name);
        // The whole chain's CHECK as containerd would call it: libcni with containerd's cached result.
        const check = await h.runCni('check', {
          netName: c.PRIMARY_NETWORK, netnsPath: sandbox.netns, hostNetns: `/proc/${process.pid}/ns/net`, confDir: c.paths.cniNet, cniPath: c.paths.cniBin,
          cacheDir: '/var/lib/cni', containerId: sandbox.id, ifName: 'eth0',
          cniArgs: { IgnoreUnknown: '1', K8S_POD_NAMESPACE: NS, K8S_POD_NAME: pod.metadata.name, K8S_POD_INFRA_CONTAINER_ID: sandbox.id, K8S_POD_UID: pod.metadata.uid },
        });
        assert.equal(check.code, 0, `${pod.metadata.name}: ${check.stderr}`);
        const logged = c.pluginLog().filter((l) => l.verb === 'CHECK' && l.containerId === sandbox.id).at(-1);
        assert.equal(logged?.rules, 'as expected', JSON.stringify(logged));
      }
      await assertCaptured(pods);
      await verdict(t, '6 containerd + kubelet restart', 'reboot', recovered, ` (from the kubelet's stop, until 3 new pods Ready; ${existing.length} existing pods checked)`);
    });

    it('4. kube-apiserver stopped for 30 s while 10 pods are created (pod cache off): ADDs fail closed with error 11, the kubelet retries, every pod runs with its rules', async (t) => {
      // With the pod cache the plugin needs no API server for a pod the cache knows: its ADD would
      // just work. Without it, each ADD asks the API server, which is what an outage tests.
      await c.installDaemonSet([`image=${UPGRADE_IMAGE}`, 'podCache.enabled=false']);
      const entry = (JSON.parse(readFileSync(PRIMARY, 'utf8')) as { plugins: Array<Record<string, unknown>> }).plugins.at(-1)!;
      assert.equal(entry.pod_cache_socket, undefined, 'the plugin asks the API server');

      await deploy('outage', 10);
      // The API server goes the moment the kubelet starts setting the pods' sandboxes up: those not
      // set up yet meet the outage.
      await c.waitUntil('the first outage pod\'s ADD', async () => pluginLines('outage').some((l) => l.verb === 'ADD'), 120_000, 50);
      await c.stopComponent('kube-apiserver', 'SIGKILL');
      const stoppedAt = Date.now();
      let victim: { id: string; name: string } | undefined;
      // The API server answers from its start on, before startComponent sees it healthy.
      let restartedAt = Infinity;
      try {
        // And one pod's sandbox dies meanwhile (its pause process killed), so that at least one
        // ADD surely runs in the outage: the kubelet makes the pod a new sandbox.
        let pid = 0;
        await c.waitUntil('a captured outage pod\'s sandbox', async () => {
          const redirected = new Set(pluginLines('outage').filter((l) => l.verb === 'ADD' && l.decision === 'redirect').map((l) => l.containerId));
          const cri = c.nodeCri();
          try {
            const sandbox = (await cri.listPodSandbox()).find((x) => x.state === 'SANDBOX_READY' && redirected.has(x.id));
            if (sandbox === undefined) return 'none yet';
            victim = { id: sandbox.id, name: sandbox.metadata.name };
            pid = (await c.podSandbox(sandbox.metadata.uid)).pid;
            return true;
          } finally {
            cri.close();
          }
        }, 20_000, 100);
        process.kill(pid, 'SIGKILL');
        // The fault itself lasts 30 s (not a wait for a condition).
        await h.sleep(30_000 - (Date.now() - stoppedAt));
      } finally {
        restartedAt = Date.now();
        await c.startComponent('kube-apiserver');
      }
      const backAt = Date.now();
      const pods = await waitReady(watch, 'outage', 10, 240_000);
      const recovered = Date.now() - backAt;

      const adds = pluginLines('outage').filter((l) => l.verb === 'ADD');
      const failed = adds.filter((l) => l.code !== undefined);
      assert.ok(failed.length >= 1, 'ADDs ran during the outage');
      const otherwise = failed.filter((l) => l.code !== 11).map((l) => `${String(l.error)}: ${String(l.details)}`);
      assert.deepEqual([...new Set(failed.map((l) => l.code))], [11], `each failed closed: try again later (otherwise: ${otherwise.join('; ')})`);
      assert.ok(adds.every((l) => l.code === 11 || l.decision === 'redirect'), 'never a pass');
      // An ADD that ran wholly inside the outage had no API server to ask (and no cache): it must have failed.
      const endedAt = (l: c.PluginLogLine) => Date.parse(l.time as string);
      const inOutage = adds.filter((l) => endedAt(l) - (l.durationMs as number) >= stoppedAt && endedAt(l) <= restartedAt);
      assert.ok(inOutage.length >= 1 && inOutage.every((l) => l.code === 11), JSON.stringify(inOutage.map((l) => [l.pod, l.time, l.code, l.decision])));
      const remade = adds.filter((l) => l.pod === `${NS}/${victim!.name}` && l.containerId !== victim!.id);
      assert.ok(remade.length >= 1, 'the kubelet made the killed sandbox again');
      for (const pod of pods) {
        const last = adds.filter((l) => l.pod === `${NS}/${pod.metadata.name}`).at(-1);
        assert.equal(last?.decision, 'redirect', `${pod.metadata.name}: its sandbox's ADD`);
      }
      await assertCaptured(pods);
      await verdict(t, '4 API server down 30 s', 'outage', recovered, ` (from the API server's return; ${failed.length} ADDs failed with error 11, ${inOutage.length} ran wholly in the outage, and were retried by the kubelet; ${remade.filter((l) => l.code === 11).length} of them for the sandbox killed in the outage)`);
    });

    it('repair only ever acted on pods whose istio-validation exited 126, each once; the healthy pods of the other namespace were never touched', () => {
      const raced = new Set([...watch.pods.values()].filter((p) => validationExits(p).includes(NOT_CAPTURED)).map((p) => `${NS}/${p.name}`));
      for (const verb of ['patch', 'delete'] as const) {
        const targets = repairActions(verb);
        assert.deepEqual(targets.filter((x) => !raced.has(x)), [], `${verb} of a pod that never failed istio-validation`);
        assert.equal(new Set(targets).size, targets.length, `a pod ${verb}ed twice`);
      }
    });
  });
}
