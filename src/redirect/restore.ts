import { CHAIN_PREFIX, type Rule, type RuleSet } from './ruleset.ts';
import { ownsBuiltinRule } from './ruleset-istio-current.ts';

/**
 * Rendering rule sets as iptables-restore input, and reading `iptables-save` output back. Pure text in,
 * text out: the netns module applies it.
 */

/** Words reach iptables-restore unquoted, so each must be one plain token. Inputs are validated long
 * before this; this guard makes an unvalidated value impossible to smuggle into the restore text. */
const PLAIN_WORD = /^(!|[A-Za-z0-9_.:/,-]+)$/;

export function ruleLine(rule: Rule): string {
  for (const word of [rule.chain, ...rule.spec]) {
    if (!PLAIN_WORD.test(word)) throw new Error(`refusing to render iptables word ${JSON.stringify(word)}`);
  }
  return `-A ${rule.chain} ${rule.spec.join(' ')}`;
}

/** One table as `iptables-save` shows it: its chains and its rules, each rule a full `-A …` line. */
export interface SavedTable {
  chains: string[];
  rules: { chain: string; line: string }[];
}
export type SavedState = Map<string, SavedTable>;

export function parseSave(text: string): SavedState {
  const state: SavedState = new Map();
  let current: SavedTable | undefined;
  for (const line of text.split('\n')) {
    if (line.startsWith('*')) {
      current = { chains: [], rules: [] };
      state.set(line.slice(1).trim(), current);
    } else if (current && line.startsWith(':')) {
      current.chains.push(line.slice(1).split(' ')[0] ?? '');
    } else if (current && line.startsWith('-A ')) {
      current.rules.push({ chain: line.split(' ')[1] ?? '', line });
    }
  }
  return state;
}

const isOwnedChain = (chain: string) => chain.startsWith(CHAIN_PREFIX);
const JUMP_TO_OWNED = new RegExp(` -[jg] ${CHAIN_PREFIX}[A-Za-z0-9_]+( |$)`);

/** What of ours a table holds: our chains, the jumps into them from other chains (and the istio-current
 * profile's rules in built-in chains), and our chains' rules. */
export interface OwnedTable {
  chains: string[];
  jumps: string[];
  rules: string[];
}

export function ownedState(saved: SavedState): Map<string, OwnedTable> {
  const owned = new Map<string, OwnedTable>();
  for (const [table, { chains, rules }] of saved) {
    const ours: OwnedTable = {
      chains: chains.filter(isOwnedChain),
      jumps: rules.filter((r) => !isOwnedChain(r.chain) && (JUMP_TO_OWNED.test(r.line) || ownsBuiltinRule(table, r.line))).map((r) => r.line),
      rules: rules.filter((r) => isOwnedChain(r.chain)).map((r) => r.line),
    };
    if (ours.chains.length > 0 || ours.jumps.length > 0) owned.set(table, ours);
  }
  return owned;
}

function removalLines(owned: OwnedTable): string[] {
  return [
    ...owned.jumps.map((line) => `-D${line.slice(2)}`),
    // Flush every chain before deleting any: our chains jump to each other.
    ...owned.chains.map((chain) => `-F ${chain}`),
    ...owned.chains.map((chain) => `-X ${chain}`),
  ];
}

function creationLines(tableRules: RuleSet[number]): string[] {
  return [...tableRules.chains.map((chain) => `-N ${chain}`), ...tableRules.rules.map(ruleLine)];
}

function renderTables(blocks: Map<string, string[]>): string {
  let text = '';
  for (const [table, lines] of blocks) {
    if (lines.length > 0) text += `*${table}\n${lines.join('\n')}\nCOMMIT\n`;
  }
  return text;
}

/** Input for a netns that holds nothing of ours: `-N` fails if a chain exists, so a stale state
 * makes the whole restore fail untouched instead of duplicating the jumps. */
export function renderCreate(ruleSet: RuleSet): string {
  return renderTables(new Map(ruleSet.map((t) => [t.table, creationLines(t)])));
}

/** Input that removes whatever of ours `saved` holds and then creates `ruleSet`, in one transaction per table. */
export function renderReplace(ruleSet: RuleSet, saved: SavedState): string {
  const blocks = new Map<string, string[]>();
  for (const [table, owned] of ownedState(saved)) blocks.set(table, removalLines(owned));
  for (const tableRules of ruleSet) {
    blocks.set(tableRules.table, [...(blocks.get(tableRules.table) ?? []), ...creationLines(tableRules)]);
  }
  return renderTables(blocks);
}

/** Input that removes whatever of ours `saved` holds; empty when there is nothing. */
export function renderRemoval(saved: SavedState): string {
  return renderReplace([], saved);
}

/** How the netns differs from `ruleSet`, as human-readable lines; empty when it matches exactly. */
export function differences(ruleSet: RuleSet, saved: SavedState): string[] {
  const owned = ownedState(saved);
  const found: string[] = [];
  const tables = new Set([...owned.keys(), ...ruleSet.map((t) => t.table)]);
  for (const table of tables) {
    const expected = ruleSet.find((t) => t.table === table);
    const actual = owned.get(table) ?? { chains: [], jumps: [], rules: [] };
    const want = expected ? [...expected.chains.map((c) => `-N ${c}`), ...expected.rules.map(ruleLine)] : [];
    const have = [...actual.chains.map((c) => `-N ${c}`), ...actual.jumps, ...actual.rules];
    const missing = multisetMinus(want, have);
    const extra = multisetMinus(have, want);
    for (const line of missing) found.push(`${table}: missing ${line}`);
    for (const line of extra) found.push(`${table}: unexpected ${line}`);
    if (missing.length === 0 && extra.length === 0 && !sameOrderPerChain(want, have)) {
      found.push(`${table}: rules are out of order`);
    }
  }
  return found;
}

function multisetMinus(from: string[], remove: string[]): string[] {
  const counts = new Map<string, number>();
  for (const line of remove) counts.set(line, (counts.get(line) ?? 0) + 1);
  return from.filter((line) => {
    const n = counts.get(line) ?? 0;
    if (n === 0) return true;
    counts.set(line, n - 1);
    return false;
  });
}

function sameOrderPerChain(want: string[], have: string[]): boolean {
  const byChain = (lines: string[]) => {
    const chains = new Map<string, string[]>();
    for (const line of lines) {
      const chain = line.split(' ')[1] ?? '';
      chains.set(chain, [...(chains.get(chain) ?? []), line]);
    }
    return chains;
  };
  const wanted = byChain(want);
  const had = byChain(have);
  return [...wanted].every(([chain, lines]) => JSON.stringify(lines) === JSON.stringify(had.get(chain)));
}
