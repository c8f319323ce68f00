/**
 * The differential campaign: generated pods (fast-check, seed printed) through our ADD and Istio's,
 * judged against the listed differences (listed.ts); with the istio-current profile each pod once more
 * on native nftables, beside Istio's plugin in its native nftables mode. Used by test/compat/compat.test.ts (a few hundred
 * pods in `npm test`) and scripts/compat.ts (`npm run compat`, >= 2,000).
 */
import fc from 'fast-check';
import { differences, runCase, runNftablesCase, runPilotAgentCase, startCompat, type Backend, type CaseResult, type CompatEnv, type NftablesCaseResult, type NodeCapture, type Profile } from './differential.ts';
import { listedNftablesDifference, listedRuleDifference, REFUSALS, SEED_IPV6_ONLY_OURS } from './listed.ts';
import { nftStateDifferences } from './nft-state.ts';
import { generatedPod, nodeCapture, type GeneratedPod } from './pods.ts';

export interface CompatOptions {
  /** Generated pods; each runs on one backend (alternating), through Istio once and through each profile of ours. */
  runs: number;
  profiles: Profile[];
  concurrency?: number;
  seed?: number;
  progress?: (done: number, report: CompatReport) => void;
}

/** The iptables backends, and native nftables. */
export type TalliedBackend = Backend | 'nftables';

export interface ProfileTally {
  /** Pods both accepted, by backend: their netns compared. */
  compared: Record<TalliedBackend, number>;
  /** …of which the netns held exactly the same. */
  identical: Record<TalliedBackend, number>;
  bothRefused: number;
  /** Listed differences seen, by id, with how often. */
  listed: Map<string, number>;
  /** Anything not listed: each a failure. */
  unlisted: string[];
}

export interface CompatReport {
  seed: number;
  runs: number;
  ms: number;
  profiles: Map<Profile, ProfileTally>;
  /** istio-current with node-wide capture settings against `pilot-agent istio-iptables` given the same as flags. */
  pilotAgent: ProfileTally;
  /** istio-current on native nftables against Istio's plugin with `native_nftables`. */
  nftables: ProfileTally;
}

const tally = (): ProfileTally => ({ compared: { nft: 0, legacy: 0, nftables: 0 }, identical: { nft: 0, legacy: 0, nftables: 0 }, bothRefused: 0, listed: new Map(), unlisted: [] });
const count = (map: Map<string, number>, key: string) => map.set(key, (map.get(key) ?? 0) + 1);

function describeCase(r: CaseResult | NftablesCaseResult): string {
  return JSON.stringify({ profile: r.profile, backend: 'backend' in r ? r.backend : 'nftables', pod: r.pod });
}

/**
 * A pod one side or both refused: listed when only one side did, for a listed reason; counted when
 * both did. True when the pod was refused (nothing more to compare).
 */
function judgeRefusal(r: CaseResult | NftablesCaseResult, t: ProfileTally): boolean {
  const { ours, istio } = r;
  if (ours.accepted !== istio.accepted) {
    const refusedBy = ours.accepted ? 'istio' : 'ours';
    const tag = r.pod.tags.find((t) => REFUSALS[r.profile][t]?.refusedBy === refusedBy);
    if (tag === undefined) t.unlisted.push(`only ${refusedBy === 'ours' ? 'we' : 'Istio'} refused: ${ours.error || istio.error}\n  ${describeCase(r)}`);
    else count(t.listed, `refused:${tag}`);
    return true;
  }
  if (!ours.accepted) t.bothRefused += 1;
  return !ours.accepted;
}

/** Folds one pod's outcome for one profile into the tally: anything not listed is recorded as unlisted. */
export function judge(r: CaseResult, t: ProfileTally): void {
  const { ours, istio } = r;
  if (!ours.accepted && /ISTIO_|^-A /m.test(ours.state['iptables-save'] + ours.state['ip6tables-save'])) {
    t.unlisted.push(`refused, but rules were left in the netns: ${describeCase(r)}\n${ours.state['iptables-save']}`);
  }
  if (judgeRefusal(r, t)) return;
  t.compared[r.backend] += 1;
  let found = differences(ours.state, istio.state);
  if (found.length === 0) {
    t.identical[r.backend] += 1;
    return;
  }
  const ipv6 = (side: typeof ours) => side.state['ip6tables-save'].includes('ISTIO_');
  if (r.profile === 'seed' && ipv6(ours) && !ipv6(istio) && SEED_IPV6_ONLY_OURS.when!(r.pod)) {
    count(t.listed, SEED_IPV6_ONLY_OURS.id);
    found = found.filter((d) => !SEED_IPV6_ONLY_OURS.pattern.test(d.where));
  }
  const unexplained = found.filter((d) => {
    const id = r.profile === 'seed' ? listedRuleDifference(d, r.pod) : undefined;
    if (id !== undefined) count(t.listed, id);
    return id === undefined;
  });
  if (unexplained.length > 0) {
    t.unlisted.push(`${unexplained.map((d) => `${d.where} ${d.kind}: ${d.line}`).join('\n  ')}\n  ${describeCase(r)}\n--- ours\n${ours.state['iptables-save']}\n${ours.state['ip6tables-save']}\n--- istio\n${istio.state['iptables-save']}\n${istio.state['ip6tables-save']}`);
  }
}

/** The same for one pod on native nftables: its inet tables (nft-state.ts) and its routing compared. */
export function judgeNftables(r: NftablesCaseResult, t: ProfileTally): void {
  const { ours, istio } = r;
  if (!ours.accepted && ours.state.chains.size > 0) t.unlisted.push(`refused, but tables were left in the netns: ${describeCase(r)}\n${[...ours.state.chains.keys()].join(' ')}`);
  if (judgeRefusal(r, t)) return;
  t.compared.nftables += 1;
  const found = [...nftStateDifferences(ours.state, istio.state), ...differences(ours.routing, istio.routing)];
  if (found.length === 0) {
    t.identical.nftables += 1;
    return;
  }
  const unexplained = found.filter((d) => {
    const id = d.kind === 'hook' || d.where.startsWith('ip ') ? undefined : listedNftablesDifference(d, r.pod, found);
    if (id !== undefined) count(t.listed, id);
    return id === undefined;
  });
  if (unexplained.length > 0) {
    const rules = (side: typeof ours) => [...side.state.rules].map(([chain, rules]) => `${chain}:\n${rules.map((rule) => `  ${rule.text}`).join('\n')}`).join('\n');
    t.unlisted.push(`${unexplained.map((d) => `${d.where} ${d.kind}: ${d.line}`).join('\n  ')}\n  ${describeCase(r)}\n--- ours\n${rules(ours)}\n--- istio\n${rules(istio)}`);
  }
}

async function oneCase(env: CompatEnv, [pod, capture]: [GeneratedPod, NodeCapture], index: number, profiles: Profile[], report: CompatReport): Promise<void> {
  const backend: Backend = index % 2 === 0 ? 'nft' : 'legacy';
  for (const result of await runCase(env, pod, profiles, backend)) judge(result, report.profiles.get(result.profile)!);
  if (profiles.includes('istio-current')) judgeNftables(await runNftablesCase(env, pod, 'istio-current'), report.nftables);
  const withFlags = await runPilotAgentCase(env, pod, capture, backend);
  if (withFlags === undefined) return;
  const t = report.pilotAgent;
  const found = differences(withFlags.ours.state, withFlags.istio.state);
  if (!withFlags.ours.accepted || !withFlags.istio.accepted || found.length > 0) {
    const what = withFlags.ours.accepted && withFlags.istio.accepted ? found.map((d) => `${d.where} ${d.kind}: ${d.line}`).join('\n  ') : `ours: ${withFlags.ours.error || 'accepted'}; pilot-agent: ${withFlags.istio.error || 'accepted'}`;
    t.unlisted.push(`pilot-agent istio-iptables ${withFlags.flags.join(' ')}\n  ${what}\n  ${JSON.stringify({ capture, pod })}\n--- its dry run\n${withFlags.dryRun ?? ''}`);
    return;
  }
  t.compared[backend] += 1;
  t.identical[backend] += 1;
}

export async function runCompat(opts: CompatOptions): Promise<CompatReport> {
  const seed = opts.seed ?? Date.now() % 2 ** 31;
  const pods = fc.sample(fc.tuple(generatedPod, nodeCapture), { seed, numRuns: opts.runs });
  const env = await startCompat();
  const report: CompatReport = { seed, runs: 0, ms: 0, profiles: new Map(opts.profiles.map((p) => [p, tally()])), pilotAgent: tally(), nftables: tally() };
  const started = Date.now();
  let next = 0;
  const worker = async () => {
    while (next < pods.length) {
      const index = next++;
      await oneCase(env, pods[index]!, index, opts.profiles, report);
      report.runs += 1;
      opts.progress?.(report.runs, report);
    }
  };
  try {
    await Promise.all(Array.from({ length: opts.concurrency ?? 2 }, worker));
  } finally {
    await env.api.close();
  }
  report.ms = Date.now() - started;
  return report;
}
