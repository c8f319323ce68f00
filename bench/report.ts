// The bench's findings as data (results.json), as a markdown table (results.md, README) and as
// the targets of issue 8, each met or not with its figure.
import { round } from './stats.ts';

export interface Single {
  key: string;
  label: string;
  medianMs: number;
  p10Ms: number;
  p90Ms: number;
  /** Median user + system CPU: what the run costs the node, less sensitive to other load. */
  cpuMs: number;
  runs: number;
  failures: number;
  /** ru_maxrss: includes the executable's file pages (shared page cache). */
  peakRssMiB: number;
  medianRssMiB: number;
  /** Largest RssAnon sampled each millisecond over a few extra runs: the memory each run adds. */
  peakAnonMiB: number;
  firstFailure?: string;
}

export interface ConcurrencyPoint {
  subject: string;
  concurrency: number;
  repeats: number;
  /** Median over the repeats of the batch's wall time. */
  totalMs: number;
  /** Over every job of every repeat, from the common start. */
  p50Ms: number;
  p95Ms: number;
  maxMs: number;
  /** Median user + system CPU per ADD. */
  cpuMs: number;
  failures: number;
  /** Pod netns left with other rules than the expected set (success) or with any of ours (failure). */
  wrongRules: number;
  peakRssMiB: number;
  firstFailure?: string;
}

export interface ScalingPoint {
  items: number;
  /** Rules the plugin programmed (all tables). */
  rules: number;
  pluginAddMs: number;
  floorMs: number;
}

export interface Scaling {
  supported: boolean;
  /** Per annotation: whether its values showed up in the rules. */
  honoured: Record<string, boolean>;
  note: string;
  points: ScalingPoint[];
}

export interface Target {
  target: string;
  figure: string;
  met: boolean | undefined;
}

/** API requests per pod start measured here, and what they come to for a large cluster. */
export interface LoadModel {
  /** Pod GETs per injected pod's ADD, measured on the fake API server, per subject. */
  podGetsPerStart: Record<string, number>;
  /** The pod cache's own requests over the bench: lists, watches, and how long it ran. */
  cache: { lists: number; watches: number; seconds: number };
  nodes: number;
  podStartsPerNodePerMinute: number;
  /** Per subject: requests per second at the API server for pod starts, cluster-wide. */
  requestsPerSecond: Record<string, number>;
  /** Long-running watches the cache adds: one per node. */
  cacheWatches: number;
  /** Watch requests per second cluster-wide from the cache resuming its watches (each ends after WATCH_SECONDS). */
  cacheWatchRequestsPerSecond: number;
}

export interface Results {
  meta: Record<string, string | number>;
  single: Single[];
  ratios: Record<string, number>;
  runtimeAnnotations: { supported: boolean; note: string };
  concurrency: ConcurrencyPoint[];
  scaling: Scaling;
  load: LoadModel;
  targets: Target[];
}

const MODEL_NODES = 5_000;
const MODEL_STARTS_PER_NODE_PER_MINUTE = 30;
/** The cache asks the API server to end each watch after this long (src/podcache/watch.ts), then resumes it. */
const CACHE_WATCH_SECONDS = 300;

export function loadModel(podGetsPerStart: Record<string, number>, cache: LoadModel['cache']): LoadModel {
  const startsPerSecond = (MODEL_NODES * MODEL_STARTS_PER_NODE_PER_MINUTE) / 60;
  return {
    podGetsPerStart: Object.fromEntries(Object.entries(podGetsPerStart).map(([k, v]) => [k, round(v, 2)])),
    cache,
    nodes: MODEL_NODES,
    podStartsPerNodePerMinute: MODEL_STARTS_PER_NODE_PER_MINUTE,
    requestsPerSecond: Object.fromEntries(Object.entries(podGetsPerStart).map(([k, v]) => [k, round(v * startsPerSecond, 1)])),
    cacheWatches: MODEL_NODES,
    cacheWatchRequestsPerSecond: round(MODEL_NODES / CACHE_WATCH_SECONDS, 1),
  };
}

function byKey(single: readonly Single[], key: string): Single {
  const s = single.find((x) => x.key === key);
  if (s === undefined) throw new Error(`no measurement ${key}`);
  return s;
}

/** Ratios of medians measured side by side in the same rounds. */
export function ratios(single: readonly Single[]): Record<string, number> {
  const m = (key: string) => byKey(single, key).medianMs;
  const has = (key: string) => single.some((s) => s.key === key);
  const out: Record<string, number> = {
    'inject ADD (direct GET) / (floor + bare runtime)': m('inject-add') / (m('floor') + m('bare-runtime')),
    'inject ADD (pod cache) / (floor + bare runtime)': m('inject-add-cache') / (m('floor') + m('bare-runtime')),
    'seed-era / inject ADD (direct GET)': m('seed-era') / m('inject-add'),
    'seed-era / inject ADD (pod cache)': m('seed-era') / m('inject-add-cache'),
    'inject ADD (direct GET) / floor': m('inject-add') / m('floor'),
    'pass-through ADD (excluded namespace) / bare runtime': m('pass-ns') / m('bare-runtime'),
    'DEL, netns gone / bare runtime': m('del-gone') / m('bare-runtime'),
    'VERSION / bare runtime': m('version') / m('bare-runtime'),
  };
  if (has('istio')) {
    out["inject ADD (direct GET) / Istio's istio-cni ADD"] = m('inject-add') / m('istio');
    out["inject ADD (pod cache) / Istio's istio-cni ADD"] = m('inject-add-cache') / m('istio');
  }
  if (has('pass-annotations')) {
    out['pass-through ADD (runtime annotations) / bare runtime'] = m('pass-annotations') / m('bare-runtime');
  }
  for (const k of Object.keys(out)) out[k] = round(out[k]!, 2);
  return out;
}

export function targets(r: Omit<Results, 'targets'>): Target[] {
  const m = (key: string) => byKey(r.single, key).medianMs;
  const has = (key: string) => r.single.some((s) => s.key === key);
  const bare = m('bare-runtime');
  const floorPlusBare = m('floor') + bare;
  const passKey = r.runtimeAnnotations.supported ? 'pass-annotations' : 'pass-ns';
  const pluginKeys = ['inject-add', 'inject-add-cache', 'check', 'del', 'del-gone', 'pass-ns', 'pass-api', 'pass-annotations', 'version'];
  const plugin = r.single.filter((s) => pluginKeys.includes(s.key));
  const pluginRuns = r.concurrency.filter((c) => c.subject.startsWith('istio-cni'));
  const peakRss = Math.max(...plugin.map((s) => s.peakRssMiB), ...pluginRuns.map((c) => c.peakRssMiB));
  const peakAnon = Math.max(...plugin.map((s) => s.peakAnonMiB));
  const at64 = pluginRuns.filter((c) => c.concurrency === 64);
  const failures64 = at64.reduce((n, c) => n + c.failures, 0);
  const wrong64 = at64.reduce((n, c) => n + c.wrongRules, 0);
  const first = r.scaling.points[0];
  const last = r.scaling.points[r.scaling.points.length - 1];
  const scalingRatio = first && last ? last.pluginAddMs / first.pluginAddMs : undefined;
  const ms = (key: string) => `${round(m(key))} ms`;
  const startTarget = (key: string, what: string): Target => ({
    target: `${what} ≤ 1.2 × bare runtime start`,
    figure: `${ms(key)} vs ${round(bare)} ms: ×${round(m(key) / bare, 2)}`,
    met: m(key) <= 1.2 * bare,
  });
  return [
    ...(['inject-add', 'inject-add-cache'] as const).map((key) => ({
      target: `injected ADD (${key === 'inject-add' ? 'direct pod GET' : 'pod cache'}) ≤ 1.2 × (Go floor + bare runtime start)`,
      figure: `${ms(key)} vs ${round(floorPlusBare)} ms (${round(m('floor'))} + ${round(bare)}): ×${round(m(key) / floorPlusBare, 2)}`,
      met: m(key) <= 1.2 * floorPlusBare,
    })),
    ...(['inject-add', 'inject-add-cache'] as const).map((key) => ({
      target: `injected ADD (${key === 'inject-add' ? 'direct pod GET' : 'pod cache'}) ≥ 1.3× faster than the seed-era way`,
      figure: `${ms('seed-era')} / ${ms(key)}: ×${round(m('seed-era') / m(key), 2)}`,
      met: m('seed-era') >= 1.3 * m(key),
    })),
    ...(has('istio')
      ? (['inject-add', 'inject-add-cache'] as const).map((key) => ({
          target: `injected ADD (${key === 'inject-add' ? 'direct pod GET' : 'pod cache'}) not slower than Istio's own istio-cni`,
          figure: `${ms(key)} vs ${ms('istio')}: ×${round(m(key) / m('istio'), 2)}`,
          met: m(key) <= m('istio'),
        }))
      : [{ target: "injected ADD not slower than Istio's own istio-cni", figure: 'not measured (--skip istio)', met: undefined }]),
    startTarget('version', 'VERSION'),
    startTarget('del-gone', 'DEL of a gone netns'),
    startTarget(passKey, `pass-through ADD (${r.runtimeAnnotations.supported ? 'runtime annotations' : 'excluded namespace'})`),
    {
      target: 'peak RSS ≤ 48 MiB for any verb',
      figure: `${round(peakRss)} MiB, largest plugin run (of which anonymous: ${round(peakAnon)} MiB; the rest is the executable's shared page cache)`,
      met: peakRss <= 48,
    },
    {
      target: '64 concurrent ADDs, 0 failures',
      figure: at64.length === 0 ? 'not measured' : `${failures64} failed and ${wrong64} with wrong rules of ${at64.reduce((n, c) => n + c.repeats * 64, 0)} (direct GET and pod cache)`,
      met: at64.length === 0 ? undefined : failures64 === 0 && wrong64 === 0,
    },
    {
      target: 'ADD within +10% from 1 to 500 annotation items',
      figure: scalingRatio === undefined || !first || !last
        ? r.scaling.note
        : `${round(first.pluginAddMs)} ms at ${first.items} → ${round(last.pluginAddMs)} ms at ${last.items}: ×${round(scalingRatio, 2)} (floor ×${round(last.floorMs / first.floorMs, 2)})`,
      met: scalingRatio === undefined ? undefined : scalingRatio <= 1.1,
    },
  ];
}

const verdict = (met: boolean | undefined) => (met === undefined ? 'n/a' : met ? 'met' : 'NOT met');

export function markdown(r: Results): string {
  const lines: string[] = [];
  lines.push(`Measured ${r.meta.date} on ${r.meta.cpus} CPUs (load average ${r.meta.loadBefore} before, ${r.meta.loadAfter} after), ` +
    `${r.meta.rounds} interleaved rounds after ${r.meta.warmup} warm-up rounds; whole processes, nft backend, ` +
    `no NODE_EXTRA_CA_CERTS; bench took ${r.meta.durationS} s.`);
  lines.push('');
  lines.push('| run | median ms | p10 ms | p90 ms | CPU ms | peak RSS MiB (anon) | runs (failed) |');
  lines.push('| --- | ---: | ---: | ---: | ---: | ---: | ---: |');
  for (const s of r.single) {
    lines.push(`| ${s.label} | ${round(s.medianMs)} | ${round(s.p10Ms)} | ${round(s.p90Ms)} | ${round(s.cpuMs)} | ${round(s.peakRssMiB)} (${round(s.peakAnonMiB)}) | ${s.runs} (${s.failures}) |`);
  }
  lines.push('');
  lines.push('| ratio of medians | value |');
  lines.push('| --- | ---: |');
  for (const [k, v] of Object.entries(r.ratios)) lines.push(`| ${k} | ${v} |`);
  lines.push('');
  lines.push('| concurrent ADDs | subject | total ms | p50 ms | p95 ms | max ms | CPU ms per ADD | failed | wrong or partial rules |');
  lines.push('| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
  for (const c of r.concurrency) {
    lines.push(`| ${c.concurrency} | ${c.subject} | ${round(c.totalMs)} | ${round(c.p50Ms)} | ${round(c.p95Ms)} | ${round(c.maxMs)} | ${round(c.cpuMs)} | ${c.failures} | ${c.wrongRules} |`);
  }
  for (const c of r.concurrency.filter((x) => x.firstFailure !== undefined)) {
    lines.push('', `First failure, ${c.subject} at ${c.concurrency}: \`${c.firstFailure!.replace(/\s+/g, ' ')}\``);
  }
  lines.push('');
  if (r.scaling.supported) {
    lines.push(`Annotation scaling (${r.scaling.note}):`);
    lines.push('');
    lines.push('| items per annotation | rules | istio-cni ADD ms | floor ms | difference ms |');
    lines.push('| ---: | ---: | ---: | ---: | ---: |');
    for (const p of r.scaling.points) {
      lines.push(`| ${p.items} | ${p.rules} | ${round(p.pluginAddMs)} | ${round(p.floorMs)} | ${round(p.pluginAddMs - p.floorMs)} |`);
    }
  } else {
    lines.push(`Annotation scaling: ${r.scaling.note}`);
  }
  lines.push('');
  lines.push(`Pass-through from runtime-supplied annotations: ${r.runtimeAnnotations.note}`);
  lines.push('');
  const l = r.load;
  lines.push(`API load (pod GETs per injected pod start measured on the fake API server; the pod cache made ${l.cache.lists} list(s) and ${l.cache.watches} watch request(s) in ${Math.round(l.cache.seconds)} s), and what it comes to for ${l.nodes.toLocaleString('en')} nodes starting ${l.podStartsPerNodePerMinute} pods a minute each (${round((l.nodes * l.podStartsPerNodePerMinute) / 60)} pod starts/s):`);
  lines.push('');
  lines.push('| subject | pod GETs per pod start | requests/s at the API server | long-running watches |');
  lines.push('| --- | ---: | ---: | ---: |');
  for (const [subject, gets] of Object.entries(l.podGetsPerStart)) {
    const cached = subject.includes('cache');
    const rps = cached ? `${l.requestsPerSecond[subject]} + ${l.cacheWatchRequestsPerSecond} watch renewals` : `${l.requestsPerSecond[subject]}`;
    lines.push(`| ${subject} | ${gets} | ${rps} | ${cached ? `${l.cacheWatches.toLocaleString('en')} (one per node)` : '0'} |`);
  }
  lines.push('');
  lines.push('| target | figure | |');
  lines.push('| --- | --- | --- |');
  for (const t of r.targets) lines.push(`| ${t.target} | ${t.figure} | ${verdict(t.met)} |`);
  return lines.join('\n') + '\n';
}

/** Native nftables beside iptables-restore, when the run measured it: ratios of medians of the same rounds. */
export function backendRatios(single: readonly Single[]): Record<string, number> {
  const m = (key: string) => byKey(single, key).medianMs;
  if (!single.some((s) => s.key === 'inject-add-nftables')) return {};
  return {
    'inject ADD, native nftables / inject ADD, iptables-restore': round(m('inject-add-nftables') / m('inject-add'), 2),
    'DEL, native nftables / DEL, iptables': round(m('del-nftables') / m('del'), 2),
  };
}
