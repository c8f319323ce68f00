import { run } from './main.ts';

/**
 * One executable, several jobs. With no arguments it is the CNI plugin (the runtime gives the verb in
 * CNI_COMMAND); the node-side jobs are subcommands, each loaded only when asked for so the plugin's
 * start-up stays small. Each handler resolves to the process exit code.
 */
const SUBCOMMANDS: Record<string, (args: string[]) => Promise<number>> = {
  explain: async (args) => (await import('./explain.ts')).explain(args),
  validate: async (args) => (await import('./validate/validate.ts')).validateCommand(args),
  repair: async (args) => (await import('./repair/command.ts')).repairCommand(args),
  install: async (args) => (await import('./install/main.ts')).install(args),
  uninstall: async (args) => (await import('./install/main.ts')).uninstall(args),
};

const [subcommand, ...args] = process.argv.slice(2);
if (subcommand === undefined) {
  void run();
} else {
  const handler = SUBCOMMANDS[subcommand];
  if (handler === undefined) {
    process.stderr.write(`istio-cni: unknown subcommand ${JSON.stringify(subcommand)}; known: ${Object.keys(SUBCOMMANDS).join(', ') || 'none'}\n`);
    process.exitCode = 2;
  } else {
    void handler(args).then((code) => {
      process.exitCode = code;
    });
  }
}
