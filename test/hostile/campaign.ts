/**
 * Runs generated cases through the built executable, several at once: each worker owns one pod netns
 * that it reuses (reset between cases when something of ours is left), all share one node netns that
 * the plugin runs in and one fake API server that serves each case its own pod.
 * Used by test/e2e/hostile-input.test.ts (a few hundred cases) and scripts/fuzz.ts (>= 10,000).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import * as h from '../harness/index.ts';
import { fuzzCase, TRAFFIC_ANNOTATION_KEYS, type FuzzCase, type PodRule } from './generators.ts';
import { classify, FULL_NFT_RULE_SET, FULL_RULE_SET, installFullRuleSet, NOTHING, ourState, POD_RULE_MARKER, processProblems, resetNat, specErrorProblems, tableRecords, type NetnsState } from './oracle.ts';

export interface CampaignOptions {
  /** How many invocations in all. */
  runs: number;
  /** How many run at once (each on its own pod netns). */
  concurrency?: number;
  seed?: number;
  /** Called after each batch with the number of cases done. */
  progress?: (done: number) => void;
}

export interface CampaignReport {
  runs: number;
  seed: number;
  ms: number;
  /** How the runs ended: exit 0, or the SPEC error code. */
  outcomes: Map<string, number>;
}

interface Env {
  api: h.FakeKubeApi;
  node: h.Netns;
  workers: h.Netns[];
  dir: string;
  logDir: string;
  placeholders: [string, string][];
  paths: { file: string; dir: string };
}

let podCounter = 0;

async function makeEnv(concurrency: number): Promise<Env> {
  const api = await h.startFakeKubeApi();
  const node = await h.createNetns({ tag: 'fz-node' });
  await api.exposeIn(node);
  const workers = await Promise.all(Array.from({ length: concurrency }, () => h.createNetns({ tag: 'fz-pod' })));
  const dir = h.makeTempDir('icni-fuzz-');
  const logDir = join(dir, 'logs');
  mkdirSync(logDir);
  const kubeconfig = api.writeKubeconfig(dir, { auth: 'token', caMode: 'data' });
  const bad = join(dir, 'bad-kubeconfig');
  writeFileSync(bad, `clusters: [{name: k, cluster: {server: "https://127.0.0.1:${api.port}"}}]\nusers: [{name: u, user: {token: ${api.token}\n`);
  const exec = join(dir, 'exec-kubeconfig');
  writeFileSync(exec, 'current-context: c\nclusters: [{name: k, cluster: {server: "https://127.0.0.1:1"}}]\nusers: [{name: u, user: {exec: {command: /bin/sh}}}]\ncontexts: [{name: c, context: {cluster: k, user: u}}]\n');
  const file = join(dir, 'regular-file');
  writeFileSync(file, '');
  const sub = join(dir, 'a-directory');
  mkdirSync(sub);
  return {
    api,
    node,
    workers,
    dir,
    logDir,
    // Longest first: @kubeconfig must not eat the start of another placeholder.
    placeholders: [['@exec-kubeconfig', exec], ['@bad-kubeconfig', bad], ['@kubeconfig', kubeconfig], ['@logdir', logDir]],
    paths: { file, dir: sub },
  };
}

function netnsPath(c: FuzzCase, env: Env, worker: h.Netns): string {
  if (typeof c.netns === 'object') return c.netns.raw;
  return {
    pod: worker.path,
    node: env.node.path,
    'proc-self': '/proc/self/ns/net',
    missing: `${h.NETNS_DIR}/icni-fuzz-missing`,
    file: env.paths.file,
    dir: env.paths.dir,
    'mnt-ns': '/proc/self/ns/mnt',
    empty: '',
  }[c.netns];
}

function serialize(c: FuzzCase, env: Env, netns: string): Buffer {
  if ('raw' in c.stdin) return Buffer.from(c.stdin.raw);
  const doc = c.stdin.doc as Record<string, unknown>;
  let text = JSON.stringify('@replace' in doc ? doc['@replace'] : doc) ?? 'undefined';
  for (const [placeholder, value] of env.placeholders) text = text.replaceAll(placeholder, value);
  text = text.replaceAll('@netns', netns).replace(/\{"@nested":(\d+)\}/g, (_, depth: string) => `${'{"n":'.repeat(Number(depth))}{}${'}'.repeat(Number(depth))}`);
  const d = c.damage;
  if (d === 'none') return Buffer.from(text);
  if (typeof d === 'object') return Buffer.from(text.slice(0, Math.min(d.truncateAt, text.length - 1)));
  switch (d) {
    case 'nul':
      return Buffer.from(`${text.slice(0, text.length >> 1)}\0${text.slice(text.length >> 1)}`);
    case 'bom':
      return Buffer.from(`\uFEFF${text}`);
    case 'padding':
      return Buffer.from(`${' \n\t'.repeat(300_000)}${text}${'\r\n'.repeat(300_000)}`);
    case 'latin1':
      return Buffer.from(text, 'latin1');
    case 'duplicate-version':
      return Buffer.from(text.startsWith('{') ? `{"cniVersion":"9.9.9",${text.slice(1)}` : text);
  }
}

/** The pod this case's API answer holds, under a name of its own. */
function servePod(c: FuzzCase, env: Env): string {
  podCounter += 1;
  const name = `fz-${podCounter}`;
  const overrides = { metadata: { annotations: c.pod.annotations, labels: c.pod.labels } };
  const pod = c.pod.kind === 'injected' ? h.injectedPod(name, c.pod.namespace, overrides) : h.plainPod(name, c.pod.namespace, overrides);
  const corrupt = c.pod.corrupt;
  if (corrupt?.path === 'containers') (pod.spec as Record<string, unknown>).containers = corrupt.value;
  if (corrupt?.path === 'annotations') (pod.metadata as Record<string, unknown>).annotations = corrupt.value;
  if (corrupt?.path === 'metadata') (pod as Record<string, unknown>).metadata = corrupt.value;
  if (corrupt?.path === 'spec') (pod as Record<string, unknown>).spec = corrupt.value;
  env.api.pods.set(`${c.pod.namespace}/${name}`, pod);
  return name;
}

function describeCase(c: FuzzCase, stdin: Buffer, envVars: Record<string, string>): string {
  const shown = stdin.length > 600 ? `${stdin.subarray(0, 600).toString('utf8')}… (${stdin.length} bytes)` : stdin.toString('utf8');
  const vars = Object.fromEntries(Object.entries(envVars).map(([k, v]) => [k, v.length > 200 ? `${v.slice(0, 200)}… (${v.length})` : v]));
  return `env ${JSON.stringify(vars)}\nstdin ${JSON.stringify(shown)}\npod ${JSON.stringify({ ...c.pod, annotations: Object.keys(c.pod.annotations) })} preinstalled=${c.preinstalled} podRules=${JSON.stringify(c.podRules)}`;
}

/**
 * Adds the pod's own rules (those iptables refuses, e.g. a jump to a chain of ours that is not
 * there, are left out) and returns what of them must survive the case: every rule of the pod's that
 * does not jump into a chain of ours (those go with our chains).
 */
async function addPodRules(worker: h.Netns, backend: 'nft' | 'legacy', rules: PodRule[]): Promise<string[]> {
  for (const r of rules) {
    const direction = r.chain === 'OUTPUT' || r.chain === 'POSTROUTING' ? '-o' : '-i';
    await h.execInNetns(worker, [`/usr/sbin/iptables-${backend}`, '-t', r.table, '-A', r.chain, ...(r.iface === undefined ? [] : [direction, r.iface]), '-m', 'comment', '--comment', `${POD_RULE_MARKER} ${r.comment}`, '-j', r.target]);
  }
  return podRecords(worker, backend);
}

/** The pod's own rules that do not jump into our chains, in nat and filter. */
async function podRecords(worker: h.Netns, backend: 'nft' | 'legacy'): Promise<string[]> {
  const tables = await Promise.all(['nat', 'filter'].map(async (table) => (await tableRecords(worker, backend, table)).map((r) => `${table}: ${r}`)));
  return tables.flat().filter((r) => r.includes(POD_RULE_MARKER) && !/ -j ISTIO_[A-Z_]+$/.test(r));
}

/** One case on one worker netns; returns the problems found (none is a pass) and how it ended. */
async function runCase(c: FuzzCase, env: Env, worker: h.Netns): Promise<{ problems: string[]; outcome: string }> {
  const netns = netnsPath(c, env, worker);
  const podName = servePod(c, env);
  const stdin = serialize(c, env, netns);
  const vars: Record<string, string> = { CNI_COMMAND: c.command, CNI_NETNS: netns, CNI_ARGS: c.cniArgs.replaceAll('@pod', podName).replaceAll('@ns', c.pod.namespace), ...c.env };
  // Workers end every case reset, so the state before is known without reading it.
  const backend = backendOf(c);
  if (c.preinstalled) await installFullRuleSet(worker, backend);
  // A pod's own rules are iptables rules (iptables-nft's under native nftables, whose DEL must leave
  // them as much as the tables of anyone else).
  const podBackend = backend === 'nftables' ? 'nft' : backend;
  const podRulesBefore = c.podRules.length > 0 ? await addPodRules(worker, podBackend, c.podRules) : [];
  const before: NetnsState = { ...NOTHING };
  if (c.preinstalled) before[backend] = backend === 'nftables' ? FULL_NFT_RULE_SET : FULL_RULE_SET;
  const t0 = performance.now();
  const result = await h.run(h.nsenterArgv(env.node, [h.DEFAULT_ISTIO_CNI_BIN]), { env: vars, input: stdin, timeoutMs: 40_000 });
  if (process.env.FUZZ_SLOW && performance.now() - t0 > Number(process.env.FUZZ_SLOW)) process.stderr.write(`slow ${Math.round(performance.now() - t0)} ms: ${describeCase(c, stdin, vars).slice(0, 600)}\nstdout ${result.stdout.slice(0, 300)}\n`);
  env.api.pods.delete(`${c.pod.namespace}/${podName}`);
  const after = await ourState(worker);
  const problems = [...processProblems(result), ...outputProblems(c, result), ...netnsProblems(c, backend, result, before, after)];
  if (c.podRules.length > 0) {
    const podRulesAfter = await podRecords(worker, podBackend);
    if (JSON.stringify(podRulesAfter) !== JSON.stringify(podRulesBefore)) {
      problems.push(`the pod's own rules changed:\nbefore ${JSON.stringify(podRulesBefore)}\nafter ${JSON.stringify(podRulesAfter)}`);
    }
    await resetNat(worker, podBackend, 'filter');
  }
  for (const b of BACKENDS) if (after[b].length > 0 || (b === podBackend && c.podRules.length > 0)) await resetNat(worker, b);
  const outcome = result.code === 0 ? 'ok' : String((JSON.parse(result.stdout.split('\n')[0] || 'null') as { code?: number } | null)?.code ?? `exit ${result.code}`);
  return { problems: problems.map((p) => `${p}\n${describeCase(c, stdin, vars)}\nstdout ${result.stdout.slice(0, 500)}\nstderr ${result.stderr.slice(0, 500)}`), outcome };
}

function outputProblems(c: FuzzCase, result: h.RunResult): string[] {
  if (result.code !== 0) {
    const { problems } = specErrorProblems(result);
    if (c.clean && (c.command === 'ADD' || c.command === 'DEL' || c.command === 'VERSION')) problems.push(`a clean ${c.command} failed`);
    return problems;
  }
  const stdout = result.stdout.trim();
  if (c.command === 'ADD' || c.command === 'VERSION') {
    try {
      const value = JSON.parse(stdout) as { cniVersion?: unknown };
      if (typeof value !== 'object' || value === null || typeof value.cniVersion !== 'string') return [`${c.command} result without cniVersion: ${stdout.slice(0, 300)}`];
    } catch {
      return [`${c.command} printed no JSON result: ${stdout.slice(0, 300)}`];
    }
    return [];
  }
  return stdout === '' ? [] : [`${c.command} succeeded but printed ${stdout.slice(0, 300)}`];
}

const BACKENDS = ['nft', 'legacy', 'nftables'] as const;

/** The backend the plugin will use for this case ("auto" is nft on these machines). */
function backendOf(c: FuzzCase): h.CaptureBackend {
  const chosen = 'doc' in c.stdin ? (c.stdin.doc as Record<string, unknown>).iptables_backend : undefined;
  return chosen === 'legacy' || chosen === 'nftables' ? chosen : 'nft';
}

function netnsProblems(c: FuzzCase, backend: h.CaptureBackend, result: h.RunResult, before: NetnsState, after: NetnsState): string[] {
  const problems: string[] = [];
  const structural = TRAFFIC_ANNOTATION_KEYS.some((k) => k in c.pod.annotations);
  for (const backend of BACKENDS) {
    // Our nftables tables hold both families: a pod whose prevResult has an IPv6 address gets more
    // rules there than the seed's, where iptables' nat listing shows IPv4's only.
    const state = classify(after[backend], structural || backend === 'nftables');
    if (state === 'partial') problems.push(`${backend}: netns holds part of a rule set:\n${after[backend].join('\n')}`);
  }
  if (result.code !== 0 && JSON.stringify(before) !== JSON.stringify(after)) {
    problems.push(`a failed ${c.command} changed the netns: before ${JSON.stringify(before)} after ${JSON.stringify(after)}`);
  }
  if (result.code === 0 && c.command === 'DEL' && c.netns === 'pod' && c.clean && after[backend].length > 0) problems.push('a clean DEL left our rules');
  if (result.code === 0 && c.command === 'ADD' && c.clean && classify(after[backend]) !== 'full') problems.push('a clean ADD did not program the rule set');
  return problems;
}

/**
 * fast-check drives batches of `concurrency` cases; a batch with a problem fails the property, which
 * fast-check then shrinks and reports with its seed (replay: FUZZ_SEED=<seed>).
 */
export async function runCampaign(opts: CampaignOptions): Promise<CampaignReport> {
  const concurrency = opts.concurrency ?? 6;
  const env = await makeEnv(concurrency);
  const seed = opts.seed ?? Date.now() ^ (Math.random() * 0x7fffffff);
  const outcomes = new Map<string, number>();
  let done = 0;
  const started = performance.now();
  try {
    const details = await fc.check(
      fc.asyncProperty(fc.array(fuzzCase, { minLength: concurrency, maxLength: concurrency }), async (batch) => {
        const results = await Promise.all(batch.map((c, i) => runCase(c, env, env.workers[i]!)));
        for (const r of results) outcomes.set(r.outcome, (outcomes.get(r.outcome) ?? 0) + 1);
        done += batch.length;
        opts.progress?.(done);
        const node = await ourState(env.node);
        const problems = results.flatMap((r) => r.problems);
        if (node.nft.length + node.legacy.length + node.nftables.length > 0) problems.push(`the plugin's own netns got rules: ${JSON.stringify(node)}`);
        if (problems.length > 0) throw new Error(problems.join('\n---\n'));
      }),
      { numRuns: Math.ceil(opts.runs / concurrency), seed, endOnFailure: true },
    );
    // Our own report: fast-check's would print the whole batch, megabytes of generated input.
    if (details.failed) {
      const why = details.errorInstance instanceof Error ? details.errorInstance.message : String(details.errorInstance);
      throw new Error(`after ${done} cases (seed ${seed}, path ${details.counterexamplePath}):\n${why.slice(0, 20_000)}`);
    }
  } finally {
    await env.api.close();
  }
  return { runs: done, seed, ms: performance.now() - started, outcomes };
}
