// The TypeScript side of the bench's Go programs: builds them (offline, standard library only) and
// drives bench/runner, which runs every measured process from inside the harness's node netns.
import { mkdirSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from '../test/harness/conflist.ts';
import { nsenterArgv, type Netns } from '../test/harness/netns.ts';
import { minimalEnv, run, runOk } from '../test/harness/proc.ts';

export const OUT_DIR = join(REPO_ROOT, 'bench', 'out');
const BIN_DIR = join(OUT_DIR, 'bin');
export const RUNNER = join(BIN_DIR, 'runner');
export const GOPOD = join(BIN_DIR, 'gopod');

/** One process: absolute argv[0], its whole environment, its stdin. */
export interface Command {
  argv: string[];
  env: string[];
  stdin: string;
  /** Keep stdout/stderr of a successful run (failed runs always keep theirs). */
  keepOutput?: boolean;
}

export interface Step extends Command {
  name: string;
  /** false: a clean-up between measured runs; it must succeed but is not timed. */
  measure: boolean;
}

export interface RunResult {
  wallNs: number;
  /** User + system CPU of the process and the children it waited for. */
  cpuNs: number;
  maxRssKiB: number;
  exit: number;
  stdout?: string;
  stderr?: string;
}

export interface StepSamples {
  name: string;
  wallNs: number[];
  cpuNs: number[];
  maxRssKiB: number[];
  /** Largest RssAnon seen per run (only with sampleAnon). */
  maxAnonKiB: number[];
  failures: number;
  firstFailure?: RunResult;
}

/** `go build` bench/runner and bench/gopod with Debian's Go, GOPATH mode, no network. */
export async function buildGoPrograms(): Promise<void> {
  mkdirSync(BIN_DIR, { recursive: true });
  for (const [name, out] of [['runner', RUNNER], ['gopod', GOPOD]] as const) {
    const tmp = `${out}.${process.pid}.tmp`;
    const r = await run(['/usr/bin/go', 'build', '-o', tmp, `./bench/${name}/`], {
      cwd: REPO_ROOT,
      timeoutMs: 300_000,
      env: minimalEnv({
        HOME: OUT_DIR,
        GO111MODULE: 'off',
        GOPATH: join(OUT_DIR, 'gopath'),
        GOCACHE: join(OUT_DIR, 'gocache'),
        GOFLAGS: '',
        CGO_ENABLED: '0',
      }),
    });
    if (r.code !== 0) {
      rmSync(tmp, { force: true });
      throw new Error(`go build bench/${name} failed:\n${r.stderr}${r.stdout}`);
    }
    renameSync(tmp, out);
  }
}

async function runner<T>(node: Netns, plan: object): Promise<T> {
  const r = await runOk(nsenterArgv(node, [RUNNER]), { input: JSON.stringify(plan), timeoutMs: 600_000 });
  return JSON.parse(r.stdout) as T;
}

/**
 * warmup + rounds passes over the steps in order, so the subjects alternate run by run and drift of
 * the machine hits them alike. Returns the measured steps' samples (warm-up runs dropped).
 */
/** sampleAnon: also sample each run's RssAnon every millisecond (costs the machine a little CPU). */
export async function runRounds(node: Netns, steps: Step[], warmup: number, rounds: number, opts: { sampleAnon?: boolean } = {}): Promise<StepSamples[]> {
  const report = await runner<{ steps: StepSamples[] }>(node, { mode: 'rounds', warmup, rounds, steps, sampleAnon: opts.sampleAnon ?? false });
  return report.steps;
}

/** Every command started at once; each latency is from the common start. */
export async function runBatch(node: Netns, jobs: Command[]): Promise<{ totalNs: number; jobs: RunResult[] }> {
  return runner(node, { mode: 'batch', jobs });
}

/** One command, its output kept. */
export async function runOnce(node: Netns, command: Command): Promise<RunResult> {
  const { jobs } = await runBatch(node, [{ ...command, keepOutput: true }]);
  return jobs[0]!;
}
