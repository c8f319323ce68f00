import { z } from 'zod';
import { parseCniArgs, type CniArgs } from './args.ts';
import { CniError, ErrorCode } from './errors.ts';

export const Command = z.enum(['ADD', 'DEL', 'CHECK', 'VERSION', 'STATUS', 'GC']);
export type Command = z.infer<typeof Command>;

/** What the runtime told us through the environment, checked for the verb at hand. */
export interface Invocation {
  command: Command;
  containerId: string;
  /** Empty on a DEL after the sandbox is gone (containerd's second DEL). */
  netns: string;
  ifName: string;
  args: CniArgs;
}

const CONTAINER_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

type Env = Readonly<Record<string, string | undefined>>;

/** Reads CNI_COMMAND alone: VERSION must answer without looking at anything else. */
export function readCommand(env: Env): Command {
  const parsed = Command.safeParse(env.CNI_COMMAND);
  if (!parsed.success) {
    throw new CniError(ErrorCode.InvalidEnvironment, 'invalid CNI_COMMAND', `CNI_COMMAND=${JSON.stringify(env.CNI_COMMAND ?? '')} is not one of ${Command.options.join(', ')}`);
  }
  return parsed.data;
}

/** The SPEC's required variables per verb; a missing or malformed one is error 4 naming it. */
export function readInvocation(command: Command, env: Env): Invocation {
  const attachment = command === 'ADD' || command === 'DEL' || command === 'CHECK';
  const needsNetns = command === 'ADD' || command === 'CHECK';
  const invalid: string[] = [];
  const containerId = env.CNI_CONTAINERID ?? '';
  if (attachment && !CONTAINER_ID.test(containerId)) invalid.push('CNI_CONTAINERID');
  const netns = env.CNI_NETNS ?? '';
  if (needsNetns && !netns.startsWith('/')) invalid.push('CNI_NETNS');
  const ifName = env.CNI_IFNAME ?? '';
  if (attachment && ifName === '') invalid.push('CNI_IFNAME');
  if (invalid.length > 0) {
    throw new CniError(ErrorCode.InvalidEnvironment, 'invalid environment variables', `missing or invalid: ${invalid.join(', ')}`);
  }
  return { command, containerId, netns, ifName, args: parseCniArgs(env.CNI_ARGS ?? '') };
}
