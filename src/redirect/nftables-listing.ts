import { z } from 'zod';
import { NFT_TABLES, ruleText, type NftBaseChain, type NftRuleSet, type NftStatement } from './nftables.ts';

/**
 * Reading `nft -j list ruleset` back, for CHECK and DEL. A pod with NET_ADMIN owns its netns and can
 * put anything there: the listing is untrusted data. It is parsed for our tables only, compared with
 * what we expect, and quoted (shortened) in messages; nothing of it is ever sent to a command.
 */

const Named = z.object({ family: z.string(), table: z.string(), name: z.string() });
const ListedChain = Named.extend({ type: z.string().optional(), hook: z.string().optional(), prio: z.number().optional(), policy: z.string().optional() });
const ListedRule = z.object({ family: z.string(), table: z.string(), chain: z.string(), expr: z.array(z.unknown()) });
const Listing = z.object({ nftables: z.array(z.record(z.string(), z.unknown())) });

export interface ListedTable {
  chains: Map<string, Partial<NftBaseChain> & { policy?: string }>;
  rules: Map<string, unknown[][]>;
}
/** Our tables as the netns holds them, by name; the rest of the ruleset is not ours and is left out. */
export type NftListing = Map<string, ListedTable>;

const ours = (item: { family: string; name?: string; table?: string }) => item.family === 'inet' && NFT_TABLES.includes(item.table ?? item.name ?? '');

/** Parses `nft -j list ruleset` output; throws when it is not a listing at all. */
export function parseNftListing(text: string): NftListing {
  const listing = Listing.parse(JSON.parse(text));
  const tables: NftListing = new Map();
  const table = (name: string) => {
    if (!tables.has(name)) tables.set(name, { chains: new Map(), rules: new Map() });
    return tables.get(name)!;
  };
  for (const item of listing.nftables) {
    const t = z.object({ family: z.string(), name: z.string() }).safeParse(item.table);
    if (t.success && ours(t.data)) table(t.data.name);
    const c = ListedChain.safeParse(item.chain);
    if (c.success && ours(c.data)) {
      const { type, hook, prio, policy } = c.data;
      table(c.data.table).chains.set(c.data.name, { ...(type ? { type: type as NftBaseChain['type'] } : {}), ...(hook ? { hook: hook as NftBaseChain['hook'] } : {}), ...(prio !== undefined ? { prio } : {}), ...(policy ? { policy } : {}) });
    }
    const r = ListedRule.safeParse(item.rule);
    if (r.success && ours(r.data)) {
      const rules = table(r.data.table).rules;
      rules.set(r.data.chain, [...(rules.get(r.data.chain) ?? []), r.data.expr]);
    }
  }
  return tables;
}

/** JSON with sorted keys, set elements sorted and counters without their counts: two listings of
 * the same rule compare equal. */
function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value).sort(([a], [b]) => (a < b ? -1 : 1));
    const member = (k: string, v: unknown) => (k === 'counter' ? 'null' : k === 'set' && Array.isArray(v) ? canonical([...v].sort()) : canonical(v));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${member(k, v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

/** A listed rule for a message: in nft's syntax when it is a kind we write, else its JSON, shortened. */
function quote(expr: unknown[]): string {
  let text: string;
  try {
    text = ruleText({ chain: '', expr: expr as NftStatement[] });
  } catch {
    text = JSON.stringify(expr);
  }
  return JSON.stringify(text.length > 160 ? `${text.slice(0, 160)}…` : text);
}

const hookText = (c: Partial<NftBaseChain> & { policy?: string }) => (c.hook === undefined ? 'a regular chain' : `type ${c.type} hook ${c.hook} priority ${c.prio} policy ${c.policy}`);

/**
 * How the netns differs from `expected`: each missing or unexpected table and chain, a base chain
 * hooked differently, and per chain the first rule that differs (its position, what was expected and
 * what is there). Empty when our tables hold exactly the expected rules in the expected order.
 */
export function nftDifferences(expected: NftRuleSet, listing: NftListing): string[] {
  const found: string[] = [];
  for (const name of NFT_TABLES) {
    const want = expected.find((t) => t.name === name);
    const have = listing.get(name);
    if (!want && !have) continue;
    if (!want || !have) {
      found.push(`${want ? 'missing' : 'unexpected'} table inet ${name}`);
      continue;
    }
    const wantChains = new Map(want.chains.map((c) => [c.name, c.base ? { ...c.base, policy: 'accept' } : {}]));
    for (const chain of new Set([...wantChains.keys(), ...have.chains.keys()])) {
      const w = wantChains.get(chain);
      const h = have.chains.get(chain);
      if (!w || !h) {
        found.push(`${name}: ${w ? 'missing' : 'unexpected'} chain ${chain}`);
        continue;
      }
      if (hookText(w) !== hookText(h)) found.push(`${name} ${chain}: expected ${hookText(w)}, found ${hookText(h)}`);
      const wantRules = want.rules.filter((r) => r.chain === chain).map((r) => r.expr as unknown[]);
      const haveRules = have.rules.get(chain) ?? [];
      const at = firstDifference(wantRules, haveRules);
      if (at === undefined) continue;
      const [w2, h2] = [wantRules[at], haveRules[at]];
      const where = `${name} ${chain} rule ${at + 1}`;
      if (w2 && h2) found.push(`${where}: expected ${quote(w2)}, found ${quote(h2)}`);
      else if (w2) found.push(`${where}: missing ${quote(w2)}`);
      else found.push(`${where}: unexpected ${quote(h2!)}`);
    }
  }
  return found;
}

function firstDifference(want: unknown[][], have: unknown[][]): number | undefined {
  for (let i = 0; i < Math.max(want.length, have.length); i++) {
    if (want[i] === undefined || have[i] === undefined || canonical(want[i]) !== canonical(have[i])) return i;
  }
  return undefined;
}

/** Which of our tables the netns holds, and whether TPROXY's divert chain is among them (DEL then removes its routing too). */
export function ownedNftables(listing: NftListing): { tables: string[]; tproxy: boolean } {
  return { tables: [...listing.keys()], tproxy: listing.get('istio-proxy-mangle')?.chains.has('istio-divert') ?? false };
}
