import { run } from './main.ts';

// The runtime executes the plugin with no arguments; the verb comes from CNI_COMMAND.
void run();
