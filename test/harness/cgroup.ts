// A memory cgroup (v1, as on these machines) for one test's processes: a ceiling, so that a run that
// reads without bound is killed instead of taking the shared machine's memory, and its peak usage.
import { mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { registerCleanup, sleep } from './proc.ts';
import { PYTHON } from './traffic.ts';

const MEMORY_ROOT = '/sys/fs/cgroup/memory';
let counter = 0;

export interface MemoryCgroup {
  path: string;
  /** `inner` run inside the cgroup (it joins before exec, so everything it allocates is counted). */
  argv(inner: readonly string[]): string[];
  /** The most memory the cgroup's processes used at once, in bytes. */
  peakBytes(): number;
}

export function makeMemoryCgroup(limitBytes: number): MemoryCgroup {
  const path = `${MEMORY_ROOT}/icni-${process.pid}-${++counter}`;
  mkdirSync(path);
  writeFileSync(`${path}/memory.limit_in_bytes`, String(limitBytes));
  const remove = () => {
    try {
      rmdirSync(path);
      return true;
    } catch {
      return false;
    }
  };
  registerCleanup(`memory cgroup ${path}`, remove, async () => {
    // A process killed a moment ago may still be leaving it.
    for (let i = 0; i < 50 && !remove(); i++) await sleep(100);
  });
  const join = 'import os, sys; open(sys.argv[1], "w").write(str(os.getpid())); os.execv(sys.argv[2], sys.argv[2:])';
  return {
    path,
    argv: (inner) => [PYTHON, '-c', join, `${path}/cgroup.procs`, ...inner],
    peakBytes: () => Number(readFileSync(`${path}/memory.max_usage_in_bytes`, 'utf8')),
  };
}
