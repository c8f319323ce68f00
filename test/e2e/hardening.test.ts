/**
 * What a pod author, a pod with NET_ADMIN or a local process racing the plugin can do to a root
 * plugin (issue 18), each through the built executable: a CNI_NETNS symlink flipped to the node's
 * netns mid-ADD, rule comments that smuggle lines into iptables-save, annotations that multiply,
 * API bodies that never end, a relay that fools `validate`, out-of-range ids and exclusions.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, it } from 'vitest';
import * as h from '../harness/index.ts';
import { CALICO, makeFakeNode } from '../install/node.ts';
import { makeMountNs, replaceXtables, restoreInputs, type MountNs } from '../hostile/mountns.ts';
import { NOTHING, ourState, resetNat, specErrorProblems } from '../hostile/oracle.ts';

afterAll(h.cleanupAll);

const WEB = { pod: 'web-0', namespace: 'default' };
const RACER = join(h.REPO_ROOT, 'test', 'helpers', 'racer.py');

const BIN = h.DEFAULT_ISTIO_CNI_BIN;

/**
 * The plugin run for WEB as libcni would, in the node netns; in the mount namespace `mnt` and inside
 * `wrap` (a memory cgroup) when given.
 */
function runVerb(e: h.E2E, command: string, opts: { mnt?: MountNs; wrap?: (argv: readonly string[]) => string[] } = {}) {
  const env = h.minimalEnv({ CNI_COMMAND: command, CNI_CONTAINERID: 'c1', CNI_NETNS: e.topo.pod.path, CNI_IFNAME: 'eth0', CNI_ARGS: h.formatCniArgs(e.cniArgsFor(WEB)) });
  const argv = opts.mnt ? opts.mnt.argv([BIN], e.topo.node) : h.nsenterArgv(e.topo.node, [BIN]);
  return h.run(opts.wrap ? opts.wrap(argv) : argv, { env, input: JSON.stringify(e.pluginStdin()), timeoutMs: 60_000 });
}

function startRacer(...args: string[]): Promise<h.Daemon> {
  return h.startDaemon([h.PYTHON, RACER, ...args], { ready: /racing/, label: `racer ${args[0]}` });
}

describe('CNI_NETNS flipped between the check and the use', () => {
  it('never programs the node\'s netns, however the symlink races the ADD', async () => {
    const e = await h.makeE2E({ tag: 'flip', pods: [h.injectedPod(WEB.pod, WEB.namespace)] });
    const link = join(h.makeTempDir('icni-flip-'), 'netns');
    // The plugin runs in topo.node: that is "the node's own netns" it must never touch.
    const racer = await startRacer('flip', link, e.topo.pod.path, e.topo.node.path);
    const outcomes = new Map<string, number>();
    try {
      for (let i = 0; i < 40; i++) {
        const add = await e.runDirect('ADD', WEB, { netns: link });
        const outcome = add.code === 0 ? 'ok' : String((add.json as { code?: number } | undefined)?.code ?? add.code);
        outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
        const node = await ourState(e.topo.node);
        if (node.nft.length > 0) await resetNat(e.topo.node, 'nft');
        assert.deepEqual(node, NOTHING, `ADD ${i + 1} (${outcome}) programmed the node's netns; so far ${JSON.stringify([...outcomes])}`);
        if (add.code !== 0) {
          const { problems, error } = specErrorProblems(add);
          assert.deepEqual(problems, []);
          assert.equal(error?.code, 104, add.stdout);
        }
        await resetNat(e.topo.pod, 'nft');
      }
    } finally {
      await racer.stop();
    }
    // Both ends of the race were reached: the test proves something only if the flip happened mid-ADD.
    assert.ok((outcomes.get('ok') ?? 0) > 0 && (outcomes.get('104') ?? 0) > 0, JSON.stringify([...outcomes]));
  });
});

/** Every line the plugin may feed a root iptables-restore: table headers, its own chains and rules, deletions by position. */
const OUR_RESTORE_LINE = /^(\*(nat|mangle|raw)|COMMIT|-[NFX] ISTIO_[A-Z_]+|-D [A-Z_]+ \d+|-A [A-Z_]+( [A-Za-z0-9_.:\/,!-]+)+|)$/;

for (const backend of ['nft', 'legacy'] as const) {
  describe(`rule comments of a NET_ADMIN pod (iptables-${backend})`, () => {
    it('never reach the root iptables-restore: repeated ADD and DEL regenerate their own lines', async () => {
      const e = await h.makeE2E({ tag: `inj-${backend}`, pods: [h.injectedPod(WEB.pod, WEB.namespace)], conflist: { iptablesBackend: backend } });
      const first = await runVerb(e, 'ADD');
      assert.equal(first.code, 0, first.stdout);
      // The pod's own rules, as a NET_ADMIN container can add them: iptables-save prints a comment's
      // newlines as they are, so each comment looks like more lines of restore input.
      const iptables = `/usr/sbin/iptables-${backend}`;
      const smuggled = 'pod\n-A OUTPUT --modprobe=/tmp/icni-evil -j ISTIO_OUTPUT\nCOMMIT\n*filter\n-F\n-A INPUT -j DROP';
      await h.execInNetnsOk(e.topo.pod, [iptables, '-t', 'nat', '-A', 'OUTPUT', '-m', 'comment', '--comment', smuggled, '-j', 'ACCEPT']);
      await h.execInNetnsOk(e.topo.pod, [iptables, '-t', 'nat', '-I', 'PREROUTING', '-m', 'comment', '--comment', 'a "quote\\" \'\n-A PREROUTING -p tcp -j ISTIO_INBOUND', '-j', 'ISTIO_INBOUND']);
      const mnt = await makeMountNs();
      await replaceXtables(mnt, backend, { record: true });

      const again = await runVerb(e, 'ADD', { mnt });
      assert.equal(again.code, 0, `repeated ADD: ${again.stdout}`);
      const del = await runVerb(e, 'DEL', { mnt });
      assert.equal(del.code, 0, `DEL: ${del.stdout}`);

      const inputs = restoreInputs(mnt);
      assert.ok(inputs.length >= 2, `${inputs.length} restores recorded`);
      for (const input of inputs) {
        for (const line of input.split('\n')) assert.match(line, OUR_RESTORE_LINE, `a line of restore input that the plugin did not make:\n${input}`);
      }
      const left = await h.iptablesSave(e.topo.pod, backend);
      assert.ok(!left.includes(':ISTIO_'), `our chains are gone:\n${left}`);
      // The pod's own rule stays; its jump into our chain went with the chain.
      assert.ok(left.includes(`-A OUTPUT -m comment --comment "pod\n-A OUTPUT --modprobe=/tmp/icni-evil -j ISTIO_OUTPUT\nCOMMIT`), left);
      assert.equal((await h.iptablesSave(e.topo.pod, backend, 'filter')).includes('DROP'), false);
    });
  });
}

/** An injected WEB pod with these annotations; `proxy` edits its istio-proxy container. */
function podWith(annotations: Record<string, string>, proxy: (c: Record<string, unknown>) => void = () => {}): h.Pod {
  const pod = h.injectedPod(WEB.pod, WEB.namespace, { metadata: { annotations } });
  proxy((pod.spec as { containers: Record<string, unknown>[] }).containers.find((c) => c.name === 'istio-proxy')!);
  return pod;
}

const ranges = (n: number) => Array.from({ length: n }, (_, i) => `10.${i >> 8}.${i & 255}.0/24`).join(',');
const interfaces = (n: number) => Array.from({ length: n }, (_, i) => `vm${i}`).join(',');

/** ADD of `pod` straight to the executable; asserts error 106 naming `why`, and an untouched netns. */
async function refused(tag: string, pod: h.Pod, why: RegExp) {
  const e = await h.makeE2E({ tag, pods: [pod] });
  const add = await e.runDirect('ADD', WEB);
  const { problems, error } = specErrorProblems(add);
  assert.deepEqual(problems, []);
  assert.equal(error?.code, 106, add.stdout);
  assert.match(`${error!.msg}: ${error!.details}`, why);
  assert.ok(add.stdout.length < 2_000, `the error is short: ${add.stdout.length} bytes`);
  assert.deepEqual(await ourState(e.topo.pod), NOTHING);
}

describe('annotations that multiply', () => {
  it('refuses 350 include ranges × 350 VM interfaces (122,501 rules) with error 106, before anything is applied', async () => {
    const pod = podWith({ 'traffic.sidecar.istio.io/includeOutboundIPRanges': ranges(350), 'istio.io/reroute-virtual-interfaces': interfaces(350) });
    await refused('mult', pod, /too many rules: 122500 rules .*at most 4096/);
  });

  it('refuses a list of more than 1024 items with error 106', async () => {
    const ports = Array.from({ length: 1025 }, (_, i) => String(i + 1)).join(',');
    await refused('items', podWith({ 'traffic.sidecar.istio.io/includeInboundPorts': ports }), /includeInboundPorts.*1025 items; at most 1024/);
  });

  it('programs, checks and removes a rule set near the cap (60 ranges × 64 interfaces)', async () => {
    const e = await h.makeE2E({ tag: 'atcap', pods: [podWith({ 'traffic.sidecar.istio.io/includeOutboundIPRanges': ranges(60), 'istio.io/reroute-virtual-interfaces': interfaces(64) })] });
    const add = await e.run('add', WEB);
    assert.equal(add.code, 0, add.stdout + add.stderr);
    const rules = (await h.iptablesS(e.topo.pod)).filter((l) => l.startsWith('-A '));
    assert.ok(rules.length > 3900 && rules.length <= 4096, `${rules.length} rules`);
    assert.equal((await e.run('check', WEB)).code, 0);
    const del = await e.run('del', WEB);
    assert.equal(del.code, 0, del.stdout + del.stderr);
    assert.deepEqual(await ourState(e.topo.pod), NOTHING);
  });

  it('removes a leftover far beyond the cap (an older plugin\'s 122,500 reroute jumps) without failing DEL', async () => {
    const e = await h.makeE2E({ tag: 'leftover', pods: [h.injectedPod(WEB.pod, WEB.namespace)] });
    const jumps = Array.from({ length: 122_500 }, (_, i) => `-A PREROUTING -d 10.${(i >> 8) & 255}.${i & 255}.0/24 -i vm${i % 350} -j ISTIO_REDIRECT`);
    const input = ['*nat', ':ISTIO_REDIRECT - [0:0]', '-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001', ...jumps, 'COMMIT', ''].join('\n');
    await h.execInNetnsOk(e.topo.pod, ['/usr/sbin/iptables-nft-restore', '--noflush'], { input, timeoutMs: 60_000 });
    const del = await e.runDirect('DEL', WEB, { timeoutMs: 60_000 });
    assert.equal(del.code, 0, del.stdout);
    // Our chain is left empty (deleting 122,500 nft rules one by one would take minutes): nothing is redirected.
    assert.deepEqual((await h.iptablesS(e.topo.pod)).filter((l) => l.startsWith('-A ISTIO_')), []);
  });
});

describe('smaller holes in annotation and container values', () => {
  for (const [field, value] of [['runAsUser', -1], ['runAsUser', 2 ** 32], ['runAsGroup', 4294967295]] as const) {
    it(`refuses istio-proxy ${field} ${value} with error 106 before anything runs`, async () => {
      const pod = podWith({}, (c) => void (c.securityContext = { [field]: value }));
      await refused(`id${String(value).length}`, pod, new RegExp(`${field}.*${value}`));
    });
  }

  for (const everything of ['0.0.0.0/0', '::/0', '10.0.0.0/8,0.0.0.0/0']) {
    it(`refuses ${everything} as an excluded range, as it refuses *`, async () => {
      await refused('excl0', podWith({ 'traffic.sidecar.istio.io/excludeOutboundIPRanges': everything }), /excludeOutboundIPRanges.*every address/);
    });
  }
});

describe('files the plugin opens as root', () => {
  it('makes an existing log file 0600, and never follows a link or waits on a FIFO at the log path', async () => {
    const e = await h.makeE2E({ tag: 'logf', pods: [h.injectedPod(WEB.pod, WEB.namespace)] });
    const dir = h.makeTempDir('icni-logf-');
    const victim = join(dir, 'shadow');
    writeFileSync(victim, 'root:secret\n', { mode: 0o640 });
    const cases: [string, () => Promise<void> | void][] = [
      ['wide', () => writeFileSync(join(dir, 'wide'), '', { mode: 0o644 })],
      ['link', () => symlinkSync(victim, join(dir, 'link'))],
      ['fifo', () => h.runOk(['/usr/bin/mkfifo', join(dir, 'fifo')]).then(() => undefined)],
    ];
    for (const [name, plant] of cases) {
      await plant();
      const logFile = join(dir, name);
      const add = await e.runDirect('ADD', WEB, { stdin: { ...e.pluginStdin(), log_file: logFile }, timeoutMs: 10_000 });
      assert.equal(add.code, 0, `${name}: ${add.stdout}${add.stderr}`);
      if (name === 'wide') {
        assert.equal(statSync(logFile).mode & 0o777, 0o600);
        assert.match(readFileSync(logFile, 'utf8'), /"msg":"ADD ok"/);
      } else {
        assert.match(add.stderr, /cannot open log file .*logging disabled/, name);
      }
      await resetNat(e.topo.pod, 'nft');
    }
    assert.equal(readFileSync(victim, 'utf8'), 'root:secret\n');
    assert.equal(statSync(victim).mode & 0o777, 0o640);
  });

  it('refuses a kubeconfig that is a FIFO or a device with error 105 instead of waiting on it', async () => {
    const e = await h.makeE2E({ tag: 'kcfifo', pods: [h.injectedPod(WEB.pod, WEB.namespace)] });
    const fifo = join(h.makeTempDir('icni-kcfifo-'), 'kubeconfig');
    await h.runOk(['/usr/bin/mkfifo', fifo]);
    for (const kubeconfig of [fifo, '/dev/zero']) {
      const add = await e.runDirect('ADD', WEB, { stdin: { ...e.pluginStdin(), kubernetes: { kubeconfig } }, timeoutMs: 10_000 });
      const { problems, error } = specErrorProblems(add);
      assert.deepEqual(problems, [], kubeconfig);
      assert.equal(error?.code, 105, add.stdout);
      assert.match(error!.details, /a FIFO|a device/);
    }
  });
});

/**
 * Answers the requests `matches` picks, while `on`, with a 200 whose chunked body never ends (after
 * `prefix`), as fast as the client reads; counts the bytes it wrote.
 */
function serveEndless(api: h.FakeKubeApi, matches: (url: URL) => boolean, prefix: string) {
  const state = { on: true, sent: 0 };
  const chunk = Buffer.alloc(64 * 1024, 'a');
  api.addRoute(({ res, url, record }) => {
    if (!state.on || !matches(url)) return false;
    record.status = 200;
    res.writeHead(200, { 'Content-Type': 'application/json' });
    let open = true;
    res.on('close', () => (open = false));
    const pump = () => {
      while (open) {
        state.sent += chunk.length;
        if (!res.write(chunk)) return void res.once('drain', pump);
      }
    };
    res.write(prefix);
    pump();
    return true;
  });
  return state;
}

const MIB = 1024 * 1024;
/**
 * A memory cgroup's ceiling for a process reading an endless answer, and what a bounded read stays
 * under: the cgroup also counts the page cache it faults in (the 126 MiB executable, on its first
 * run after a build), so the bound is generous; an unbounded read reaches the ceiling in seconds.
 */
const CEILING = 768 * MIB;
const BOUNDED = 400 * MIB;

describe('API answers that never end', () => {
  it('the pod GET stops reading at 4 MiB: error 101 at once, memory bounded, nothing programmed', async () => {
    const e = await h.makeE2E({ tag: 'endless', pods: [h.injectedPod(WEB.pod, WEB.namespace)] });
    const endless = serveEndless(e.api!, (url) => url.pathname === `/api/v1/namespaces/${WEB.namespace}/pods/${WEB.pod}`, '{"kind":"Pod","metadata":{"name":"');
    const cgroup = h.makeMemoryCgroup(CEILING);
    const add = await runVerb(e, 'ADD', { wrap: cgroup.argv });
    const peak = cgroup.peakBytes();
    const { problems, error } = specErrorProblems(add);
    assert.deepEqual(problems, [], `peak ${Math.round(peak / MIB)} MiB, server sent ${Math.round(endless.sent / MIB)} MiB: ${add.stdout}`);
    assert.equal(error?.code, 101, add.stdout);
    assert.match(error!.details, /response larger than 4194304 bytes/);
    assert.ok(peak < BOUNDED, `peak ${Math.round(peak / MIB)} MiB`);
    assert.ok(endless.sent < 64 * MIB, `the server got to send ${Math.round(endless.sent / MIB)} MiB`);
    assert.deepEqual(await ourState(e.topo.pod), NOTHING);
  });

  it('repair drops a pod list or a watch event that never ends at its bound, and recovers when the API does', async () => {
    const api = await h.startFakeKubeApi({ pods: [] });
    const list = serveEndless(api, (url) => url.pathname === '/api/v1/pods' && url.searchParams.get('watch') !== 'true', '{"kind":"PodList","items":[');
    const watch = serveEndless(api, (url) => url.pathname === '/api/v1/pods' && url.searchParams.get('watch') === 'true', '{"type":"ADDED","object":{"metadata":{"name":"');
    watch.on = false;
    const pods = h.servePodWatch(api);
    const kubeconfig = api.writeKubeconfig(undefined, { auth: 'token', caMode: 'data' });
    const cgroup = h.makeMemoryCgroup(CEILING);
    const argv = cgroup.argv([BIN, 'repair', '--node-name', 'n1', '--kubeconfig', kubeconfig]);
    const child = spawn(argv[0]!, argv.slice(1), { env: h.minimalEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    const stopChild = h.trackChild(child, 'istio-cni repair');
    let stdout = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    const exited = new Promise<number | null>((resolve) => child.once('close', resolve));
    const requests = (watching: boolean) => api.requests.filter((r) => r.path === '/api/v1/pods' && r.query.includes('watch=true') === watching).length;
    try {
      await waitUntil('the list dropped and asked again', () => requests(false) >= 2);
      list.on = false;
      watch.on = true;
      await waitUntil('the watch dropped and opened again', () => requests(true) >= 2);
      watch.on = false;
      await waitUntil('a watch that stays open', () => pods.openWatches() === 1);
      assert.equal(child.exitCode, null, 'repair is still running');
      assertDroppedAtBound(stdout);
      const peak = cgroup.peakBytes();
      assert.ok(peak < BOUNDED, `peak ${Math.round(peak / MIB)} MiB`);
      child.kill('SIGTERM');
      assert.equal(await exited, 0);
    } finally {
      await stopChild();
      await api.close();
    }
  });
  it('the installer\'s pod cache drops a pod list or a watch that never ends at 32 MiB, and recovers when the API does', async () => {
    const api = await h.startFakeKubeApi({ pods: [h.injectedPod(WEB.pod, WEB.namespace)] });
    const list = serveEndless(api, (url) => url.pathname === '/api/v1/pods' && url.searchParams.get('watch') !== 'true', '{"kind":"PodList","items":[');
    const watch = serveEndless(api, (url) => url.pathname === '/api/v1/pods' && url.searchParams.get('watch') === 'true', '{"type":"ADDED","object":{"metadata":{"name":"');
    watch.on = false;
    const pods = h.servePodWatch(api);
    const dir = h.makeTempDir('icni-endless-cache-');
    const node = makeFakeNode({ token: api.token, ca: api.pki.caPem, apiHost: '127.0.0.1', apiPort: api.port, env: { NODE_NAME: 'n1', POD_CACHE_SOCKET: join(dir, 'pod-cache.sock') } });
    writeFileSync(join(node.netDir, '10-calico.conflist'), CALICO);
    const cgroup = h.makeMemoryCgroup(CEILING);
    const installer = await h.startDaemon(cgroup.argv([BIN, 'install']), { ready: /"msg":"watching for changes"/, label: 'istio-cni install', env: node.env, timeoutMs: 20_000 });
    const requests = (watching: boolean) => api.requests.filter((r) => r.path === '/api/v1/pods' && r.query.includes('watch=true') === watching).length;
    try {
      await waitUntil('the list dropped and asked again', () => requests(false) >= 2);
      list.on = false;
      watch.on = true;
      await waitUntil('the watch dropped and opened again', () => requests(true) >= 2, 60_000);
      watch.on = false;
      await waitUntil('a watch that stays open', () => pods.openWatches() === 1, 60_000);
      assert.equal(installer.child.exitCode, null, 'the installer is still running');
      const peak = cgroup.peakBytes();
      assert.ok(peak < BOUNDED, `peak ${Math.round(peak / MIB)} MiB`);
      assertDroppedAtBound(installer.output().stderr);
      installer.child.kill('SIGTERM');
      assert.equal(await installer.exited, 0);
    } finally {
      await installer.stop();
      await api.close();
    }
  });
});

/** The log says the list (no resourceVersion yet) and then the watch (from the list's) were each dropped at the client's bound. */
function assertDroppedAtBound(log: string): void {
  const failures = log.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { msg: string; error?: string; resourceVersion?: string }).filter((l) => l.msg === 'pod list/watch failed');
  const atBound = (l: { error?: string }) => /Response content exceeded max size/.test(l.error ?? '');
  assert.ok(failures.some((l) => l.resourceVersion === '' && atBound(l)), `the list dropped at its bound: ${log}`);
  assert.ok(failures.some((l) => l.resourceVersion !== '' && atBound(l)), `the watch dropped at its bound: ${log}`);
}

async function waitUntil(what: string, done: () => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await h.sleep(50);
  }
}

describe('validate against a process that relays its probe', () => {
  const RELAY = join(h.REPO_ROOT, 'test', 'helpers', 'relay.py');
  for (const how of ['a new connection', 'a connection from the probe\'s own port'] as const) {
    it(`is not fooled by a listener on 127.0.0.6:15002 that relays to 15001 over ${how}`, async () => {
      // A pod the plugin passed through: nothing captures its traffic.
      const ns = await h.createNetns({ tag: 'relay', loUp: true });
      const relay = await h.startDaemon(
        h.nsenterArgv(ns, [h.PYTHON, RELAY, '127.0.0.6', '15002', '127.0.0.1', '15001', ...(how === 'a new connection' ? [] : ['same-port'])]),
        { ready: /relaying/, label: 'relay' },
      );
      try {
        const v = await h.execInNetns(ns, [BIN, 'validate', '--timeout', '1'], { uid: 1337, gid: 1337, timeoutMs: 15_000 });
        assert.equal(v.code, 126, `validate believed the relay: ${v.stdout}${v.stderr}\nrelay: ${relay.output().stderr}`);
      } finally {
        await relay.stop();
      }
    });
  }
});
