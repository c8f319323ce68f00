import { CniError, ErrorCode } from '../cni/errors.ts';
import { nftDifferences, ownedNftables, parseNftListing, type NftListing } from '../redirect/nftables-listing.ts';
import { renderNftRemoval, renderNftScript, type NftRuleSet } from '../redirect/nftables.ts';
import { executeInNetns } from './exec.ts';
import type { PodNetns } from './netns.ts';

/** Debian's nftables package. */
const NFT = '/usr/sbin/nft';

/** Runs one `nft -f -` transaction: all of it applies, or none of it. */
async function transaction(netns: PodNetns, script: string): Promise<void> {
  const result = await executeInNetns(netns, [NFT, '-f', '-'], script);
  if (result.code !== 0) throw new CniError(ErrorCode.IptablesFailed, 'nft -f failed', `${netns}: ${result.stderr.trim()}`);
}

async function listing(netns: PodNetns): Promise<NftListing> {
  const result = await executeInNetns(netns, [NFT, '-j', 'list', 'ruleset']);
  if (result.code !== 0) throw new CniError(ErrorCode.IptablesFailed, 'nft list ruleset failed', `${netns}: ${result.stderr.trim()}`);
  try {
    return parseNftListing(result.stdout);
  } catch (err) {
    throw new CniError(ErrorCode.IptablesFailed, 'nft list ruleset gave no readable listing', `${netns}: ${(err as Error).message.slice(0, 200)}`);
  }
}

/** Replaces our tables with `ruleSet` in one transaction: a fresh netns and a repeated ADD alike. */
export function applyNftables(netns: PodNetns, ruleSet: NftRuleSet): Promise<void> {
  return transaction(netns, renderNftScript(ruleSet));
}

/** Deletes our tables, by name, without looking first: the roll-back of a failed ADD. */
export function discardNftables(netns: PodNetns): Promise<void> {
  return transaction(netns, renderNftRemoval());
}

/** Deletes our tables, by name, and nothing else. Says which were there and whether TPROXY was in use. */
export async function removeNftables(netns: PodNetns): Promise<{ tables: string[]; tproxy: boolean }> {
  const owned = ownedNftables(await listing(netns));
  if (owned.tables.length > 0) await transaction(netns, renderNftRemoval());
  return owned;
}

/** How our tables in the netns differ from `expected`; empty when they match. */
export async function nftablesDifferences(netns: PodNetns, expected: NftRuleSet): Promise<string[]> {
  return nftDifferences(expected, await listing(netns));
}
