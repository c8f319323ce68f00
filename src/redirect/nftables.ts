import type { Family } from './cidr.ts';
import type { Rule, RuleSet, Table } from './ruleset.ts';

/**
 * The rule set as native nftables: the same rules the builder makes for iptables, translated word by
 * word into nftables expressions, in the layout of Istio's native nftables mode: one `inet` table per
 * iptables table (`istio-proxy-nat`, `-mangle`, `-raw`), base chains `prerouting`/`output`, and the
 * builder's chains in lower case (`ISTIO_IN_REDIRECT` → `istio-in-redirect`). Pure data in, data or
 * text out; the netns module applies it.
 *
 * The expressions are kept as `nft -j list ruleset` prints them, so the same data renders the script
 * and is what CHECK compares the live listing with.
 */

export type NftFamily = 'ip' | 'ip6';
type MetaKey = 'l4proto' | 'nfproto' | 'iifname' | 'oifname' | 'skuid' | 'skgid' | 'mark';
type Left =
  | { meta: { key: MetaKey } }
  | { payload: { protocol: NftFamily | 'tcp' | 'udp'; field: 'saddr' | 'daddr' | 'sport' | 'dport' } }
  | { ct: { key: 'state' | 'mark' } };
type Right = number | string | string[] | { prefix: { addr: string; len: number } } | { set: number[] };

export type NftStatement =
  | { match: { op: '==' | '!=' | 'in'; left: Left; right: Right } }
  | { jump: { target: string } }
  | { counter: null }
  | { return: null }
  | { accept: null }
  | { drop: null }
  | { redirect: { port: number } }
  | { tproxy: { family: NftFamily; port: number } }
  | { mangle: { key: { meta: { key: 'mark' } } | { ct: { key: 'mark' | 'zone' } }; value: number | { meta: { key: 'mark' } } | { ct: { key: 'mark' } } } };

export interface NftBaseChain {
  type: 'nat' | 'filter' | 'route';
  hook: 'prerouting' | 'output';
  prio: number;
}
export interface NftChain {
  name: string;
  /** Hooked into the kernel; absent for a chain reached only by jumps. */
  base?: NftBaseChain;
}
export interface NftRule {
  chain: string;
  expr: NftStatement[];
}
export interface NftTable {
  name: string;
  chains: NftChain[];
  rules: NftRule[];
}
/** Every table is of family `inet`: one table holds both address families. */
export type NftRuleSet = NftTable[];

/** Istio's table per iptables table, and its base chains with the iptables table's hook priorities. */
const TABLES: Record<Table, { name: string; base: Record<'PREROUTING' | 'OUTPUT', NftBaseChain> }> = {
  nat: {
    name: 'istio-proxy-nat',
    base: { PREROUTING: { type: 'nat', hook: 'prerouting', prio: -100 }, OUTPUT: { type: 'nat', hook: 'output', prio: -100 } },
  },
  mangle: {
    name: 'istio-proxy-mangle',
    base: { PREROUTING: { type: 'filter', hook: 'prerouting', prio: -150 }, OUTPUT: { type: 'route', hook: 'output', prio: -150 } },
  },
  raw: {
    name: 'istio-proxy-raw',
    base: { PREROUTING: { type: 'filter', hook: 'prerouting', prio: -300 }, OUTPUT: { type: 'filter', hook: 'output', prio: -300 } },
  },
};

/** The tables this plugin owns in a pod netns; nothing else there is ours. */
export const NFT_TABLES: readonly string[] = Object.values(TABLES).map((t) => t.name);

const FULL_MASK = 0xffffffff;
const CT_STATE_BITS: Record<string, number> = { invalid: 1, established: 2, related: 4, new: 8, untracked: 64 };
const NFPROTO = { ip: 'ipv4', ip6: 'ipv6' } as const;
const nftFamily = (family: Family): NftFamily => (family === 6 ? 'ip6' : 'ip');

/** `ISTIO_IN_REDIRECT` → `istio-in-redirect`; `PREROUTING` → `prerouting`. */
const chainName = (chain: string) => chain.toLowerCase().replaceAll('_', '-');

const match = (left: Left, right: Right, negate = false): NftStatement => ({ match: { op: negate ? '!=' : '==', left, right } });
const meta = (key: MetaKey): Left => ({ meta: { key } });

function number(word: string | undefined, what: string): number {
  if (word === undefined || !/^(0x[0-9a-f]+|[0-9]+)$/i.test(word)) throw new Error(`nftables: ${what} ${JSON.stringify(word)} is not a number`);
  return Number(word);
}

/** `0x539/0xffffffff` or `0x539`: only whole-mark values translate to a plain `meta mark`. */
function wholeMark(word: string | undefined, what: string): number {
  const [value, mask] = (word ?? '').split('/');
  if (mask !== undefined && number(mask, `${what} mask`) !== FULL_MASK) throw new Error(`nftables: partial ${what} mask ${word} is not supported`);
  return number(value, what);
}

/** An iptables address (`10.0.0.0/8`, `127.0.0.1/32`) as nft prints it: a full-length prefix is a plain address. */
function address(word: string | undefined, family: Family): Right {
  const [addr, len] = (word ?? '').split('/');
  if (addr === undefined || !/^[0-9a-fA-F.:]+$/.test(addr) || addr.includes(':') !== (family === 6)) {
    throw new Error(`nftables: ${JSON.stringify(word)} is not an IPv${family} address`);
  }
  const length = len === undefined ? (family === 6 ? 128 : 32) : number(len, 'prefix length');
  return length === (family === 6 ? 128 : 32) ? addr : { prefix: { addr, len: length } };
}

/**
 * One iptables rule (its words as iptables-save prints them) as nftables statements, for one address
 * family. Only the words the builder uses are known; anything else is an error, never a guess.
 */
export function translateRule(rule: Rule, family: Family): NftStatement[] {
  const words = [...rule.spec];
  const out: NftStatement[] = [];
  let protocol: 'tcp' | 'udp' | undefined;
  /** Where `-p` put its `meta l4proto` match: dropped again when a port match of that protocol follows, as nft lists it. */
  let protocolAt = -1;
  let portMatched = false;
  let module = '';
  let negate = false;
  const take = (what: string) => {
    const word = words.shift();
    if (word === undefined) throw new Error(`nftables: ${what} needs a value in ${rule.spec.join(' ')}`);
    return word;
  };
  const port = (field: 'sport' | 'dport', value: Right) => {
    if (protocol === undefined) throw new Error(`nftables: a port match needs -p tcp or -p udp in ${rule.spec.join(' ')}`);
    out.push(match({ payload: { protocol, field } }, value, negate));
    portMatched = true;
  };

  while (words.length > 0) {
    const word = take('word');
    if (word === '!') {
      negate = true;
      continue;
    }
    switch (word) {
      case '-p': {
        const value = take(word);
        if (value !== 'tcp' && value !== 'udp') throw new Error(`nftables: protocol ${JSON.stringify(value)} is not supported`);
        if (!negate) {
          protocol = value;
          protocolAt = out.length;
        }
        out.push(match(meta('l4proto'), value, negate));
        break;
      }
      case '-m':
        module = take(word);
        if (!['tcp', 'udp', 'multiport', 'owner', 'mark', 'connmark', 'conntrack'].includes(module)) throw new Error(`nftables: match module ${JSON.stringify(module)} is not supported`);
        break;
      case '-s':
      case '-d':
        out.push(match({ payload: { protocol: nftFamily(family), field: word === '-s' ? 'saddr' : 'daddr' } }, address(take(word), family), negate));
        break;
      case '-i':
      case '-o':
        out.push(match(meta(word === '-i' ? 'iifname' : 'oifname'), take(word), negate));
        break;
      case '--dport':
      case '--sport':
        port(word === '--dport' ? 'dport' : 'sport', number(take(word), 'port'));
        break;
      case '--dports': {
        const ports = take(word).split(',').map((p) => number(p, 'port'));
        port('dport', ports.length === 1 ? ports[0]! : { set: ports });
        break;
      }
      case '--uid-owner':
      case '--gid-owner':
        out.push(match(meta(word === '--uid-owner' ? 'skuid' : 'skgid'), number(take(word), 'owner'), negate));
        break;
      case '--mark': {
        if (module !== 'mark' && module !== 'connmark') throw new Error(`nftables: --mark outside -m mark/connmark in ${rule.spec.join(' ')}`);
        const left: Left = module === 'mark' ? meta('mark') : { ct: { key: 'mark' } };
        out.push(match(left, wholeMark(take(word), 'mark'), negate));
        break;
      }
      case '--ctstate': {
        if (negate) throw new Error('nftables: a negated --ctstate is not supported');
        const states = take(word).toLowerCase().split(',');
        for (const state of states) if (!(state in CT_STATE_BITS)) throw new Error(`nftables: conntrack state ${JSON.stringify(state)} is not supported`);
        // nft lists the states in the order of their bits, whatever order they were written in.
        states.sort((a, b) => CT_STATE_BITS[a]! - CT_STATE_BITS[b]!);
        out.push({ match: { op: 'in', left: { ct: { key: 'state' } }, right: states.length === 1 ? states[0]! : states } });
        break;
      }
      case '-j':
        out.push(...target(take(word), words, family, rule));
        words.length = 0;
        break;
      default:
        throw new Error(`nftables: iptables word ${JSON.stringify(word)} is not supported in ${rule.spec.join(' ')}`);
    }
    negate = false;
  }
  // `meta l4proto tcp` before `tcp dport` is implied by the port match; nft lists it without.
  if (portMatched && protocolAt >= 0) out.splice(protocolAt, 1);
  return out;
}

/** `--name value` options of a target, in any order. */
function options(words: string[]): Map<string, string> {
  const found = new Map<string, string>();
  for (let i = 0; i < words.length; i++) {
    const name = words[i]!;
    if (!name.startsWith('--')) throw new Error(`nftables: unexpected target word ${JSON.stringify(name)}`);
    const next = words[i + 1];
    if (next === undefined || next.startsWith('--')) found.set(name, '');
    else {
      found.set(name, next);
      i += 1;
    }
  }
  return found;
}

function target(name: string, rest: string[], family: Family, rule: Rule): NftStatement[] {
  const opts = options(rest);
  const only = (...allowed: string[]) => {
    const unknown = [...opts.keys()].filter((o) => !allowed.includes(o));
    if (unknown.length > 0) throw new Error(`nftables: ${name} option ${unknown[0]} is not supported in ${rule.spec.join(' ')}`);
  };
  const fullMasks = (...names: string[]) => {
    for (const o of names) if (opts.has(o) && number(opts.get(o), o) !== FULL_MASK) throw new Error(`nftables: ${name} ${o} ${opts.get(o)} is not supported`);
  };
  switch (name) {
    case 'RETURN':
      only();
      return [{ return: null }];
    case 'ACCEPT':
      only();
      return [{ accept: null }];
    case 'DROP':
      only();
      return [{ drop: null }];
    case 'REDIRECT': {
      only('--to-ports');
      return [{ redirect: { port: number(opts.get('--to-ports'), 'redirect port') } }];
    }
    case 'TPROXY': {
      only('--on-port', '--on-ip', '--tproxy-mark');
      // `--on-ip 0.0.0.0` (`::`) is iptables' way of giving no address, as nft's `tproxy to :PORT`.
      const onIp = opts.get('--on-ip');
      if (onIp !== undefined && onIp !== (family === 6 ? '::' : '0.0.0.0')) throw new Error(`nftables: TPROXY --on-ip ${onIp} is not supported`);
      const statements: NftStatement[] = [{ tproxy: { family: nftFamily(family), port: number(opts.get('--on-port'), 'tproxy port') } }];
      if (opts.has('--tproxy-mark')) statements.push({ mangle: { key: { meta: { key: 'mark' } }, value: wholeMark(opts.get('--tproxy-mark'), 'tproxy mark') } });
      // The TPROXY target ends the packet's walk; the nft statement does not.
      return [...statements, { accept: null }];
    }
    case 'MARK': {
      only('--set-xmark');
      return [{ mangle: { key: { meta: { key: 'mark' } }, value: wholeMark(opts.get('--set-xmark'), 'mark') } }];
    }
    case 'CONNMARK': {
      only('--save-mark', '--restore-mark', '--nfmask', '--ctmask');
      fullMasks('--nfmask', '--ctmask');
      if (opts.has('--save-mark')) return [{ mangle: { key: { ct: { key: 'mark' } }, value: { meta: { key: 'mark' } } } }];
      if (opts.has('--restore-mark')) return [{ mangle: { key: { meta: { key: 'mark' } }, value: { ct: { key: 'mark' } } } }];
      throw new Error(`nftables: CONNMARK needs --save-mark or --restore-mark in ${rule.spec.join(' ')}`);
    }
    case 'CT': {
      only('--zone');
      return [{ mangle: { key: { ct: { key: 'zone' } }, value: number(opts.get('--zone'), 'zone') } }];
    }
    default:
      if (!/^[A-Z][A-Z0-9_]*$/.test(name) || opts.size > 0) throw new Error(`nftables: target ${JSON.stringify(name)} is not supported`);
      return [{ jump: { target: chainName(name) } }];
  }
}

/** Does a rule only ever match one address family (an address, a family's tproxy or nfproto)? */
function familyOf(expr: readonly NftStatement[]): NftFamily | undefined {
  for (const s of expr) {
    if ('match' in s) {
      const left = s.match.left;
      if ('payload' in left && (left.payload.protocol === 'ip' || left.payload.protocol === 'ip6')) return left.payload.protocol;
      if ('meta' in left && left.meta.key === 'nfproto' && s.match.op === '==') return s.match.right === 'ipv6' ? 'ip6' : 'ip';
    }
    if ('tproxy' in s) return s.tproxy.family;
  }
  return undefined;
}

const keyOf = (expr: readonly NftStatement[]) => JSON.stringify(expr);

/** A rule of one family only: it keeps its own address match, or is limited to that family explicitly. */
function limited(expr: NftStatement[], family: NftFamily): NftStatement[] {
  return familyOf(expr) === undefined ? [match(meta('nfproto'), NFPROTO[family]), ...expr] : expr;
}

/**
 * One chain's rules from the IPv4 and the IPv6 rule sets, merged. Rules that read alike in both are
 * written once; between two of them come the IPv4 rules of that stretch, then the IPv6 ones. Rules of
 * different families never match the same packet, so each family sees exactly its own rule order.
 * When the shared rules differ between the families, each family's rules are kept apart instead.
 */
function mergeChain(v4: NftStatement[][], v6: NftStatement[][]): NftStatement[][] {
  const shared = (rules: NftStatement[][]) => rules.filter((r) => familyOf(r) === undefined).map(keyOf);
  const sharedV4 = shared(v4);
  if (JSON.stringify(sharedV4) !== JSON.stringify(shared(v6))) {
    return [...v4.map((r) => limited(r, 'ip')), ...v6.map((r) => limited(r, 'ip6'))];
  }
  const merged: NftStatement[][] = [];
  let j = 0;
  for (const rule of v4) {
    if (familyOf(rule) !== undefined) {
      merged.push(rule);
      continue;
    }
    // A shared rule: the IPv6 rules up to its IPv6 twin come first.
    while (familyOf(v6[j]!) !== undefined) merged.push(v6[j++]!);
    merged.push(rule);
    j += 1;
  }
  merged.push(...v6.slice(j));
  return merged;
}

function translateTable(tableRules: RuleSet[number] | undefined, family: Family): Map<string, NftStatement[][]> {
  const chains = new Map<string, NftStatement[][]>();
  for (const chain of tableRules?.chains ?? []) chains.set(chainName(chain), []);
  for (const rule of tableRules?.rules ?? []) {
    const name = chainName(rule.chain);
    chains.set(name, [...(chains.get(name) ?? []), translateRule(rule, family)]);
  }
  return chains;
}

/** A counter on every rule, after its matches, as Istio's native mode has them: `nft list ruleset` shows
 * which rules traffic takes. */
function counted(expr: NftStatement[]): NftStatement[] {
  const at = expr.findIndex((s) => !('match' in s));
  const cut = at < 0 ? expr.length : at;
  return [...expr.slice(0, cut), { counter: null }, ...expr.slice(cut)];
}

/**
 * The IPv4 and IPv6 rule sets as our inet tables. A pod with rules in one family only (IPv4-only) gets
 * a `meta nfproto ipv6 return` at the head of each base chain: the other family passes untouched, as
 * it does with iptables, where that family gets no rules at all.
 */
export function toNftables(ipv4: RuleSet, ipv6: RuleSet): NftRuleSet {
  const tables: NftRuleSet = [];
  /** The family that has no rules, when only one has any. */
  const untouched: NftFamily | undefined = ipv6.length === 0 ? 'ip6' : ipv4.length === 0 ? 'ip' : undefined;
  for (const [table, layout] of Object.entries(TABLES) as [Table, (typeof TABLES)[Table]][]) {
    const v4 = translateTable(ipv4.find((t) => t.table === table), 4);
    const v6 = translateTable(ipv6.find((t) => t.table === table), 6);
    const names = [...new Set([...v4.keys(), ...v6.keys()])];
    if (names.length === 0) continue;
    const baseOf = (name: string) => Object.entries(layout.base).find(([builtin]) => chainName(builtin) === name)?.[1];
    const chains: NftChain[] = names.map((name) => {
      const base = baseOf(name);
      if (base === undefined && !name.startsWith('istio-')) throw new Error(`nftables: no base chain ${name} in table ${table}`);
      return base ? { name, base } : { name };
    });
    chains.sort((a, b) => Number(b.base !== undefined) - Number(a.base !== undefined));
    const rules: NftRule[] = [];
    for (const { name, base } of chains) {
      if (base && untouched) rules.push({ chain: name, expr: counted([match(meta('nfproto'), NFPROTO[untouched]), { return: null }]) });
      const [own4, own6] = [v4.get(name) ?? [], v6.get(name) ?? []];
      for (const expr of untouched ? [...own4, ...own6] : mergeChain(own4, own6)) rules.push({ chain: name, expr: counted(expr) });
    }
    tables.push({ name: layout.name, chains, rules });
  }
  return tables;
}

/** Everything that reaches the script is one of these; a value that is not cannot be smuggled in. */
const NAME = /^[a-z][a-z0-9-]*$/;
const INTERFACE = /^[A-Za-z0-9_.-]{1,15}$/;
const ADDRESS = /^[0-9a-fA-F.:]+$/;
const WORD = /^[a-z][a-z0-9]*$/;

function checked(pattern: RegExp, value: string): string {
  if (!pattern.test(value)) throw new Error(`refusing to render nftables value ${JSON.stringify(value)}`);
  return value;
}

function leftText(left: Left): string {
  // nft's own spelling: interface names without `meta`, the other keys with it.
  if ('meta' in left) return `${left.meta.key === 'iifname' || left.meta.key === 'oifname' ? '' : 'meta '}${checked(WORD, left.meta.key)}`;
  if ('payload' in left) return `${checked(WORD, left.payload.protocol)} ${checked(WORD, left.payload.field)}`;
  return `ct ${checked(WORD, left.ct.key)}`;
}

function rightText(left: Left, right: Right): string {
  if (typeof right === 'number') return String(right);
  if (Array.isArray(right)) return right.map((w) => checked(WORD, w)).join(',');
  if (typeof right === 'object') {
    if ('set' in right) return `{ ${right.set.map(String).join(', ')} }`;
    return `${checked(ADDRESS, right.prefix.addr)}/${right.prefix.len}`;
  }
  if ('meta' in left && (left.meta.key === 'iifname' || left.meta.key === 'oifname')) return `"${checked(INTERFACE, right)}"`;
  return 'payload' in left ? checked(ADDRESS, right) : checked(WORD, right);
}

const valueText = (value: { meta: { key: string } } | { ct: { key: string } }) => ('meta' in value ? `meta ${checked(WORD, value.meta.key)}` : `ct ${checked(WORD, value.ct.key)}`);

/** One statement in nft's own syntax. */
export function statementText(s: NftStatement): string {
  if ('match' in s) return `${leftText(s.match.left)} ${s.match.op === '!=' ? '!= ' : ''}${rightText(s.match.left, s.match.right)}`;
  if ('jump' in s) return `jump ${checked(NAME, s.jump.target)}`;
  if ('counter' in s) return 'counter';
  if ('return' in s) return 'return';
  if ('accept' in s) return 'accept';
  if ('drop' in s) return 'drop';
  if ('redirect' in s) return `redirect to :${s.redirect.port}`;
  if ('tproxy' in s) return `tproxy ${s.tproxy.family === 'ip6' ? 'ip6' : 'ip'} to :${s.tproxy.port}`;
  const value = typeof s.mangle.value === 'number' ? String(s.mangle.value) : valueText(s.mangle.value);
  return `${valueText(s.mangle.key)} set ${value}`;
}

export const ruleText = (rule: NftRule) => rule.expr.map(statementText).join(' ');

const baseText = (b: NftBaseChain) => `{ type ${b.type} hook ${b.hook} priority ${b.prio}; policy accept; }`;

/**
 * Input for `nft -f -`: one transaction that drops whatever of our tables the netns holds (`add` first,
 * so deleting one that is not there is no error) and creates the rule set. Applied to a fresh netns or
 * over an earlier ADD alike: never two copies of a rule, never half a rule set.
 */
export function renderNftScript(ruleSet: NftRuleSet): string {
  const lines = NFT_TABLES.flatMap((t) => [`add table inet ${t}`, `delete table inet ${t}`]);
  for (const table of ruleSet) {
    const t = checked(NAME, table.name);
    lines.push(`add table inet ${t}`);
    for (const chain of table.chains) lines.push(`add chain inet ${t} ${checked(NAME, chain.name)}${chain.base ? ` ${baseText(chain.base)}` : ''}`);
    for (const rule of table.rules) lines.push(`add rule inet ${t} ${checked(NAME, rule.chain)} ${ruleText(rule)}`);
  }
  return `${lines.join('\n')}\n`;
}

/** Input for `nft -f -` that removes our tables and nothing else. */
export function renderNftRemoval(): string {
  return renderNftScript([]);
}
