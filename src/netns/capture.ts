import { CniError, ErrorCode } from '../cni/errors.ts';
import type { Family } from '../redirect/cidr.ts';
import { toNftables } from '../redirect/nftables.ts';
import { differences } from '../redirect/restore.ts';
import { buildRuleSet, usesTproxyRouting, type RuleSet } from '../redirect/ruleset.ts';
import type { RedirectSettings } from '../redirect/settings.ts';
import { executeInNetns } from './exec.ts';
import { applyRuleSet, readState, removeRuleSet, resolveBackend, type Backend } from './iptables.ts';
import type { PodNetns } from './netns.ts';
import { applyNftables, discardNftables, nftablesDifferences, removeNftables } from './nftables.ts';

const IP = '/usr/sbin/ip';
const FAMILIES: readonly Family[] = [4, 6];
/** Istio's inbound passthrough source for IPv6; lo only has ::1 by default. */
const IPV6_PASSTHROUGH_ADDRESS = '::6/128';

/** An iptables backend (one restore per family), or native nftables (one `nft -f` for both families). */
export type CaptureBackend = Backend | 'nftables';

export function resolveCaptureBackend(choice: Backend | 'auto' | 'nftables'): CaptureBackend {
  return choice === 'nftables' ? choice : resolveBackend(choice);
}

async function ip(netns: PodNetns, args: string[]) {
  return executeInNetns(netns, [IP, ...args]);
}

async function ipOrFail(netns: PodNetns, args: string[]): Promise<string> {
  const result = await ip(netns, args);
  if (result.code !== 0) {
    throw new CniError(ErrorCode.IptablesFailed, `ip ${args.join(' ')} failed`, `${netns}: ${result.stderr.trim()}`);
  }
  return result.stdout;
}

/** `fwmark 0x539 lookup 133` as `ip rule show` prints it. */
const tproxyRuleText = (s: RedirectSettings) => `fwmark 0x${s.tproxyMark.toString(16)} lookup ${s.tproxyRouteTable}`;

async function hasTproxyRule(netns: PodNetns, family: Family, s: RedirectSettings): Promise<boolean> {
  return (await ipOrFail(netns, [`-${family}`, 'rule', 'show'])).includes(tproxyRuleText(s));
}

/** TPROXY-marked packets are routed to lo: a policy rule for the mark and a local default route. */
async function addTproxyRouting(netns: PodNetns, family: Family, s: RedirectSettings): Promise<void> {
  if (!(await hasTproxyRule(netns, family, s))) {
    await ipOrFail(netns, [`-${family}`, 'rule', 'add', 'fwmark', String(s.tproxyMark), 'lookup', String(s.tproxyRouteTable)]);
  }
  await ipOrFail(netns, [`-${family}`, 'route', 'replace', 'local', 'default', 'dev', 'lo', 'table', String(s.tproxyRouteTable)]);
}

async function removeTproxyRouting(netns: PodNetns, family: Family, s: RedirectSettings): Promise<void> {
  while (await hasTproxyRule(netns, family, s)) {
    await ipOrFail(netns, [`-${family}`, 'rule', 'del', 'fwmark', String(s.tproxyMark), 'lookup', String(s.tproxyRouteTable)]);
  }
  // The table holds only our route; flushing an empty table is not an error worth failing DEL for.
  await ip(netns, [`-${family}`, 'route', 'flush', 'table', String(s.tproxyRouteTable)]);
}

/** What a family's rules need outside the rule set: ::6 on lo for IPv6, TPROXY's routing. */
async function prepareFamily(netns: PodNetns, family: Family, settings: RedirectSettings): Promise<void> {
  if (family === 6) {
    const added = await ip(netns, ['-6', 'addr', 'add', IPV6_PASSTHROUGH_ADDRESS, 'dev', 'lo']);
    if (added.code !== 0 && !/exists|already assigned/i.test(added.stderr)) {
      throw new CniError(ErrorCode.IptablesFailed, `cannot add ${IPV6_PASSTHROUGH_ADDRESS} to lo`, `${netns}: ${added.stderr.trim()}`);
    }
  }
  if (usesTproxyRouting(settings)) await addTproxyRouting(netns, family, settings);
}

/** The rule set of each family; an empty one (an IPv4-only pod's IPv6, mode NONE) is not programmed. */
const ruleSets = (settings: RedirectSettings | undefined): Record<Family, RuleSet> => ({
  4: settings ? buildRuleSet(settings, 4) : [],
  6: settings ? buildRuleSet(settings, 6) : [],
});

/**
 * Programs every family the pod needs. With iptables each family is one restore, and when a later
 * family fails the families already programmed are removed again; with nftables both families are
 * one transaction. Either way the pod ends with all of its rules or none of them.
 */
export async function applyCapture(netns: PodNetns, backend: CaptureBackend, settings: RedirectSettings): Promise<string> {
  const sets = ruleSets(settings);
  const needed = FAMILIES.filter((family) => sets[family].length > 0);
  const prepared: Family[] = [];
  try {
    for (const family of needed) {
      prepared.push(family);
      await prepareFamily(netns, family, settings);
      if (backend !== 'nftables') await applyRuleSet(netns, backend, sets[family], family);
    }
    if (backend === 'nftables' && needed.length > 0) await applyNftables(netns, toNftables(sets[4], sets[6]));
  } catch (err) {
    if (backend === 'nftables' && needed.length > 0) await discardNftables(netns).catch(() => undefined);
    for (const family of prepared) {
      if (backend !== 'nftables') await removeRuleSet(netns, backend, family).catch(() => undefined);
      if (usesTproxyRouting(settings)) await removeTproxyRouting(netns, family, settings).catch(() => undefined);
    }
    throw err;
  }
  return needed.map((family) => `ipv${family}`).join('+') || 'none';
}

/** Removes our rules of both families (and TPROXY's routing when it was in use); true when anything was there. */
export async function removeCapture(netns: PodNetns, backend: CaptureBackend, settings: RedirectSettings): Promise<boolean> {
  if (backend === 'nftables') {
    const owned = await removeNftables(netns);
    if (owned.tproxy) for (const family of FAMILIES) await removeTproxyRouting(netns, family, settings);
    return owned.tables.length > 0;
  }
  let removed = false;
  for (const family of FAMILIES) {
    const owned = await removeRuleSet(netns, backend, family);
    removed ||= owned.size > 0;
    if (owned.get('mangle')?.chains.includes('ISTIO_DIVERT')) await removeTproxyRouting(netns, family, settings);
  }
  return removed;
}

/** How the netns differs from what the pod needs, in both families; empty when it matches. */
export async function captureDifferences(netns: PodNetns, backend: CaptureBackend, settings: RedirectSettings | undefined): Promise<string[]> {
  const sets = ruleSets(settings);
  const found = backend === 'nftables' ? await nftablesDifferences(netns, toNftables(sets[4], sets[6])) : [];
  for (const family of FAMILIES) {
    const label = family === 6 ? 'ipv6 ' : '';
    if (backend !== 'nftables') for (const line of differences(sets[family], await readState(netns, backend, family))) found.push(label + line);
    if (settings && usesTproxyRouting(settings) && sets[family].length > 0 && !(await hasTproxyRule(netns, family, settings))) {
      found.push(`${label}missing ip rule ${tproxyRuleText(settings)}`);
    }
  }
  return found;
}
