import type { z } from 'zod';

/** A subcommand's command line could not be used: the message says which flag and why. */
export class UsageError extends Error {}

/** Each flag a subcommand knows: a switch (`--ipv6`) or one that takes a value (`--timeout 5`). */
export type FlagKinds = Record<string, 'switch' | 'value'>;

/**
 * A subcommand's flags: `--name value`, `--name=value`, and `--name` alone for a switch (then
 * `true`). The result is for a zod schema to check.
 */
export function readFlags(args: readonly string[], kinds: FlagKinds): Record<string, string | true> {
  const { flags, operands } = readCommandLine(args, kinds);
  if (operands.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(operands[0])}`);
  return flags;
}

/** Flags as readFlags reads them, and the arguments that are neither a flag nor a flag's value, in order. */
export function readCommandLine(args: readonly string[], kinds: FlagKinds): { flags: Record<string, string | true>; operands: string[] } {
  const flags: Record<string, string | true> = {};
  const operands: string[] = [];
  for (let i = 0; i < args.length; i += 1) {
    const match = /^--([a-z][a-z0-9-]*)(?:=(.*))?$/s.exec(args[i]!);
    if (!match) {
      if (args[i]!.startsWith('-')) throw new UsageError(`unexpected argument ${JSON.stringify(args[i])}`);
      operands.push(args[i]!);
      continue;
    }
    const [, name, inline] = match as unknown as [string, string, string | undefined];
    const kind = Object.hasOwn(kinds, name) ? kinds[name] : undefined;
    if (kind === undefined) {
      throw new UsageError(`unknown flag --${name}; known: ${Object.keys(kinds).map((k) => `--${k}`).join(', ')}`);
    }
    if (kind === 'switch') {
      if (inline !== undefined) throw new UsageError(`--${name} takes no value`);
      flags[name] = true;
    } else if (inline !== undefined) {
      flags[name] = inline;
    } else {
      const value = args[i + 1];
      if (value === undefined) throw new UsageError(`--${name} needs a value`);
      flags[name] = value;
      i += 1;
    }
  }
  return { flags, operands };
}

/** Checks flags (or flags merged over environment values) against a schema; the first problem is the error. */
export function parseFlags<T extends z.ZodType>(schema: T, input: Record<string, unknown>): z.output<T> {
  const parsed = schema.safeParse(input);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0];
  const where = issue?.path.length ? `--${issue.path.join('.')}` : 'arguments';
  throw new UsageError(`${where}: ${issue?.message ?? 'invalid'}`);
}

/**
 * Runs a subcommand; a bad command line is exit status 2 with one line on stderr (and the usage line,
 * when given), never a stack trace.
 */
export async function withUsage(name: string, command: () => Promise<number>, usage?: string): Promise<number> {
  try {
    return await command();
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`istio-cni ${name}: ${err.message}\n${usage === undefined ? '' : `${usage}\n`}`);
    return 2;
  }
}
