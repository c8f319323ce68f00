import { explain } from './explain.ts';
import { install, uninstall } from './install/main.ts';
import { repairCommand } from './repair/command.ts';
import { validateCommand } from './validate/validate.ts';

/**
 * The node-side jobs of the executable, each resolving to the process exit code. The build keeps
 * this module and all it imports (the installer, its pod cache with @kubernetes/client-node, repair,
 * pino) out of the plugin's start-up snapshot: a CNI verb never pays for them.
 */
export const SUBCOMMANDS: Record<string, (args: string[]) => Promise<number>> = {
  explain,
  validate: validateCommand,
  repair: repairCommand,
  install,
  uninstall,
};
