import { run } from './main.ts';

/**
 * One executable, several jobs. With no arguments it is the CNI plugin (the runtime gives the verb in
 * CNI_COMMAND); the node-side jobs are subcommands, loaded only when asked for (src/subcommands.ts)
 * so that the plugin's start-up stays small.
 */
const [subcommand, ...args] = process.argv.slice(2);
if (subcommand === undefined) {
  void run();
} else {
  void import('./subcommands.ts').then(async ({ SUBCOMMANDS }) => {
    const handler = SUBCOMMANDS[subcommand];
    if (handler === undefined) {
      process.stderr.write(`istio-cni: unknown subcommand ${JSON.stringify(subcommand)}; known: ${Object.keys(SUBCOMMANDS).join(', ')}\n`);
      process.exitCode = 2;
      return;
    }
    process.exitCode = await handler(args);
  });
}
