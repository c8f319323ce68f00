/**
 * What every run of the plugin must satisfy, whatever its input: its stdout and exit code, and the
 * state it leaves in a netns (all of our rule set or nothing of ours).
 */
import { readFileSync } from 'node:fs';
import * as h from '../harness/index.ts';

export const SUPPORTED_VERSIONS = ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'];

/** The default rule set as `iptables -t nat -S` lists it, without the policies. */
export const FULL_RULE_SET = readFileSync(new URL('../fixtures/seed-nat-S.txt', import.meta.url), 'utf8')
  .trim()
  .split('\n')
  .filter((line) => !line.startsWith('-P '));

/** iptables-restore input that installs the default rule set, as a repeated ADD would find it. */
export const FULL_RULE_SET_RESTORE = `*nat\n${FULL_RULE_SET.join('\n')}\nCOMMIT\n`;

const STACK_LINE = /^\s+at .+(:\d+:\d+\)?|\(native\)|<anonymous>\)?)$/m;

export interface SpecError {
  cniVersion: string;
  code: number;
  msg: string;
  details: string;
}

/** Problems with a failed run's output: it must be exit status 1 and exactly one SPEC error object. */
export function specErrorProblems(result: h.RunResult): { problems: string[]; error?: SpecError } {
  const problems: string[] = [];
  if (result.code !== 1) problems.push(`exit status ${result.code}, expected 1 for a failure`);
  const lines = result.stdout.split('\n').filter((l) => l !== '');
  if (lines.length !== 1) return { problems: [...problems, `stdout has ${lines.length} lines, expected one SPEC error object: ${result.stdout.slice(0, 300)}`] };
  let error: unknown;
  try {
    error = JSON.parse(lines[0]!);
  } catch {
    return { problems: [...problems, `stdout is not JSON: ${result.stdout.slice(0, 300)}`] };
  }
  const e = error as Record<string, unknown>;
  if (typeof e !== 'object' || e === null || Array.isArray(e)) return { problems: [...problems, 'stdout is not a JSON object'] };
  const keys = Object.keys(e).sort().join(',');
  if (keys !== 'cniVersion,code,details,msg') problems.push(`SPEC error has keys ${keys}`);
  if (!SUPPORTED_VERSIONS.includes(e.cniVersion as string)) problems.push(`SPEC error cniVersion ${JSON.stringify(e.cniVersion)}`);
  if (!Number.isInteger(e.code) || (e.code as number) < 1) problems.push(`SPEC error code ${JSON.stringify(e.code)}`);
  if (typeof e.msg !== 'string' || e.msg === '') problems.push('SPEC error msg is not a non-empty string');
  if (typeof e.details !== 'string') problems.push('SPEC error details is not a string');
  return { problems, error: e as unknown as SpecError };
}

/** Problems any run can have: it hung, died of a signal, or printed a stack trace anywhere. */
export function processProblems(result: h.RunResult): string[] {
  const problems: string[] = [];
  if (result.timedOut) problems.push('did not finish in time');
  if (result.signal !== null) problems.push(`killed by ${result.signal}`);
  if (STACK_LINE.test(result.stdout)) problems.push('stack trace on stdout');
  if (STACK_LINE.test(result.stderr)) problems.push(`stack trace on stderr: ${result.stderr.slice(0, 500)}`);
  return problems;
}

/** The default rule set as native nftables lists it (`nft list ruleset`, counts left out). */
export const FULL_NFT_RULE_SET = h.seedRules('nftables');

export type NetnsState = { nft: string[]; legacy: string[]; nftables: string[] };
export const NOTHING: NetnsState = { nft: [], legacy: [], nftables: [] };

/** Marks the rules a fuzz case's pod added itself (in a comment): they are the pod's, never ours. */
export const POD_RULE_MARKER = 'icni-pod';

/**
 * `iptables -S` of a table as records: a rule comment may hold newlines, printed as they are inside
 * double quotes (`\"` and `\\` escaped), so a record ends at a newline outside quotes only.
 */
export async function tableRecords(ns: h.NetnsRef, backend: 'nft' | 'legacy', table = 'nat'): Promise<string[]> {
  const { stdout } = await h.execInNetnsOk(ns, [`/usr/sbin/iptables-${backend}`, '-t', table, '-S']);
  const records: string[] = [];
  let record = '';
  let quoted = false;
  for (let i = 0; i < stdout.length; i++) {
    const c = stdout[i]!;
    if (quoted && c === '\\') record += c + (stdout[++i] ?? '');
    else if (c === '\n' && !quoted) {
      if (record !== '') records.push(record);
      record = '';
    } else {
      // A quoted string is a whole word: a quote inside a bare word (an interface name) is a character.
      if (c === '"' && (quoted || record === '' || record.endsWith(' '))) quoted = !quoted;
      record += c;
    }
  }
  if (record !== '') records.push(record);
  return records;
}

/** Our lines (chains and rules naming ISTIO_, but not a pod's own) in the nat table of each iptables backend, and our nftables tables as listed. */
export async function ourState(ns: h.NetnsRef): Promise<NetnsState> {
  const ours = (records: string[]) => records.filter((r) => r.includes('ISTIO_') && !r.includes(POD_RULE_MARKER));
  const [nft, legacy, nftables] = await Promise.all([tableRecords(ns, 'nft'), tableRecords(ns, 'legacy'), h.ourNftTables(ns)]);
  return { nft: ours(nft), legacy: ours(legacy), nftables };
}

/**
 * "full" is today's default rule set, line for line and in order (iptables' lines, or our nftables
 * tables). A pod with traffic annotations may get another rule set once the plugin reads them:
 * `structural` then accepts any complete one.
 */
export function classify(lines: string[], structural = false): 'empty' | 'full' | 'partial' {
  if (lines.length === 0) return 'empty';
  const tables = lines[0]!.startsWith('table ');
  if (lines.join('\n') === (tables ? FULL_NFT_RULE_SET : FULL_RULE_SET).join('\n')) return 'full';
  if (structural && (tables ? isCompleteTables(lines) : isCompleteRuleSet(lines))) return 'full';
  return 'partial';
}

/**
 * Our nftables tables as some annotations could give them: each table has its hooked chains first,
 * every chain is declared once, every jump lands on a chain of the same table, every other chain is
 * jumped to and has rules, and no hooked chain jumps twice to the same chain (but for the jumps of VM
 * interfaces, one per interface named: `iifname`).
 */
function isCompleteTables(lines: string[]): boolean {
  const tables: { chains: Map<string, { hooked: boolean; rules: string[] }> }[] = [];
  let chain: { hooked: boolean; rules: string[] } | undefined;
  for (const line of lines) {
    if (line.startsWith('table ')) tables.push({ chains: new Map() });
    else if (line.startsWith('chain ')) {
      const name = line.slice(6, -2);
      if (tables.at(-1)!.chains.has(name)) return false;
      chain = { hooked: false, rules: [] };
      tables.at(-1)!.chains.set(name, chain);
    } else if (line === '}') chain = undefined;
    else if (chain && line.startsWith('type ')) chain.hooked = true;
    else if (chain) chain.rules.push(line);
  }
  return tables.length > 0 && tables.every(({ chains }) => {
    const jumps = [...chains].flatMap(([from, c]) => c.rules.map((r) => ({ from, hooked: c.hooked, to: / (?:jump|goto) ([a-z-]+)$/.exec(r)?.[1], perInterface: r.includes('iifname ') })));
    const fromHooked = jumps.filter((j) => j.hooked && j.to && !j.perInterface).map((j) => `${j.from}>${j.to}`);
    return (
      [...chains.values()].some((c) => c.hooked) &&
      jumps.every((j) => j.to === undefined || (chains.has(j.to) && !chains.get(j.to)!.hooked)) &&
      [...chains].every(([name, c]) => c.hooked || (c.rules.length > 0 && jumps.some((j) => j.to === name))) &&
      new Set(fromHooked).size === fromHooked.length
    );
  });
}

/**
 * A rule set some annotations could give: at least one chain of ours, declared once, every chain a rule
 * jumps to exists, every chain we declared has rules and is reached (from a built-in chain or another of ours),
 * and at most one jump from each built-in chain into each of ours (but for the jumps of VM interfaces, one per
 * interface named, `-i`, itself kept twice when listed twice). A half-applied restore breaks one of these.
 */
function isCompleteRuleSet(lines: string[]): boolean {
  const declared = new Set(lines.filter((l) => l.startsWith('-N ')).map((l) => l.slice(3)));
  const jumps = lines.filter((l) => l.startsWith('-A ')).map((l) => ({ from: l.split(' ')[1]!, to: / -[jg] (ISTIO_[A-Z0-9_]+)/.exec(l)?.[1] }));
  const targets = new Set(jumps.flatMap((j) => (j.to ? [j.to] : [])));
  // The jumps of a rule set into our chains from built-in ones, but the VM reroutes (-i: one per
  // range and interface, kept twice when listed twice).
  const builtinJumps = lines.filter((l) => / -[jg] ISTIO_/.test(l) && !l.startsWith('-A ISTIO_') && !l.includes(' -i '));
  return (
    declared.size > 0 &&
    // Rules inside our chains may repeat (a port listed twice is kept, as Istio keeps it); chains and
    // the jumps from built-in chains may not (a second restore would repeat them).
    declared.size === lines.filter((l) => l.startsWith('-N ')).length &&
    [...targets].every((t) => declared.has(t)) &&
    [...declared].every((c) => targets.has(c) && jumps.some((j) => j.from === c)) &&
    new Set(builtinJumps).size === builtinJumps.length
  );
}

/**
 * Empties a table (nat unless told) of an iptables backend (a restore without --noflush), or deletes
 * our nftables tables; the test's own netns only.
 */
export async function resetNat(ns: h.Netns, backend: h.CaptureBackend, table: 'nat' | 'filter' = 'nat'): Promise<void> {
  if (!h.isOwnedNetns(ns)) throw new Error(`refusing to reset ${ns.name}: not a netns this process made`);
  if (backend === 'nftables') {
    await h.execInNetnsOk(ns, [h.NFT, '-f', '-'], { input: h.NFT_TABLES.map((t) => `add table inet ${t}\ndelete table inet ${t}\n`).join('') });
    return;
  }
  await h.execInNetnsOk(ns, [`/usr/sbin/iptables-${backend}-restore`, '-w', '10'], { input: `*${table}\nCOMMIT\n` });
}

/** The default rule set, as an earlier ADD on this backend left it. */
export async function installFullRuleSet(ns: h.Netns, backend: h.CaptureBackend = 'nft'): Promise<void> {
  // nft reads back what it lists: the listing of the seed tables is their script too.
  if (backend === 'nftables') await h.execInNetnsOk(ns, [h.NFT, '-f', '-'], { input: `${FULL_NFT_RULE_SET.join('\n')}\n` });
  else await h.execInNetnsOk(ns, [`/usr/sbin/iptables-${backend}-restore`, '--noflush', '-w', '10'], { input: FULL_RULE_SET_RESTORE });
}
