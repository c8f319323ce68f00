/**
 * The test projects. `unit` needs neither root nor dist/istio-cni and runs its files in parallel;
 * every other project runs as root against the built executable, one file at a time (the files
 * share the kernel's netns names, the legacy xtables lock and host paths), each project after the
 * one before (sequence.groupOrder). node:test had no timeout: these are far above the longest
 * test seen (compat's differential, about 130 s; the cluster's scenarios run minutes each).
 * npm test [-- file ...] | npm run test:unit | npm test -- --project e2e
 */
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { defineConfig } from 'vitest/config';
import type { TestProjectInlineConfiguration } from 'vitest/config';
import type { Reporter, TestModule } from 'vitest/node';

const MINUTE = 60_000;

/** A root project: its files one after another, in its own turn. */
function serial(name: string, include: string[], groupOrder: number, minutes = { test: 15, hook: 30 }): TestProjectInlineConfiguration {
  return {
    extends: true,
    test: {
      name,
      include,
      fileParallelism: false,
      testTimeout: minutes.test * MINUTE,
      hookTimeout: minutes.hook * MINUTE,
      sequence: { groupOrder },
    },
  };
}

const projects: TestProjectInlineConfiguration[] = [
  { extends: true, test: { name: 'unit', include: ['test/unit/**/*.test.ts'], testTimeout: 2 * MINUTE, hookTimeout: 2 * MINUTE, sequence: { groupOrder: 0 } } },
  serial('harness', ['test/harness.test.ts'], 1),
  serial('e2e', ['test/e2e/**/*.test.ts'], 2),
  serial('install', ['test/install/**/*.test.ts'], 3),
  serial('runtime', ['test/runtime/**/*.test.ts'], 4),
  serial('image', ['test/image/**/*.test.ts'], 5),
  serial('compat', ['test/compat/**/*.test.ts'], 6),
  serial('cluster', ['test/cluster/**/*.test.ts'], 7, { test: 45, hook: 45 }),
];

/** Every test file under test/ (but test/.work) belongs to a project: none is left out unseen. */
function testFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return entry.name === '.work' || entry.name === 'node_modules' ? [] : testFiles(path);
    return entry.name.endsWith('.test.ts') ? [path] : [];
  });
}
const dirs = projects.flatMap((p) => p.test?.include ?? []).map((glob) => glob.replace(/\/\*\*\/\*\.test\.ts$/, '/'));
const orphans = testFiles('test').filter((file) => !dirs.some((dir) => (dir.endsWith('/') ? file.startsWith(dir) : file === dir)));
if (orphans.length > 0) throw new Error(`vitest.config.ts: no project runs ${orphans.join(', ')}`);

/** The closing line CI and people read, as the node:test runner printed it. */
class CountReporter implements Reporter {
  onTestRunEnd(modules: ReadonlyArray<TestModule>): void {
    const count = { passed: 0, failed: 0, skipped: 0, pending: 0 };
    for (const module of modules) {
      const before = count.failed;
      for (const test of module.children.allTests()) count[test.result().state] += 1;
      // A file that failed outside its tests (an import, a hook) counts once.
      if (module.state() === 'failed' && count.failed === before) count.failed += 1;
    }
    process.stdout.write(`\ntests: ${count.passed} passed, ${count.failed} failed, ${count.skipped} skipped\n`);
  }
}

export default defineConfig({
  test: {
    watch: false,
    exclude: ['**/node_modules/**', '**/.work/**'],
    reporters: ['verbose', new CountReporter()],
    projects,
  },
});
