/**
 * A netns's nftables capture as two plugins can be compared: `nft -j list ruleset` read back for the
 * inet tables named istio-*, normalised only where the listing carries no meaning:
 * - handles and counter values (and where in a rule the counter sits);
 * - the order of the matches within a rule (a rule's matches are one conjunction);
 * - the order of chains in a table (the order they were created in);
 * - how rules of the two address families interleave: a rule with an `ip` match never sees an IPv6
 *   packet, so each chain is compared as the two sequences the families walk, IPv4's (rules for IPv4
 *   or both) and IPv6's (rules for IPv6 or both);
 * - the order within a run of rules that only return: whichever of them matches, the packet returns.
 * Rules are shown as `nft -a list ruleset` prints them.
 */
import * as h from '../harness/index.ts';

type Expr = Record<string, unknown>;
type Family = 'ip' | 'ip6';

export interface ListedRule {
  /** Canonical JSON of the matches (sorted) and statements (in order). */
  key: string;
  /** The family the rule is limited to, if any. */
  family: Family | undefined;
  /** Its only statement is `return`. */
  returns: boolean;
  /** The rule as nft lists it, without counts. */
  text: string;
}

export interface NftState {
  /** `table/chain` → its hook (`type nat hook output priority -100 policy accept`, or `regular`). */
  chains: Map<string, string>;
  /** `table/chain` → its rules in order. */
  rules: Map<string, ListedRule[]>;
}

function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value).sort(([a], [b]) => (a < b ? -1 : 1));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${k === 'set' && Array.isArray(v) ? canonical([...v].map(canonical).sort()) : canonical(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

function familyOf(expr: Expr[]): Family | undefined {
  for (const e of expr) {
    const match = e.match as { op: string; left: Expr; right: unknown } | undefined;
    const payload = match?.left.payload as { protocol?: string } | undefined;
    if (payload?.protocol === 'ip' || payload?.protocol === 'ip6') return payload.protocol;
    if ((match?.left.meta as { key?: string } | undefined)?.key === 'nfproto' && match?.op === '==') return match.right === 'ipv6' ? 'ip6' : 'ip';
    const tproxy = e.tproxy as { family?: Family } | undefined;
    if (tproxy?.family) return tproxy.family;
  }
  return undefined;
}

/** Reads the istio-* inet tables of the netns. */
export async function readNftState(ns: h.NetnsRef): Promise<NftState> {
  const listing = JSON.parse((await h.execInNetnsOk(ns, [h.NFT, '-j', 'list', 'ruleset'])).stdout) as { nftables: Record<string, Expr>[] };
  // `nft -a` ends each rule with `# handle N`: the rule's text by its handle.
  const texts = new Map<string, string>();
  let table = '';
  for (const line of (await h.execInNetnsOk(ns, [h.NFT, '-a', 'list', 'ruleset'])).stdout.split('\n').map((l) => l.trim())) {
    const opened = /^table (\S+ \S+) \{/.exec(line);
    if (opened) table = opened[1]!;
    const handle = / # handle (\d+)$/.exec(line);
    if (handle && !line.startsWith('chain ') && !line.startsWith('table ')) texts.set(`${table}#${handle[1]}`, line.slice(0, handle.index).replace(/(^| )counter packets \d+ bytes \d+/, '$1counter'));
  }
  const state: NftState = { chains: new Map(), rules: new Map() };
  const ours = (item: Expr) => item.family === 'inet' && /^istio-/.test(String(item.table));
  for (const item of listing.nftables) {
    const chain = item.chain as Expr | undefined;
    if (chain && ours(chain)) {
      state.chains.set(`${chain.table}/${chain.name}`, chain.hook ? `type ${chain.type} hook ${chain.hook} priority ${chain.prio} policy ${chain.policy}` : 'regular');
    }
    const rule = item.rule as (Expr & { expr: Expr[] }) | undefined;
    if (rule && ours(rule)) {
      const expr = rule.expr.filter((e) => !('counter' in e));
      const matches = expr.filter((e) => 'match' in e).map(canonical).sort();
      const statements = expr.filter((e) => !('match' in e)).map(canonical);
      const where = `${rule.table}/${rule.chain}`;
      const listed = { key: `${matches.join(' ')} | ${statements.join(' ')}`, family: familyOf(expr), returns: statements.join() === '{"return":null}', text: texts.get(`inet ${rule.table}#${rule.handle}`) ?? canonical(rule.expr) };
      state.rules.set(where, [...(state.rules.get(where) ?? []), listed]);
    }
  }
  return state;
}

export interface NftDifference {
  /** `table/chain`, and for rules the family whose walk differs. */
  where: string;
  kind: 'only-ours' | 'only-istio' | 'order' | 'hook';
  line: string;
}

function multisetMinus(from: ListedRule[], remove: ListedRule[]): ListedRule[] {
  const counts = new Map<string, number>();
  for (const r of remove) counts.set(r.key, (counts.get(r.key) ?? 0) + 1);
  return from.filter((r) => {
    const n = counts.get(r.key) ?? 0;
    if (n === 0) return true;
    counts.set(r.key, n - 1);
    return false;
  });
}

/** The keys of a walk, each run of rules that only return in a fixed order. */
function walkKeys(rules: ListedRule[]): string[] {
  const keys: string[] = [];
  let run: string[] = [];
  for (const rule of [...rules, undefined]) {
    if (rule?.returns) {
      run.push(rule.key);
      continue;
    }
    keys.push(...run.sort());
    run = [];
    if (rule) keys.push(rule.key);
  }
  return keys;
}

/** Every difference between two netns' capture; none means the same chains, hooks and, per family, the same rules in the same order. */
export function nftStateDifferences(ours: NftState, istio: NftState): NftDifference[] {
  const found: NftDifference[] = [];
  for (const chain of [...new Set([...ours.chains.keys(), ...istio.chains.keys()])].sort()) {
    const [a, b] = [ours.chains.get(chain), istio.chains.get(chain)];
    if (a === undefined || b === undefined) {
      found.push({ where: chain, kind: a === undefined ? 'only-istio' : 'only-ours', line: `chain (${a ?? b})` });
      continue;
    }
    if (a !== b) found.push({ where: chain, kind: 'hook', line: `ours: ${a}; istio: ${b}` });
    for (const family of ['ip', 'ip6'] as const) {
      const walk = (state: NftState) => (state.rules.get(chain) ?? []).filter((r) => r.family === undefined || r.family === family);
      const [mine, theirs] = [walk(ours), walk(istio)];
      const where = `${chain} (${family === 'ip' ? 'IPv4' : 'IPv6'})`;
      const onlyOurs = multisetMinus(mine, theirs);
      const onlyIstio = multisetMinus(theirs, mine);
      found.push(...onlyOurs.map((r) => ({ where, kind: 'only-ours' as const, line: r.text })), ...onlyIstio.map((r) => ({ where, kind: 'only-istio' as const, line: r.text })));
      if (onlyOurs.length === 0 && onlyIstio.length === 0 && walkKeys(mine).join('\n') !== walkKeys(theirs).join('\n')) {
        found.push({ where, kind: 'order', line: mine.map((r) => r.text).join(' ; ') });
      }
    }
  }
  return found;
}
