// Entry of the snapshot build (build.mjs --mode snapshot, the default). Node runs this bundle once
// at build time and saves the V8 heap as a startup snapshot: every module that src/main.ts imports
// (zod, pino, yaml, src/*) is then already loaded when dist/istio-cni starts, which only
// deserializes that heap and calls the function below, which runs src/cli.ts as `node src/cli.ts`
// would. So modules must do no per-run work at top level (env, argv, stdin, clocks, loggers) and
// must load snapshot-unsafe builtins (tls, https, net, child_process, worker_threads) lazily.
// warmUp() runs the hot path once before the heap is saved, so that it is saved compiled.
// node:crypto is snapshot-safe (node:tls is not) and node:tls, which the pod GET loads, needs it:
// loaded here, it is ~20 modules fewer to load per ADD.
import v8 from 'node:v8';
import '../src/main.ts';
import { warmUp } from './warm-up.ts';

function main(): void {
  void import('../src/cli.ts');
}

if (v8.startupSnapshot?.isBuildingSnapshot()) {
  process.getBuiltinModule('node:crypto');
  warmUp();
  v8.startupSnapshot.setDeserializeMainFunction(main);
} else {
  main();
}
