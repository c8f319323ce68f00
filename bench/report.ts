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

export interface Results {
  meta: Record<string, string | number>;
  single: Single[];
  ratios: Record<string, number>;
  runtimeAnnotations: { supported: boolean; note: string };
  concurrency: ConcurrencyPoint[];
  scaling: Scaling;
  targets: Target[];
}

function byKey(single: readonly Single[], key: string): Single {
  const s = single.find((x) => x.key === key);
  if (s === undefined) throw new Error(`no measurement ${key}`);
  return s;
}

/** Ratios of medians measured side by side in the same rounds. */
export function ratios(single: readonly Single[]): Record<string, number> {
  const m = (key: string) => byKey(single, key).medianMs;
  const out: Record<string, number> = {
    'inject ADD / (floor + bare runtime)': m('inject-add') / (m('floor') + m('bare-runtime')),
    'inject ADD / seed-era': m('inject-add') / m('seed-era'),
    'inject ADD / floor': m('inject-add') / m('floor'),
    'pass-through ADD (excluded namespace) / bare runtime': m('pass-ns') / m('bare-runtime'),
    'VERSION / bare runtime': m('version') / m('bare-runtime'),
  };
  if (single.some((s) => s.key === 'pass-annotations')) {
    out['pass-through ADD (runtime annotations) / bare runtime'] = m('pass-annotations') / m('bare-runtime');
  }
  for (const k of Object.keys(out)) out[k] = round(out[k]!, 2);
  return out;
}

export function targets(r: Omit<Results, 'targets'>): Target[] {
  const m = (key: string) => byKey(r.single, key).medianMs;
  const floorPlusBare = m('floor') + m('bare-runtime');
  const passKey = r.runtimeAnnotations.supported ? 'pass-annotations' : 'pass-ns';
  const passWhat = r.runtimeAnnotations.supported ? 'runtime annotations' : 'excluded namespace; runtime annotations not supported yet';
  const pluginKeys = ['inject-add', 'check', 'del', 'pass-ns', 'pass-api', 'pass-annotations', 'version'];
  const plugin = r.single.filter((s) => pluginKeys.includes(s.key));
  const peakRss = Math.max(...plugin.map((s) => s.peakRssMiB), ...r.concurrency.filter((c) => c.subject === 'istio-cni').map((c) => c.peakRssMiB));
  const peakAnon = Math.max(...plugin.map((s) => s.peakAnonMiB));
  const at64 = r.concurrency.filter((c) => c.subject === 'istio-cni' && c.concurrency === 64);
  const failures64 = at64.reduce((n, c) => n + c.failures, 0);
  const wrong64 = at64.reduce((n, c) => n + c.wrongRules, 0);
  const first = r.scaling.points[0];
  const last = r.scaling.points[r.scaling.points.length - 1];
  const scalingRatio = first && last ? last.pluginAddMs / first.pluginAddMs : undefined;
  return [
    {
      target: 'injected ADD ≤ 1.5 × (Go floor + bare runtime start)',
      figure: `${round(m('inject-add'))} ms vs ${round(floorPlusBare)} ms (${round(m('floor'))} + ${round(m('bare-runtime'))}): ×${round(m('inject-add') / floorPlusBare, 2)}`,
      met: m('inject-add') <= 1.5 * floorPlusBare,
    },
    {
      target: 'injected ADD faster than the seed-era way',
      figure: `${round(m('inject-add'))} ms vs ${round(m('seed-era'))} ms: ×${round(m('inject-add') / m('seed-era'), 2)}`,
      met: m('inject-add') < m('seed-era'),
    },
    {
      target: 'pass-through ADD ≤ 1.3 × bare runtime start',
      figure: `${round(m(passKey))} ms vs ${round(m('bare-runtime'))} ms: ×${round(m(passKey) / m('bare-runtime'), 2)} (${passWhat})`,
      met: m(passKey) <= 1.3 * m('bare-runtime'),
    },
    {
      target: 'peak RSS ≤ 64 MiB',
      figure: `${round(peakRss)} MiB, largest plugin run (of which anonymous: ${round(peakAnon)} MiB; the rest is the executable's shared page cache)`,
      met: peakRss <= 64,
    },
    {
      target: '64 concurrent ADDs, 0 failures',
      figure: at64.length === 0 ? 'not measured' : `${failures64} failed and ${wrong64} with wrong rules of ${at64.reduce((n, c) => n + c.repeats * 64, 0)}`,
      met: at64.length === 0 ? undefined : failures64 === 0 && wrong64 === 0,
    },
    {
      target: 'ADD flat (within 10%) from 1 to 500 annotation items',
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
