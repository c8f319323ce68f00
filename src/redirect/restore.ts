import { MAX_RULES } from './rule-parts.ts';
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

/** One rule of `iptables-save`: its chain, its whole text, and the chain it jumps to (`-j`/`-g`), if any. */
export interface SavedRule {
  chain: string;
  line: string;
  target: string | undefined;
}

/** One table as `iptables-save` shows it: its chains and its rules in order. */
export interface SavedTable {
  chains: string[];
  rules: SavedRule[];
}
export type SavedState = Map<string, SavedTable>;

/** An iptables-save output that cannot be read without guessing; nothing is fed to a restore then. */
export class UnreadableSave extends Error {}

/**
 * Reads `iptables-save` output, which is untrusted: a pod with NET_ADMIN writes what is in its netns.
 * A rule comment may hold newlines (iptables-save prints them as they are, inside double quotes with
 * `\"` and `\\` escaped), so records end only at a newline outside quotes, and `-j` inside a comment is
 * no jump. Anything that is not what iptables-save prints (a table we do not know, a rule of an
 * undeclared chain, an unterminated quote) makes the whole output unreadable.
 */
export function parseSave(text: string): SavedState {
  const state: SavedState = new Map();
  let current: SavedTable | undefined;
  let declared = new Set<string>();
  for (const words of records(text)) {
    const first = words[0] ?? '';
    if (first === '' || first.startsWith('#') || first === 'COMMIT') continue;
    if (first.startsWith('*') && words.length === 1 && KNOWN_TABLES.has(first.slice(1))) {
      current = { chains: [], rules: [] };
      declared = new Set();
      state.set(first.slice(1), current);
    } else if (current && first.startsWith(':') && words.length === 3) {
      current.chains.push(first.slice(1));
      declared.add(first.slice(1));
    } else if (current && first === '-A' && declared.has(words[1] ?? '')) {
      const jump = words.findIndex((w, i) => i > 1 && (w === '-j' || w === '-g'));
      current.rules.push({ chain: words[1]!, line: words.join(' '), target: jump > 0 ? words[jump + 1] : undefined });
    } else {
      throw new UnreadableSave(`not what iptables-save prints: ${JSON.stringify(words.join(' ').slice(0, 200))}`);
    }
  }
  return state;
}

/** The tables iptables-save can print. */
const KNOWN_TABLES = new Set(['nat', 'mangle', 'raw', 'filter', 'security']);

/** Splits iptables-save output into records of words, honouring its double-quoted words (quotes kept). */
function* records(text: string): Generator<string[]> {
  let words: string[] = [];
  let word = '';
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (quoted) {
      if (c === '\\') word += c + (text[++i] ?? '');
      else {
        if (c === '"') quoted = false;
        word += c;
      }
    } else if (c === ' ' || c === '\n') {
      if (word !== '') words.push(word);
      word = '';
      if (c === '\n') {
        yield words;
        words = [];
      }
    } else {
      // iptables-save quotes whole words: a quote inside a bare word (an interface name) is a character.
      if (c === '"' && word === '') quoted = true;
      word += c;
    }
  }
  if (quoted) throw new UnreadableSave('a quoted string never ends');
  if (word !== '') words.push(word);
  yield words;
}

/** Our chains: the prefix and nothing a restore line could misread. */
const OWNED_CHAIN = new RegExp(`^${CHAIN_PREFIX}[A-Z0-9_]{1,22}$`);
const isOwnedChain = (chain: string) => OWNED_CHAIN.test(chain);
/** A chain that can be named in a restore line as it is (iptables' own names and ordinary user chains). */
const PLAIN_CHAIN = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,28}$/;

/** A jump into one of our chains from a chain that is not ours, by its 1-based position in that chain. */
export interface OwnedJump {
  chain: string;
  position: number;
  target: string;
  line: string;
}

/** What of ours a table holds: our chains, the jumps into them from other chains (and the istio-current
 * profile's rules in built-in chains), and our chains' rules. */
export interface OwnedTable {
  chains: string[];
  jumps: OwnedJump[];
  rules: string[];
}

export function ownedState(saved: SavedState): Map<string, OwnedTable> {
  const owned = new Map<string, OwnedTable>();
  for (const [table, { chains, rules }] of saved) {
    const ours: OwnedTable = { chains: chains.filter(isOwnedChain), jumps: [], rules: [] };
    const positions = new Map<string, number>();
    for (const rule of rules) {
      const position = (positions.get(rule.chain) ?? 0) + 1;
      positions.set(rule.chain, position);
      if (isOwnedChain(rule.chain)) ours.rules.push(rule.line);
      else if (rule.target !== undefined && (isOwnedChain(rule.target) || ownsBuiltinRule(table, rule.line))) {
        ours.jumps.push({ chain: rule.chain, position, target: rule.target, line: rule.line });
      }
    }
    if (ours.chains.length > 0 || ours.jumps.length > 0) owned.set(table, ours);
  }
  return owned;
}

/**
 * Lines that remove what of ours a table holds, made only of our own words: each jump is deleted by
 * its chain and position (counted down as earlier ones go), never by echoing the saved rule, which a
 * pod may have written. Our chains are flushed, then deleted when nothing else jumps into them: a
 * jump we cannot name safely, or more jumps than any rule set of ours can hold (deleting rules one by
 * one in nftables costs time quadratic in their number), leaves the chain in place, empty.
 */
function removalLines(owned: OwnedTable): string[] {
  const removable = owned.jumps.length <= MAX_RULES ? owned.jumps.filter((j) => PLAIN_CHAIN.test(j.chain)) : [];
  const deleted = new Map<string, number>();
  const deletions = removable.map(({ chain, position }) => {
    const before = deleted.get(chain) ?? 0;
    deleted.set(chain, before + 1);
    return `-D ${chain} ${position - before}`;
  });
  const kept = new Set(owned.jumps.filter((j) => !removable.includes(j)).map((j) => j.target));
  return [
    ...deletions,
    // Flush every chain before deleting any: our chains jump to each other.
    ...owned.chains.map((chain) => `-F ${chain}`),
    ...owned.chains.filter((chain) => !kept.has(chain)).map((chain) => `-X ${chain}`),
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
    const have = [...actual.chains.map((c) => `-N ${c}`), ...actual.jumps.map((j) => j.line), ...actual.rules];
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

/** `from` without one occurrence of each line of `remove`. */
export function multisetMinus(from: string[], remove: string[]): string[] {
  const counts = new Map<string, number>();
  for (const line of remove) counts.set(line, (counts.get(line) ?? 0) + 1);
  return from.filter((line) => {
    const n = counts.get(line) ?? 0;
    if (n === 0) return true;
    counts.set(line, n - 1);
    return false;
  });
}

/** Linear in the number of lines: CHECK runs on whatever a netns holds. */
function sameOrderPerChain(want: string[], have: string[]): boolean {
  const byChain = (lines: string[]) => {
    const chains = new Map<string, string[]>();
    for (const line of lines) {
      const chain = line.split(' ', 2)[1] ?? '';
      let list = chains.get(chain);
      if (list === undefined) chains.set(chain, (list = []));
      list.push(line);
    }
    return chains;
  };
  const had = byChain(have);
  return [...byChain(want)].every(([chain, lines]) => {
    const other = had.get(chain);
    return other !== undefined && other.length === lines.length && lines.every((line, i) => line === other[i]);
  });
}
