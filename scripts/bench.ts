/**
 * npm run bench [-- --rounds N --warmup N --repeats N --skip concurrency,scaling --compare LABEL=BIN … --update-docs]
 *
 * Measures the built dist/istio-cni as whole processes, run the way libcni runs it (environment +
 * stdin, inside a harness-made node netns that reaches the fake API server), side by side with a
 * Go floor, the seed-era way and a bare Node start; then 1..64 ADDs at once and the annotation
 * scaling curve. Writes bench/out/results.json, results.md and chart.png. Needs root.
 * --compare LABEL=BIN adds another build of the plugin (e.g. one with a change to src/) to the
 * side-by-side rounds, so a change is measured before/after in one run.
 */
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import { REPO_ROOT, type JsonObject } from '../test/harness/conflist.ts';
import { injectedPod, plainPod, startFakeKubeApi, type FakeKubeApi } from '../test/harness/kube-api.ts';
import { servePodWatch, type PodCollection } from '../test/harness/kube-watch.ts';
import { createNetns, type Netns } from '../test/harness/netns.ts';
import { cleanupAll, makeTempDir, minimalEnv, run, runOk, startDaemon, type Daemon } from '../test/harness/proc.ts';
import { nsenterArgv } from '../test/harness/netns.ts';
import { chartSvg, renderPng, type Series } from '../bench/chart.ts';
import { backendRatios, loadModel, markdown, ratios, targets, type ConcurrencyPoint, type Results, type Scaling, type ScalingPoint, type Single } from '../bench/report.ts';
import { buildGoPrograms, OUT_DIR, runBatch, runOnce, runRounds, type Command, type Step, type StepSamples } from '../bench/runner.ts';
import { kibToMib, median, nsToMs, percentile, round } from '../bench/stats.ts';
import {
  BARE_BUN, BARE_NODE, bareRuntimeCommand, NODE_RUNTIME, POD_ADDRESS, benchConfig, flushCommand, floorCommand, istioCommand, nftablesConfig, nftListCommand, normalizeSave, PLUGIN, pluginCommand, saveCommand,
  seedCommand, tablesOf, versionCommand, writeRuleFiles, type BenchConfig, type PodCall,
} from '../bench/subjects.ts';

const { values: opt } = parseArgs({
  options: {
    rounds: { type: 'string', default: '40' },
    warmup: { type: 'string', default: '5' },
    repeats: { type: 'string', default: '3' },
    skip: { type: 'string', default: '' },
    compare: { type: 'string', multiple: true, default: [] },
    istio: { type: 'string' },
    'update-docs': { type: 'boolean', default: false },
  },
});
const ROUNDS = Number(opt.rounds);
const WARMUP = Number(opt.warmup);
const REPEATS = Number(opt.repeats);
const SKIP = new Set(opt.skip.split(',').filter((s) => s !== ''));
const COMPARE = opt.compare.map((c) => {
  const [label, bin] = c.split('=') as [string, string | undefined];
  if (bin === undefined || !bin.startsWith('/')) throw new Error(`--compare ${c}: expected LABEL=/absolute/path`);
  return { label, bin };
});
const CONCURRENCY = [1, 2, 4, 8, 16, 32, 64];
const SCALING_ITEMS = [1, 10, 50, 100, 200, 500];
const SCALING_ROUNDS = Math.max(5, Math.round(ROUNDS / 3));
const RSS_ROUNDS = 5;
const INJECTED = { namespace: 'default', name: 'web' };
/** The same injected pod under other names, one per subject that looks it up, so each one's pod GETs can be counted. */
const POD_OF = { floor: 'web-floor', seed: 'web-seed', istio: 'web-istio', compare: 'web-compare', nftables: 'web-nftables' } as const;
const NODE_NAME = 'test-node';
const PLAIN = { namespace: 'default', name: 'plain' };
const PLAIN_ANNOTATIONS = { 'kubectl.kubernetes.io/default-container': 'app' };
/** The pool's netns for the native nftables subjects (the others use the first few). */
const NFTABLES_NETNS = 5;

const log = (message: string) => process.stderr.write(`bench: ${message}\n`);

/** Every N-item annotation the curve uses, and how to see in the saved rules that it was honoured. */
const SCALING_ANNOTATIONS: Record<string, { values: (n: number) => string[]; seen: RegExp }> = {
  'traffic.sidecar.istio.io/excludeInboundPorts': { values: (n) => range(n).map((i) => String(20001 + i)), seen: /\b20001\b/ },
  'traffic.sidecar.istio.io/excludeOutboundPorts': { values: (n) => range(n).map((i) => String(30001 + i)), seen: /\b30001\b/ },
  'traffic.sidecar.istio.io/excludeOutboundIPRanges': { values: (n) => range(n).map((i) => `10.${100 + (i >> 8)}.${i & 255}.0/24`), seen: /10\.100\.0\.0\/24/ },
};

function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}

function scalingPodName(items: number): string {
  return `scale-${items}`;
}

function scalingPod(items: number) {
  const annotations = Object.fromEntries(Object.entries(SCALING_ANNOTATIONS).map(([k, a]) => [k, a.values(items).join(',')]));
  return injectedPod(scalingPodName(items), 'default', { metadata: { annotations } });
}

async function ensureBuilt(): Promise<void> {
  const r = await runOk([process.execPath, join(REPO_ROOT, 'build', 'build.mjs'), '--if-stale'], { cwd: REPO_ROOT, env: process.env, timeoutMs: 600_000 });
  if (r.stdout.trim() !== '') log(r.stdout.trim());
  if (!existsSync(BARE_NODE)) {
    log(`installing the reference Node into ${NODE_RUNTIME}`);
    // The npm beside this node: the harness runs programs by absolute path only.
    await runOk([join(dirname(process.execPath), 'npm'), 'ci', '--prefix', NODE_RUNTIME, '--no-audit', '--no-fund', '--loglevel=error'], { cwd: REPO_ROOT, env: process.env, timeoutMs: 300_000 });
  }
}

/**
 * Writes the executables out and drops them from the page cache: their pages are then read back
 * from disk by the first (warm-up) runs, as on a node where the binary was installed long before.
 * A binary the build has just written is mapped from the pages of that write, which adds up to
 * ~11 MiB to each run's RSS (checked: 67 vs 56 MiB for VERSION of the same file).
 */
async function dropPageCache(files: string[]): Promise<void> {
  for (const file of files) {
    await runOk(['/usr/bin/sync', file]);
    await runOk(['/usr/bin/dd', `if=${file}`, 'iflag=nocache', 'count=0', 'status=none']);
  }
}

function ownRules(saved: string): number {
  return saved.split('\n').filter((l) => l.startsWith('-A ')).length;
}

/** Runs once and insists on exit 0: the bench measures only runs that did their job. */
async function mustSucceed(node: Netns, what: string, command: Command): Promise<string> {
  const r = await runOnce(node, command);
  if (r.exit !== 0) throw new Error(`${what} failed (exit ${r.exit}): ${r.stdout ?? ''}${r.stderr ?? ''}`);
  return r.stdout ?? '';
}

async function saved(node: Netns, netns: Netns): Promise<string> {
  return normalizeSave(await mustSucceed(node, `iptables-save in ${netns.name}`, saveCommand(netns)));
}

interface Env {
  node: Netns;
  api: FakeKubeApi;
  pods: PodCollection;
  config: BenchConfig;
  dir: string;
  pool: Netns[];
  /** Istio's own istio-cni executable, when measured. */
  istio: string | undefined;
}

/** The injected pod `name` as this bench's calls name it: with its UID, as containerd passes it. */
function injectedCall(env: Env, name: string, netns: Netns): PodCall {
  return { namespace: INJECTED.namespace, name, netns, uid: env.api.pods.get(`${INJECTED.namespace}/${name}`)!.metadata.uid };
}

/**
 * `istio-cni install` as the DaemonSet runs it, in the node netns, with its node-local pod cache
 * listing and watching this node's pods on the fake API server: the cache the plugin asks first.
 */
async function startPodCache(api: FakeKubeApi, node: Netns, dir: string): Promise<{ daemon: Daemon; socket: string; started: number }> {
  const root = join(dir, 'cache-node');
  for (const d of ['net.d', 'bin', 'serviceaccount', 'run']) mkdirSync(join(root, d), { recursive: true });
  writeFileSync(join(root, 'serviceaccount', 'token'), api.token);
  writeFileSync(join(root, 'serviceaccount', 'ca.crt'), api.pki.caPem);
  const socket = join(root, 'run', 'pod-cache.sock');
  const env = minimalEnv({
    MOUNTED_CNI_NET_DIR: join(root, 'net.d'),
    CNI_NET_DIR: join(root, 'net.d'),
    MOUNTED_CNI_BIN_DIRS: join(root, 'bin'),
    SERVICE_ACCOUNT_PATH: join(root, 'serviceaccount'),
    KUBERNETES_SERVICE_HOST: '127.0.0.1',
    KUBERNETES_SERVICE_PORT: String(api.port),
    NODE_NAME,
    POD_CACHE_SOCKET: socket,
  });
  const started = Date.now();
  const daemon = await startDaemon(nsenterArgv(node, [PLUGIN, 'install']), { ready: /listed this node's pods/, label: 'istio-cni install (pod cache)', env, timeoutMs: 20_000 });
  return { daemon, socket, started };
}

/** Istio's istio-cni from the pinned istio.io/istio module (cluster/build.sh, cached outside the work tree). */
async function istioPlugin(): Promise<string> {
  if (opt.istio !== undefined) return opt.istio;
  const r = await run(['/usr/bin/bash', join(REPO_ROOT, 'cluster', 'build.sh'), 'istio'], { cwd: REPO_ROOT, env: process.env, timeoutMs: 3_600_000 });
  if (r.code !== 0) throw new Error(`cluster/build.sh istio failed (use --skip istio to bench without it):\n${r.stderr}`);
  return join(r.stdout.trim(), 'istio-cni');
}

/**
 * One of each subject, checked: the plugin's rules become the expected set, and the floor and the
 * seed-era client must leave exactly the same rules. Returns the expected save text.
 */
async function probe(env: Env): Promise<{ expected: string; files: { restore: string; perRule: string }; istioTables: string[] }> {
  const { node, config, pool } = env;
  const [p, f, s, x] = pool as [Netns, Netns, Netns, Netns];
  await mustSucceed(node, 'istio-cni ADD', pluginCommand(config, 'ADD', injectedCall(env, INJECTED.name, p)));
  const expected = await saved(node, p);
  if (!expected.includes('ISTIO_')) throw new Error(`istio-cni ADD programmed no ISTIO_ chains:\n${expected}`);
  await mustSucceed(node, 'istio-cni DEL', pluginCommand(config, 'DEL', injectedCall(env, INJECTED.name, p)));
  const gets = env.api.podRequests().length;
  await mustSucceed(node, 'istio-cni ADD with the pod cache', pluginCommand(config, 'ADD', injectedCall(env, INJECTED.name, p), PLUGIN, config.cachedEntry));
  if (env.api.podRequests().length !== gets) throw new Error('istio-cni ADD with a warm pod cache made a pod GET');
  if ((await saved(node, p)) !== expected) throw new Error('istio-cni ADD with the pod cache programmed other rules');
  const files = writeRuleFiles(env.dir, 'default', expected);
  await mustSucceed(node, 'floor', floorCommand(config, injectedCall(env, POD_OF.floor, f), files.restore));
  await mustSucceed(node, 'seed-era', seedCommand(config, injectedCall(env, POD_OF.seed, s), files.perRule));
  let istioTables: string[] = [];
  if (env.istio !== undefined) {
    await mustSucceed(node, 'Istio\'s istio-cni ADD', istioCommand(config, 'ADD', injectedCall(env, POD_OF.istio, x), env.istio));
    const istioRules = await saved(node, x);
    if (!istioRules.includes('-j ISTIO_REDIRECT')) throw new Error(`Istio's istio-cni programmed no redirect:\n${istioRules}`);
    istioTables = tablesOf(istioRules);
    await mustSucceed(node, 'flush', flushCommand(x, istioTables));
    log(`Istio's istio-cni programmed ${ownRules(istioRules)} rules in ${istioTables.join(', ')}; ours ${ownRules(expected)}`);
  }
  for (const [who, ns] of [['floor', f], ['seed-era', s]] as const) {
    const got = await saved(node, ns);
    if (got !== expected) throw new Error(`${who} programmed different rules:\n${got}\nexpected:\n${expected}`);
  }
  await mustSucceed(node, 'istio-cni DEL', pluginCommand(config, 'DEL', { ...INJECTED, netns: p }));
  if (ownRules(await saved(node, p)) !== 0) throw new Error('istio-cni DEL left rules behind');
  for (const ns of [f, s]) await mustSucceed(node, 'flush', flushCommand(ns, tablesOf(expected)));
  await probeNftables(env);
  return { expected, files, istioTables };
}

/** Native nftables: ADD leaves our table with the outbound redirect, DEL removes it. */
async function probeNftables(env: Env): Promise<void> {
  const call = injectedCall(env, POD_OF.nftables, env.pool[NFTABLES_NETNS]!);
  await mustSucceed(env.node, 'istio-cni ADD, nftables', pluginCommand(nftablesConfig(env.config), 'ADD', call));
  const table = await mustSucceed(env.node, 'nft list table', nftListCommand(call.netns));
  if (!table.includes('redirect to :15001')) throw new Error(`istio-cni ADD (nftables) programmed no outbound redirect:\n${table}`);
  await mustSucceed(env.node, 'istio-cni DEL, nftables', pluginCommand(nftablesConfig(env.config), 'DEL', call));
  if ((await runOnce(env.node, nftListCommand(call.netns))).exit === 0) throw new Error('istio-cni DEL (nftables) left its table behind');
}

/** Whether a pod that passes is decided from runtime-supplied annotations alone (no pod GET). */
async function probeRuntimeAnnotations(env: Env): Promise<{ supported: boolean; note: string }> {
  const before = env.api.podRequests(PLAIN.namespace, PLAIN.name).length;
  await mustSucceed(env.node, 'pass-through ADD with runtime annotations', pluginCommand(env.config, 'ADD', { ...PLAIN, netns: env.pool[3]!, runtimeAnnotations: PLAIN_ANNOTATIONS }));
  const gets = env.api.podRequests(PLAIN.namespace, PLAIN.name).length - before;
  return gets === 0
    ? { supported: true, note: 'supported: a non-injected pod is decided with no API request' }
    : { supported: false, note: `not supported yet: the plugin still made ${gets} pod GET(s) when runtimeConfig carried the annotations` };
}

function single(key: string, label: string, samples: StepSamples): Omit<Single, 'peakAnonMiB'> {
  const ms = samples.wallNs.map(nsToMs);
  const out: Omit<Single, 'peakAnonMiB'> = {
    key,
    label,
    medianMs: median(ms),
    p10Ms: percentile(ms, 10),
    p90Ms: percentile(ms, 90),
    cpuMs: median(samples.cpuNs.map(nsToMs)),
    runs: samples.wallNs.length,
    failures: samples.failures,
    peakRssMiB: kibToMib(Math.max(0, ...samples.maxRssKiB)),
    medianRssMiB: kibToMib(median(samples.maxRssKiB)),
  };
  if (samples.firstFailure) out.firstFailure = `${samples.firstFailure.stdout ?? ''}${samples.firstFailure.stderr ?? ''}`.slice(0, 500);
  return out;
}

async function sideBySide(env: Env, files: { restore: string; perRule: string }, expected: string, istioTables: string[], annotations: boolean): Promise<{ singles: Single[]; podGets: Record<string, number> }> {
  const { node, config, pool } = env;
  const [p, f, s, x, i] = pool as [Netns, Netns, Netns, Netns, Netns];
  const tables = tablesOf(expected);
  const injected = injectedCall(env, INJECTED.name, p);
  const labelled: Array<{ key: string; label: string; step: Step }> = [];
  // The subjects, one run each per round in this order; a new subject is one more measure() line.
  const measure = (key: string, label: string, command: Command) => labelled.push({ key, label, step: { ...command, name: key, measure: true } });
  const cleanup = (name: string, command: Command) => labelled.push({ key: '', label: '', step: { ...command, name, measure: false } });
  measure('inject-add', 'istio-cni ADD, injected pod: direct pod GET + one iptables-restore', pluginCommand(config, 'ADD', injected));
  measure('check', 'istio-cni CHECK, injected pod (direct pod GET)', pluginCommand(config, 'CHECK', injected));
  measure('del', 'istio-cni DEL, injected pod', pluginCommand(config, 'DEL', injected));
  const nftables = injectedCall(env, POD_OF.nftables, pool[NFTABLES_NETNS]!);
  measure('inject-add-nftables', 'istio-cni ADD, injected pod, native nftables: direct pod GET + one nft -f', pluginCommand(nftablesConfig(config), 'ADD', nftables));
  measure('del-nftables', 'istio-cni DEL, injected pod, native nftables', pluginCommand(nftablesConfig(config), 'DEL', nftables));
  measure('inject-add-cache', 'istio-cni ADD, injected pod: node-local pod cache + one iptables-restore', pluginCommand(config, 'ADD', injected, PLUGIN, config.cachedEntry));
  cleanup('DEL after the cached ADD', pluginCommand(config, 'DEL', injected));
  if (env.istio !== undefined) {
    measure('istio', 'Istio\'s own istio-cni (1.31-dev) ADD, injected pod: client-go pod GET + iptables-restore', istioCommand(config, 'ADD', injectedCall(env, POD_OF.istio, i), env.istio));
    cleanup('flush Istio\'s netns', flushCommand(i, istioTables));
  }
  measure('floor', '(b) floor: Go client, pod GET + one nsenter iptables-restore', floorCommand(config, injectedCall(env, POD_OF.floor, f), files.restore));
  cleanup('flush floor netns', flushCommand(f, tables));
  measure('seed-era', '(a) seed-era: Go client, pod GET + one nsenter iptables per rule', seedCommand(config, injectedCall(env, POD_OF.seed, s), files.perRule));
  cleanup('flush seed-era netns', flushCommand(s, tables));
  measure('del-gone', 'istio-cni DEL, netns gone (containerd\'s second DEL)', pluginCommand(config, 'DEL', { ...INJECTED, netns: { name: 'gone', path: '' } }));
  measure('pass-ns', 'istio-cni ADD, pass-through (excluded namespace, no API call)', pluginCommand(config, 'ADD', { namespace: 'kube-system', name: 'coredns-0', netns: x }));
  measure('pass-api', 'istio-cni ADD, pass-through decided by the pod GET', pluginCommand(config, 'ADD', { ...PLAIN, netns: x }));
  if (annotations) {
    measure('pass-annotations', 'istio-cni ADD, pass-through (runtime-supplied annotations)', pluginCommand(config, 'ADD', { ...PLAIN, netns: x, runtimeAnnotations: PLAIN_ANNOTATIONS }));
  }
  // Compared builds read their own copy of the pod: the direct subject's GETs stay countable.
  const compared = injectedCall(env, POD_OF.compare, p);
  for (const { label, bin } of COMPARE) {
    measure(`inject-add[${label}]`, `[${label}] istio-cni ADD, injected pod (direct pod GET)`, pluginCommand(config, 'ADD', compared, bin));
    measure(`inject-add-cache[${label}]`, `[${label}] istio-cni ADD, injected pod (pod cache entry)`, pluginCommand(config, 'ADD', compared, bin, config.cachedEntry));
    cleanup(`DEL after [${label}]'s cached ADD`, pluginCommand(config, 'DEL', compared, bin));
    measure(`del[${label}]`, `[${label}] istio-cni DEL`, pluginCommand(config, 'DEL', compared, bin));
    measure(`pass-ns[${label}]`, `[${label}] istio-cni ADD, pass-through (excluded namespace)`, pluginCommand(config, 'ADD', { namespace: 'kube-system', name: 'coredns-0', netns: x }, bin));
    measure(`version[${label}]`, `[${label}] istio-cni VERSION`, versionCommand(bin));
  }
  measure('version', 'istio-cni VERSION', versionCommand());
  measure('bare-runtime', '(c) bare runtime start: node -e 0 (Node 22)', bareRuntimeCommand());
  measure('bare-bun', 'bare Bun start: bun -e 0 (the runtime the executable is compiled with)', bareRuntimeCommand(BARE_BUN));
  log(`side by side: ${labelled.filter((l) => l.step.measure).length} subjects, ${WARMUP} + ${ROUNDS} rounds`);
  const steps = labelled.map((l) => l.step);
  const getsBefore = podGetsBy(env);
  const samples = await runRounds(node, steps, WARMUP, ROUNDS);
  const getsAfter = podGetsBy(env);
  const runs = WARMUP + ROUNDS;
  // Pod GETs per ADD; the direct subject's pod is also read by CHECK, once per round.
  const podGets = {
    'istio-cni, direct GET': (getsAfter.ours - getsBefore.ours) / runs - 1,
    'istio-cni, pod cache': 0,
    floor: (getsAfter.floor - getsBefore.floor) / runs,
    'seed-era': (getsAfter.seed - getsBefore.seed) / runs,
    ...(env.istio === undefined ? {} : { "Istio's istio-cni": (getsAfter.istio - getsBefore.istio) / runs }),
  };
  log(`anonymous RSS, sampled: 1 + ${RSS_ROUNDS} rounds`);
  const anon = await runRounds(node, steps, 1, RSS_ROUNDS, { sampleAnon: true });
  const measured = labelled.filter((l) => l.step.measure);
  const singles = measured.map((l, i) => ({ ...single(l.key, l.label, samples[i]!), peakAnonMiB: kibToMib(Math.max(0, ...anon[i]!.maxAnonKiB)) }));
  return { singles, podGets };
}

function podGetsBy(env: Env): { ours: number; floor: number; seed: number; istio: number } {
  const count = (name: string) => env.api.podRequests(INJECTED.namespace, name).length;
  return { ours: count(INJECTED.name), floor: count(POD_OF.floor), seed: count(POD_OF.seed), istio: count(POD_OF.istio) };
}

async function concurrency(env: Env, files: { restore: string; perRule: string }, expected: string): Promise<ConcurrencyPoint[]> {
  const { node, config, pool } = env;
  const tables = tablesOf(expected);
  const subjects: Array<[string, (call: PodCall) => Command]> = [
    ['istio-cni', (call) => pluginCommand(config, 'ADD', call)],
    ['istio-cni (pod cache)', (call) => pluginCommand(config, 'ADD', call, PLUGIN, config.cachedEntry)],
    ['floor', (call) => floorCommand(config, call, files.restore)],
    ['seed-era', (call) => seedCommand(config, call, files.perRule)],
  ];
  const acc = new Map<string, { totals: number[]; latencies: number[]; cpu: number[]; failures: number; wrong: number; rss: number; firstFailure?: string }>();
  for (let repeat = 0; repeat < REPEATS; repeat++) {
    for (const level of CONCURRENCY) {
      for (const [subject, command] of subjects) {
        const netns = pool.slice(0, level);
        const batch = await runBatch(node, netns.map((ns) => command(injectedCall(env, INJECTED.name, ns))));
        const saves = await runBatch(node, netns.map(saveCommand));
        // A successful ADD must leave exactly the expected rules, a failed one none of ours.
        const wrong = saves.jobs.filter((save, i) => {
          const rules = normalizeSave(save.stdout ?? '');
          return save.exit !== 0 || (batch.jobs[i]!.exit === 0 ? rules !== expected : rules.includes('ISTIO_'));
        }).length;
        const flushed = await runBatch(node, netns.map((ns) => flushCommand(ns, tables)));
        if (flushed.jobs.some((j) => j.exit !== 0)) throw new Error('flushing the pod netns failed after a concurrent batch');
        const key = `${subject}@${level}`;
        const a = acc.get(key) ?? { totals: [], latencies: [], cpu: [], failures: 0, wrong: 0, rss: 0 };
        a.totals.push(nsToMs(batch.totalNs));
        a.latencies.push(...batch.jobs.map((j) => nsToMs(j.wallNs)));
        a.cpu.push(...batch.jobs.map((j) => nsToMs(j.cpuNs)));
        const failed = batch.jobs.filter((j) => j.exit !== 0);
        a.failures += failed.length;
        if (failed[0] && a.firstFailure === undefined) a.firstFailure = `${failed[0].stdout ?? ''}${failed[0].stderr ?? ''}`.trim().slice(0, 400);
        a.wrong += wrong;
        a.rss = Math.max(a.rss, ...batch.jobs.map((j) => j.maxRssKiB));
        acc.set(key, a);
      }
    }
    log(`concurrency: repeat ${repeat + 1}/${REPEATS} done`);
  }
  return [...acc.entries()].map(([key, a]) => {
    const [subject, level] = key.split('@') as [string, string];
    return {
      subject,
      concurrency: Number(level),
      repeats: REPEATS,
      totalMs: median(a.totals),
      p50Ms: percentile(a.latencies, 50),
      p95Ms: percentile(a.latencies, 95),
      maxMs: Math.max(...a.latencies),
      cpuMs: median(a.cpu),
      failures: a.failures,
      wrongRules: a.wrong,
      peakRssMiB: kibToMib(a.rss),
      ...(a.firstFailure === undefined ? {} : { firstFailure: a.firstFailure }),
    };
  }).sort((x, y) => x.concurrency - y.concurrency || x.subject.localeCompare(y.subject));
}

/**
 * ADD time against the number of ports/CIDRs in the traffic annotations, next to the floor
 * restoring the very rules the plugin produced. Runs only when the plugin honours the annotations,
 * which is judged from the rules it programs.
 */
async function scaling(env: Env): Promise<Scaling> {
  const { node, config, pool } = env;
  const [p, f] = pool as [Netns, Netns];
  const probeItems = 3;
  env.api.setPod(scalingPod(probeItems));
  await mustSucceed(node, 'istio-cni ADD with annotations', pluginCommand(config, 'ADD', { namespace: 'default', name: scalingPodName(probeItems), netns: p }));
  const rules = await saved(node, p);
  await mustSucceed(node, 'istio-cni DEL', pluginCommand(config, 'DEL', { namespace: 'default', name: scalingPodName(probeItems), netns: p }));
  const honoured = Object.fromEntries(Object.entries(SCALING_ANNOTATIONS).map(([k, a]) => [k, a.seen.test(rules)]));
  const used = Object.keys(honoured).filter((k) => honoured[k]);
  if (used.length === 0) {
    return { supported: false, honoured, note: 'not supported yet: the plugin ignores the traffic annotations (none of their ports/CIDRs appear in its rules)', points: [] };
  }
  const steps: Step[] = [];
  const counts: number[] = [];
  for (const items of SCALING_ITEMS) {
    env.api.setPod(scalingPod(items));
    const call = { namespace: 'default', name: scalingPodName(items) };
    await mustSucceed(node, `istio-cni ADD, ${items} items`, pluginCommand(config, 'ADD', { ...call, netns: p }));
    const text = await saved(node, p);
    counts.push(ownRules(text));
    await mustSucceed(node, 'istio-cni DEL', pluginCommand(config, 'DEL', { ...call, netns: p }));
    const files = writeRuleFiles(env.dir, scalingPodName(items), text);
    steps.push(
      { ...pluginCommand(config, 'ADD', { ...call, netns: p }), name: `add-${items}`, measure: true },
      { ...pluginCommand(config, 'DEL', { ...call, netns: p }), name: `del-${items}`, measure: false },
      { ...floorCommand(config, { ...call, netns: f }, files.restore), name: `floor-${items}`, measure: true },
      { ...flushCommand(f, tablesOf(text)), name: `flush-${items}`, measure: false },
    );
  }
  log(`annotation scaling: ${SCALING_ITEMS.length} sizes, 2 + ${SCALING_ROUNDS} rounds`);
  const samples = await runRounds(node, steps, 2, SCALING_ROUNDS);
  const points: ScalingPoint[] = SCALING_ITEMS.map((items, i) => ({
    items,
    rules: counts[i]!,
    pluginAddMs: median(samples[2 * i]!.wallNs.map(nsToMs)),
    floorMs: median(samples[2 * i + 1]!.wallNs.map(nsToMs)),
  }));
  const failures = samples.reduce((n, s) => n + s.failures, 0);
  if (failures > 0) throw new Error(`annotation scaling: ${failures} runs failed: ${JSON.stringify(samples.find((s) => s.firstFailure)?.firstFailure)}`);
  return { supported: true, honoured, note: `N items in each of ${used.join(', ')}`, points };
}

function chart(results: Results): Buffer {
  const colors: Record<string, string> = { 'istio-cni': '#1f5fbf', 'istio-cni (pod cache)': '#8e44ad', floor: '#2a9d4b', 'seed-era': '#c0392b' };
  const concurrencySeries: Series[] = Object.keys(colors).flatMap((subject) => {
    const pts = results.concurrency.filter((c) => c.subject === subject);
    return [
      { name: `${subject} p50`, color: colors[subject]!, points: pts.map((c) => [c.concurrency, c.p50Ms] as const) },
      { name: `${subject} p95`, color: colors[subject]!, dashed: true, points: pts.map((c) => [c.concurrency, c.p95Ms] as const) },
    ];
  });
  const scalingPanel = {
    title: 'ADD latency vs annotation size',
    xLabel: 'ports/CIDRs per traffic annotation',
    yLabel: 'median ms',
    xScale: 'linear' as const,
    xTicks: [0, 100, 200, 300, 400, 500],
    series: [
      { name: 'istio-cni ADD', color: colors['istio-cni']!, points: results.scaling.points.map((p) => [p.items, p.pluginAddMs] as const) },
      { name: 'floor (same rules)', color: colors.floor!, points: results.scaling.points.map((p) => [p.items, p.floorMs] as const) },
    ],
    ...(results.scaling.supported ? {} : { message: 'not supported yet: annotations not honoured' }),
  };
  const svg = chartSvg(
    [
      { title: 'ADD latency vs concurrent ADDs', xLabel: 'ADDs started at once (each its own netns)', yLabel: 'ms from common start (log)', xScale: 'log2', yScale: 'log10', xTicks: CONCURRENCY, series: concurrencySeries },
      scalingPanel,
    ],
    `${results.meta.date} · ${results.meta.cpus} CPUs · load ${results.meta.loadBefore} · npm run bench`,
  );
  return renderPng(svg);
}

function updateBenchmarksDoc(table: string): void {
  const path = join(REPO_ROOT, 'docs', 'benchmarks.md');
  const readme = readFileSync(path, 'utf8');
  const start = '<!-- bench:start -->';
  const end = '<!-- bench:end -->';
  const i = readme.indexOf(start);
  const j = readme.indexOf(end);
  if (i < 0 || j < i) throw new Error(`docs/benchmarks.md has no ${start} … ${end} block`);
  writeFileSync(path, `${readme.slice(0, i + start.length)}\n${table}${readme.slice(j)}`);
}

async function main(): Promise<void> {
  const started = Date.now();
  const loadBefore = loadavg()[0]!.toFixed(2);
  await ensureBuilt();
  await buildGoPrograms();
  await dropPageCache([PLUGIN, BARE_NODE, BARE_BUN, ...COMPARE.map((c) => c.bin)]);
  const istio = SKIP.has('istio') ? undefined : await istioPlugin();
  if (istio !== undefined) await dropPageCache([istio]);
  const dir = makeTempDir('icni-bench-');
  const injectedPods = [INJECTED.name, ...Object.values(POD_OF)].map((name) => injectedPod(name, INJECTED.namespace));
  const api = await startFakeKubeApi({ pods: [...injectedPods, plainPod(PLAIN.name, PLAIN.namespace, { metadata: { annotations: PLAIN_ANNOTATIONS } })] });
  const pods = servePodWatch(api);
  const node = await createNetns({ tag: 'bench-node' });
  await api.exposeIn(node);
  const cache = await startPodCache(api, node, dir);
  const pool = await Promise.all(range(Math.max(...CONCURRENCY)).map((i) => createNetns({ tag: `bench-${i}` })));
  // Each pod netns holds the address prevResult names, on an eth0 whose veth peer stays in the same
  // netns (nothing leaves it; this kernel has no dummy links): Istio's istio-iptables refuses a
  // netns without a local address ("no valid local IP address found").
  for (const netns of pool) {
    for (const args of [['link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0peer'], ['addr', 'add', POD_ADDRESS, 'dev', 'eth0'], ['link', 'set', 'eth0', 'up']]) {
      await runOk(nsenterArgv(netns, ['/usr/sbin/ip', ...args]));
    }
  }
  const env: Env = { node, api, pods, config: benchConfig(api, dir, cache.socket), dir, pool, istio };

  const { expected, files, istioTables } = await probe(env);
  const runtimeAnnotations = await probeRuntimeAnnotations(env);
  const { singles, podGets } = await sideBySide(env, files, expected, istioTables, runtimeAnnotations.supported);
  const concurrent = SKIP.has('concurrency') ? [] : await concurrency(env, files, expected);
  const scaled = SKIP.has('scaling') ? { supported: false, honoured: {}, note: 'skipped (--skip scaling)', points: [] } : await scaling(env);
  const cacheSeconds = (Date.now() - cache.started) / 1000;
  const load = loadModel(podGets, { lists: pods.lists().length, watches: pods.watches().length, seconds: cacheSeconds });

  const meta: JsonObject & Record<string, string | number> = {
    date: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
    cpus: cpus().length,
    loadBefore,
    loadAfter: loadavg()[0]!.toFixed(2),
    rounds: ROUNDS,
    warmup: WARMUP,
    concurrencyRepeats: REPEATS,
    pluginBytes: statSync(PLUGIN).size,
    durationS: Math.round((Date.now() - started) / 1000),
  };
  const partial = { meta, single: singles, ratios: { ...ratios(singles), ...backendRatios(singles) }, runtimeAnnotations, concurrency: concurrent, scaling: scaled, load };
  const results: Results = { ...partial, targets: targets(partial) };
  const table = markdown(results);
  writeFileSync(join(OUT_DIR, 'results.json'), JSON.stringify(results, (_, v) => (typeof v === 'number' && !Number.isInteger(v) ? round(v, 3) : v), 2) + '\n');
  writeFileSync(join(OUT_DIR, 'results.md'), table);
  writeFileSync(join(OUT_DIR, 'chart.png'), chart(results));
  if (opt['update-docs']) updateBenchmarksDoc(table);
  process.stdout.write(table);
  log(`wrote ${join(OUT_DIR, 'results.json')}, results.md, chart.png in ${meta.durationS} s`);
}

try {
  await main();
} finally {
  await cleanupAll();
}
