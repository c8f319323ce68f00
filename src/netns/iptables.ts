import { realpathSync } from 'node:fs';
import { CniError, ErrorCode } from '../cni/errors.ts';
import { ownedState, parseSave, renderCreate, renderRemoval, renderReplace, UnreadableSave, type OwnedTable, type SavedState } from '../redirect/restore.ts';
import type { Family } from '../redirect/cidr.ts';
import type { RuleSet } from '../redirect/ruleset.ts';
import { executeInNetns } from './exec.ts';
import type { PodNetns } from './netns.ts';

export type Backend = 'nft' | 'legacy';

const SBIN = '/usr/sbin';
/** Waits for the legacy backend's xtables lock when many pods start at once. */
const LOCK_WAIT_SECONDS = '10';

/** "auto" follows the node's `iptables` alternative, so the pod's rules use the backend the node uses. */
export function resolveBackend(choice: Backend | 'auto'): Backend {
  if (choice !== 'auto') return choice;
  try {
    return realpathSync(`${SBIN}/iptables`).includes('legacy') ? 'legacy' : 'nft';
  } catch {
    return 'nft';
  }
}

/** `iptables` or `ip6tables`: the tool of an address family, as it is named in messages. */
const tool = (family: Family) => (family === 6 ? 'ip6tables' : 'iptables');
/** `iptables-nft`, `ip6tables-legacy`, …: the program prefix for a backend and an address family. */
const program = (backend: Backend, family: Family) => `${SBIN}/${tool(family)}-${backend}`;

async function restore(netns: PodNetns, backend: Backend, family: Family, text: string) {
  return executeInNetns(netns, [`${program(backend, family)}-restore`, '--noflush', '--wait', LOCK_WAIT_SECONDS], text);
}

export async function readState(netns: PodNetns, backend: Backend, family: Family = 4): Promise<SavedState> {
  const result = await executeInNetns(netns, [`${program(backend, family)}-save`]);
  if (result.code !== 0) {
    throw new CniError(ErrorCode.IptablesFailed, `${tool(family)}-save failed`, `${netns}: ${result.stderr.trim()}`);
  }
  try {
    return parseSave(result.stdout);
  } catch (err) {
    if (!(err instanceof UnreadableSave)) throw err;
    throw new CniError(ErrorCode.IptablesFailed, `${tool(family)}-save output of the pod's netns cannot be read`, `${netns}: ${err.message}`);
  }
}

async function restoreOrFail(netns: PodNetns, backend: Backend, family: Family, text: string): Promise<void> {
  const result = await restore(netns, backend, family, text);
  if (result.code !== 0) {
    throw new CniError(ErrorCode.IptablesFailed, `${tool(family)}-restore failed`, `${netns}: ${result.stderr.trim()}`);
  }
}

/**
 * Programs `ruleSet` atomically. A fresh netns takes one restore; when that fails because something of
 * ours is already there (a repeated ADD), the state is read and replaced in one transaction, so the
 * netns never ends with two copies of a rule or half a rule set.
 */
export async function applyRuleSet(netns: PodNetns, backend: Backend, ruleSet: RuleSet, family: Family = 4): Promise<'created' | 'replaced'> {
  const fresh = await restore(netns, backend, family, renderCreate(ruleSet));
  if (fresh.code === 0) return 'created';
  const saved = await readState(netns, backend, family);
  if (renderRemoval(saved) === '') {
    throw new CniError(ErrorCode.IptablesFailed, `${tool(family)}-restore failed`, `${netns}: ${fresh.stderr.trim()}`);
  }
  await restoreOrFail(netns, backend, family, renderReplace(ruleSet, saved));
  return 'replaced';
}

/** Removes every chain of ours and every jump into them, and returns what it removed (nothing to do is success). */
export async function removeRuleSet(netns: PodNetns, backend: Backend, family: Family = 4): Promise<Map<string, OwnedTable>> {
  const saved = await readState(netns, backend, family);
  const removal = renderRemoval(saved);
  if (removal !== '') await restoreOrFail(netns, backend, family, removal);
  return ownedState(saved);
}
