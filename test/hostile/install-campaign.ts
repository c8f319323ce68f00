/**
 * Generated host directories for `istio-cni install --once` and `uninstall`, the built executable run
 * as a child process in a memory cgroup: net.d and the CNI bin dir hold, besides ordinary configs,
 * links (to a file standing in for /etc/shadow, to a FIFO, to /dev/zero, dangling, to a directory),
 * FIFOs, directories, oversized files, and links planted at the installer's temp names. Whatever is
 * there, the installer must finish, never write through a link or touch a special file, never leave a
 * temp file, and put its entry only where the runtime looks.
 * Used by test/e2e/hostile-input.test.ts (a few dozen cases) and scripts/fuzz.ts.
 */
import { chmodSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, symlinkSync, writeFileSync, type Stats } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import * as h from '../harness/index.ts';
import { processProblems } from './oracle.ts';

const BIN = h.DEFAULT_ISTIO_CNI_BIN;
const KUBECONFIG_NAME = 'ZZZ-istio-cni-kubeconfig';
const SOURCE = '#!/bin/true\nistio-cni stand-in\n';
const VICTIM = 'root:$6$secret:19000:0:99999:7:::\n';
const CALICO = readFileSync(join(h.REPO_ROOT, 'test', 'fixtures', 'netconf', '10-calico.conflist'), 'utf8');
const BRIDGE = readFileSync(join(h.REPO_ROOT, 'test', 'fixtures', 'netconf', '10-bridge.conf'), 'utf8');
const WITH_ENTRY = JSON.stringify({ ...JSON.parse(CALICO), plugins: [...(JSON.parse(CALICO) as { plugins: unknown[] }).plugins, { type: 'istio-cni', log_level: 'debug' }] });
/** Where the runtime looks, in its order (file names sort by bytes, as libcni sorts them). */
const CONFIG_NAMES = ['.hidden.conflist', '00-first.conflist', '05-bridge.conf', '10-calico.conflist', '20-other.json', '30-last.conflist'];
const OTHER_NAMES = ['notes.txt', 'calico-kubeconfig', KUBECONFIG_NAME];

type Regular = 'calico' | 'bridge' | 'with-entry' | 'invalid' | 'empty' | 'huge';
type Special = 'link-victim' | 'link-fifo' | 'link-zero' | 'link-dangling' | 'link-dir' | 'link-sibling' | 'fifo' | 'dir';
type EntryKind = Regular | Special;
const REGULAR: readonly Regular[] = ['calico', 'bridge', 'with-entry', 'invalid', 'empty', 'huge'];
const SPECIAL: readonly Special[] = ['link-victim', 'link-fifo', 'link-zero', 'link-dangling', 'link-dir', 'link-sibling', 'fifo', 'dir'];
const BIN_NAMES = ['istio-cni', '.istio-cni.istio-cni.tmp', '.istio-cni.0123456789abcdef.istio-cni.tmp', 'ptp'];

export interface InstallCase {
  command: 'install' | 'uninstall';
  netd: Array<{ name: string; kind: EntryKind }>;
  bin: Array<{ name: string; kind: Special | 'old-binary' }>;
}

const entryKind = fc.oneof({ weight: 3, arbitrary: fc.constantFrom(...REGULAR) }, { weight: 1, arbitrary: fc.constantFrom(...SPECIAL) });
export const installCase: fc.Arbitrary<InstallCase> = fc.record({
  command: fc.constantFrom<InstallCase['command']>('install', 'install', 'uninstall'),
  netd: fc.uniqueArray(fc.record({ name: fc.constantFrom(...CONFIG_NAMES, ...OTHER_NAMES), kind: entryKind }), { selector: (e) => e.name, maxLength: 6 }),
  bin: fc.uniqueArray(fc.record({ name: fc.constantFrom(...BIN_NAMES), kind: fc.oneof(fc.constantFrom(...SPECIAL), fc.constant<'old-binary'>('old-binary')) }), { selector: (e) => e.name, maxLength: 3 }),
});

interface Node {
  root: string;
  netDir: string;
  binDir: string;
  outside: string;
  env: NodeJS.ProcessEnv;
}

async function makeNode(c: InstallCase): Promise<Node> {
  const root = h.makeTempDir('icni-fzi-');
  const [netDir, binDir, outside, sa] = ['netd', 'bin', 'outside', 'sa'].map((d) => join(root, d)) as [string, string, string, string];
  for (const d of [netDir, binDir, outside, sa, join(outside, 'dir')]) mkdirSync(d, { recursive: true });
  writeFileSync(join(outside, 'shadow'), VICTIM, { mode: 0o640 });
  chmodSync(join(outside, 'shadow'), 0o640);
  await h.runOk(['/usr/bin/mkfifo', join(outside, 'fifo')]);
  writeFileSync(join(sa, 'token'), 'fuzz-token');
  writeFileSync(join(sa, 'ca.crt'), '-----BEGIN CERTIFICATE-----\nfake\n-----END CERTIFICATE-----\n');
  writeFileSync(join(root, 'source'), SOURCE, { mode: 0o755 });
  const plant = async (dir: string, name: string, kind: EntryKind | 'old-binary') => {
    const path = join(dir, name);
    const content: Record<Regular | 'old-binary', string> = { calico: CALICO, bridge: BRIDGE, 'with-entry': WITH_ENTRY, invalid: '{"name": "half', empty: '', huge: `{"pad":"${'a'.repeat(2 * 1024 * 1024)}"}`, 'old-binary': 'old' };
    if (kind in content) return writeFileSync(path, content[kind as Regular], { mode: 0o644 });
    const target = { 'link-victim': join(outside, 'shadow'), 'link-fifo': join(outside, 'fifo'), 'link-zero': '/dev/zero', 'link-dangling': join(outside, 'nothing'), 'link-dir': join(outside, 'dir'), 'link-sibling': '10-calico.conflist' }[kind as Exclude<Special, 'fifo' | 'dir'>];
    if (target !== undefined) return symlinkSync(target, path);
    if (kind === 'fifo') return void (await h.runOk(['/usr/bin/mkfifo', path]));
    mkdirSync(path);
  };
  for (const e of c.netd) await plant(netDir, e.name, e.kind);
  for (const e of c.bin) await plant(binDir, e.name, e.kind);
  const env = h.minimalEnv({
    CNI_NET_DIR: '/etc/cni/net.d',
    MOUNTED_CNI_NET_DIR: netDir,
    MOUNTED_CNI_BIN_DIRS: binDir,
    SERVICE_ACCOUNT_PATH: sa,
    KUBERNETES_SERVICE_HOST: '10.96.0.1',
    CNI_BINARY_SOURCE: join(root, 'source'),
  });
  return { root, netDir, binDir, outside, env };
}

/** What a directory entry is, without following it: a link's target, a special file's kind, a regular file's bytes. */
function describe(path: string): string | undefined {
  let stat: Stats;
  try {
    stat = lstatSync(path);
  } catch {
    return undefined;
  }
  if (stat.isSymbolicLink()) return `link -> ${readlinkSync(path)}`;
  if (stat.isFIFO()) return 'fifo';
  if (stat.isDirectory()) return 'dir';
  return `file ${(stat.mode & 0o7777).toString(8)} ${stat.uid}: ${readFileSync(path, 'utf8')}`;
}

const snapshot = (dir: string) => new Map(readdirSync(dir).map((name) => [name, describe(join(dir, name))!]));
const isConfig = (name: string) => /\.(conf|conflist|json)$/.test(name);

/** The other plugins of a config, as the runtime would read them (undefined: not a config). */
function withoutOurs(text: string): string | undefined {
  try {
    const doc = JSON.parse(text) as { plugins?: Array<{ type?: unknown }> };
    if (!Array.isArray(doc.plugins)) return JSON.stringify(doc);
    return JSON.stringify({ ...doc, plugins: doc.plugins.filter((p) => p.type !== 'istio-cni') });
  } catch {
    return undefined;
  }
}
const hasOurs = (text: string) => (JSON.parse(text) as { plugins?: Array<{ type?: unknown }> }).plugins?.some((p) => p.type === 'istio-cni') ?? false;

/** Problems with one run, judged from the directories before and after. */
function judge(c: InstallCase, node: Node, result: h.RunResult, before: Map<string, string>, binBefore: Map<string, string>): string[] {
  const problems = processProblems(result);
  if (result.code !== 0 && result.code !== 1) problems.push(`exit status ${result.code}`);
  if (readFileSync(join(node.outside, 'shadow'), 'utf8') !== VICTIM || (lstatSync(join(node.outside, 'shadow')).mode & 0o777) !== 0o640) problems.push('the file outside (a stand-in for /etc/shadow) was written or its mode changed');
  if (describe(join(node.outside, 'fifo')) !== 'fifo') problems.push('the FIFO outside changed');
  const after = snapshot(node.netDir);
  const binAfter = snapshot(node.binDir);
  for (const [name, was] of before) {
    const now = after.get(name);
    // Only the kubeconfig's name is ours to replace, whatever is there; a single-plugin config becomes a list.
    if (name === KUBECONFIG_NAME) continue;
    if (!was.startsWith('file ')) {
      if (now !== was) problems.push(`net.d/${name} (${was}) became ${now}`);
    } else if (now !== was) {
      const text = (d: string | undefined) => d?.slice(d.indexOf(': ') + 2) ?? '';
      const converted = now === undefined && /\.(conf|json)$/.test(name) ? after.get(name.replace(/\.(conf|json)$/, '.conflist')) : now;
      if (!isConfig(name) || converted === undefined || withoutOurs(text(converted)) === undefined) problems.push(`net.d/${name} changed: ${was.slice(0, 80)} -> ${now?.slice(0, 80)}`);
      else if (now !== undefined && withoutOurs(text(now)) !== withoutOurs(text(was))) problems.push(`net.d/${name} changed more than our entry`);
    }
  }
  const newTemps = [...[...after.keys()].filter((n) => !before.has(n)), ...[...binAfter.keys()].filter((n) => !binBefore.has(n))].filter((n) => /^\..*\.istio-cni\.tmp$/.test(n));
  if (newTemps.length > 0) problems.push(`temp files left: ${newTemps}`);
  for (const [name, was] of binBefore) if (name !== 'istio-cni' && binAfter.get(name) !== was) problems.push(`bin/${name} (${was}) became ${binAfter.get(name)}`);

  // Where the runtime looks: the first config entry in byte order that is a valid regular file; a
  // link, special or oversized file before it means the installer cannot know, and must change nothing.
  const candidates = [...before.keys()].filter(isConfig).sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
  const kinds = new Map(c.netd.map((e) => [e.name, e.kind]));
  // A list in a .conflist, a single plugin in a .conf or .json: anything else the runtime skips.
  const valid = (n: string) => (n.endsWith('.conflist') ? ['calico', 'with-entry'] : ['bridge']).includes(kinds.get(n)!);
  const primaryIndex = candidates.findIndex(valid);
  const blocked = candidates.slice(0, primaryIndex < 0 ? candidates.length : primaryIndex).some((n) => !(REGULAR as readonly string[]).includes(kinds.get(n)!) || kinds.get(n) === 'huge');
  // Lists hold plugin entries; a list in a .conf is no config to the runtime.
  const withOurs = [...after].filter(([n, d]) => n.endsWith('.conflist') && d.startsWith('file ') && withoutOurs(d.slice(d.indexOf(': ') + 2)) !== undefined && hasOurs(d.slice(d.indexOf(': ') + 2))).map(([n]) => n);
  if (c.command === 'install' && blocked) {
    if (result.code !== 1) problems.push('a link or special file comes first, yet install succeeded');
    for (const [name, was] of before) if (name !== KUBECONFIG_NAME && after.get(name) !== was) problems.push(`blocked, yet net.d/${name} changed`);
  }
  if (c.command === 'install' && result.code === 0) {
    const primary = candidates[primaryIndex]!;
    const expected = primary.replace(/\.(conf|json)$/, '.conflist');
    if (JSON.stringify(withOurs) !== JSON.stringify([expected])) problems.push(`our entry is in [${withOurs}], expected only in ${expected}`);
    if (binAfter.get('istio-cni') !== `file 755 0: ${SOURCE}`) problems.push(`bin/istio-cni is ${binAfter.get('istio-cni')}`);
    if (!after.get(KUBECONFIG_NAME)?.startsWith('file 600 0: ')) problems.push(`the kubeconfig is ${after.get(KUBECONFIG_NAME)?.slice(0, 40)}`);
  }
  if (c.command === 'uninstall' && result.code === 0) {
    if (withOurs.length > 0) problems.push(`uninstall left our entry in ${withOurs}`);
    if (binAfter.has('istio-cni')) problems.push('uninstall left bin/istio-cni');
  }
  return problems;
}

async function runInstallCase(c: InstallCase, cgroup: h.MemoryCgroup): Promise<{ problems: string[]; outcome: string }> {
  const node = await makeNode(c);
  const before = snapshot(node.netDir);
  const binBefore = snapshot(node.binDir);
  const args = c.command === 'install' ? ['install', '--once'] : ['uninstall'];
  const result = await h.run(cgroup.argv([BIN, ...args]), { env: node.env, timeoutMs: 20_000 });
  const problems = judge(c, node, result, before, binBefore);
  const shown = `${c.command}: net.d ${JSON.stringify(c.netd)} bin ${JSON.stringify(c.bin)}\nstderr ${result.stderr.slice(-600)}`;
  return { problems: problems.map((p) => `${p}\n${shown}`), outcome: `${c.command} ${result.code ?? result.signal}` };
}

export interface InstallCampaignReport {
  runs: number;
  seed: number;
  ms: number;
  outcomes: Map<string, number>;
}

/** Runs `runs` generated cases, `concurrency` at once, each in a memory cgroup of 256 MiB. */
export async function runInstallCampaign(opts: { runs: number; concurrency?: number; seed?: number; progress?: (done: number) => void }): Promise<InstallCampaignReport> {
  const concurrency = opts.concurrency ?? 6;
  const cgroups = Array.from({ length: concurrency }, () => h.makeMemoryCgroup(256 * 1024 * 1024));
  const seed = opts.seed ?? Date.now() ^ (Math.random() * 0x7fffffff);
  const outcomes = new Map<string, number>();
  let done = 0;
  const started = performance.now();
  const details = await fc.check(
    fc.asyncProperty(fc.array(installCase, { minLength: concurrency, maxLength: concurrency }), async (batch) => {
      const results = await Promise.all(batch.map((c, i) => runInstallCase(c, cgroups[i]!)));
      for (const r of results) outcomes.set(r.outcome, (outcomes.get(r.outcome) ?? 0) + 1);
      done += batch.length;
      opts.progress?.(done);
      const problems = results.flatMap((r) => r.problems);
      if (problems.length > 0) throw new Error(problems.join('\n---\n'));
    }),
    { numRuns: Math.ceil(opts.runs / concurrency), seed, endOnFailure: true },
  );
  if (details.failed) {
    const why = details.errorInstance instanceof Error ? details.errorInstance.message : String(details.errorInstance);
    throw new Error(`after ${done} installer cases (seed ${seed}, path ${details.counterexamplePath}):\n${why.slice(0, 20_000)}`);
  }
  return { runs: done, seed, ms: performance.now() - started, outcomes };
}
