/**
 * Runs every test file one after another (the end-to-end tests share the kernel's netns and the
 * legacy xtables lock) with the spec reporter, then prints the closing count CI reads.
 * Usage: npm test [-- file ...]
 */
import { readdirSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { run } from 'node:test';
import { spec } from 'node:test/reporters';

function testFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return entry.name === '.work' ? [] : testFiles(path);
    return entry.name.endsWith('.test.ts') ? [path] : [];
  });
}

const files = process.argv.length > 2 ? process.argv.slice(2) : testFiles('test').sort();
let passed = 0;
let failed = 0;
let skipped = 0;

const stream = run({ files, concurrency: 1 });
stream.on('test:pass', (event) => {
  if (event.details.type === 'suite') return;
  if (event.skip || event.todo) skipped += 1;
  else passed += 1;
});
stream.on('test:fail', (event) => {
  if (event.details.type !== 'suite') failed += 1;
});
stream.compose(spec).pipe(process.stdout);
// The reporter finishes writing only when the loop drains: count last, at exit.
process.on('exit', () => {
  writeSync(1, `\ntests: ${passed} passed, ${failed} failed, ${skipped} skipped\n`);
  process.exitCode = failed > 0 || passed === 0 ? 1 : 0;
});
