// The capture backend a test runs with, and what a netns holds of ours under each: iptables
// chains (nft or legacy backend) or, with native nftables, the plugin's inet tables.
//
// ISTIO_CNI_TEST_BACKEND=nftables (or nft, legacy) switches the tests that read captureBackend()
// (libcni chain, containerd, the installed chain) to that backend; unset, they use iptables-nft.
import { readFileSync } from 'node:fs';
import { execInNetns, execInNetnsOk, iptablesS, type IptablesBackend, type NetnsRef } from './netns.ts';

export const NFT = '/usr/sbin/nft';
export type CaptureBackend = IptablesBackend | 'nftables';
/** The plugin's tables under native nftables (Istio's names). */
export const NFT_TABLES = ['istio-proxy-nat', 'istio-proxy-mangle', 'istio-proxy-raw'] as const;

const BACKENDS: readonly CaptureBackend[] = ['nft', 'legacy', 'nftables'];

/** The backend chosen with ISTIO_CNI_TEST_BACKEND (default nft, iptables' nf_tables backend). */
export function captureBackend(): CaptureBackend {
  const chosen = process.env.ISTIO_CNI_TEST_BACKEND ?? 'nft';
  if (!BACKENDS.includes(chosen as CaptureBackend)) throw new Error(`ISTIO_CNI_TEST_BACKEND=${chosen}: expected one of ${BACKENDS.join(', ')}`);
  return chosen as CaptureBackend;
}

const withoutCounts = (line: string) => line.replace(/(^| )counter packets \d+ bytes \d+/, '$1counter');

/** `nft list ruleset` as lines, without counts (`counter packets 3 bytes 180` reads `counter`) and indentation. */
export async function nftRuleset(ns: NetnsRef): Promise<string[]> {
  const r = await execInNetnsOk(ns, [NFT, 'list', 'ruleset']);
  return r.stdout
    .split('\n')
    .map((l) => withoutCounts(l.trim()))
    .filter((l) => l !== '');
}

/**
 * One table of the netns as `nft list table` prints it (the same normalisation); [] when it does not
 * exist. Only that table is read: listing a whole ruleset that holds a huge table of someone else's
 * takes seconds.
 */
export async function nftTable(ns: NetnsRef, table: string, family = 'inet'): Promise<string[]> {
  const r = await execInNetns(ns, [NFT, 'list', 'table', family, table]);
  if (r.code !== 0 && /No such file or directory/.test(r.stderr)) return [];
  if (r.code !== 0) throw new Error(`nft list table ${family} ${table} failed (code ${r.code}): ${r.stderr}`);
  return r.stdout.split('\n').map((l) => withoutCounts(l.trim())).filter((l) => l !== '');
}

/** Our tables as nft lists them, one after the other; [] when the netns holds none. */
export async function ourNftTables(ns: NetnsRef): Promise<string[]> {
  return (await Promise.all(NFT_TABLES.map((t) => nftTable(ns, t)))).flat();
}

/** `family name` of every table in the netns. */
export async function nftTables(ns: NetnsRef): Promise<string[]> {
  return (await nftRuleset(ns)).filter((l) => l.startsWith('table ')).map((l) => l.slice(6, -2));
}

/** The rule lines of one chain of one of our tables, as listed (no braces, no hook line). */
export async function nftChain(ns: NetnsRef, table: string, chain: string): Promise<string[]> {
  const lines = await nftTable(ns, table);
  const start = lines.indexOf(`chain ${chain} {`);
  if (start < 0) return [];
  const end = lines.indexOf('}', start);
  return lines.slice(start + 1, end).filter((l) => !l.startsWith('type '));
}

/**
 * What the netns holds of ours in the nat table, the way to compare it with the seed: iptables' `-S`
 * listing of nat, or our nat table as nft lists it.
 */
export async function natRules(ns: NetnsRef, backend: CaptureBackend): Promise<string[]> {
  return backend === 'nftables' ? nftTable(ns, 'istio-proxy-nat') : iptablesS(ns, backend);
}

/** The seed rule set as natRules() lists it for a default pod under this backend. */
export function seedRules(backend: CaptureBackend): string[] {
  const fixture = backend === 'nftables' ? 'seed-nft.txt' : 'seed-nat-S.txt';
  return readFileSync(new URL(`../fixtures/${fixture}`, import.meta.url), 'utf8').trim().split('\n');
}

/** Anything of ours in the netns: iptables lines naming ISTIO_ in every table, or our nft tables. */
export async function ownedRules(ns: NetnsRef, backend: CaptureBackend): Promise<string[]> {
  if (backend === 'nftables') return (await ourNftTables(ns)).filter((l) => l.startsWith('table '));
  const lines: string[] = [];
  for (const table of ['nat', 'mangle', 'raw']) lines.push(...(await iptablesS(ns, backend, table)).filter((l) => l.includes('ISTIO_')));
  return lines;
}

/** The netns after DEL: natRules() of an untouched netns (iptables' policies only; no table of ours). */
export function emptyNatRules(backend: CaptureBackend): string[] {
  return backend === 'nftables' ? [] : seedRules(backend).filter((l) => l.startsWith('-P '));
}

/**
 * Deletes the rule of our nat table's chain that nft lists as `rule` (with `nft -a`'s handle), as
 * an operator or a pod with NET_ADMIN could: CHECK must notice.
 */
export async function nftDeleteRule(ns: NetnsRef, table: string, chain: string, rule: string): Promise<void> {
  const listed = (await execInNetnsOk(ns, [NFT, '-a', 'list', 'chain', 'inet', table, chain])).stdout.split('\n').map((l) => l.trim());
  const line = listed.find((l) => withoutCounts(l).replace(/ # handle \d+$/, '') === rule);
  const handle = /# handle (\d+)$/.exec(line ?? '')?.[1];
  if (!handle) throw new Error(`no rule ${JSON.stringify(rule)} in ${table} ${chain}:\n${listed.join('\n')}`);
  await execInNetnsOk(ns, [NFT, 'delete', 'rule', 'inet', table, chain, 'handle', handle]);
}
