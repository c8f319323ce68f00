#!/usr/bin/env node
// Builds dist/istio-cni: one self-contained executable (Bun's `bun build --compile`) that runs where
// no JavaScript runtime is installed. See build/README.md.
//
//   node build/build.mjs [--if-stale] [--out FILE]
//
// 1. esbuild bundles src/cli.ts (the plugin) and src/subcommands.ts (the node-side jobs) into two
//    CommonJS files; 2. the pinned Bun of build/bun-runtime (npm package @oven/bun-linux-x64)
//    compiles both, as bytecode, into one executable; 3. the executable's entry point gets a guard
//    that drops every BUN_* and JSC_* variable from its environment before the runtime starts;
//    4. a CNI VERSION call smoke-tests the result.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import * as esbuild from 'esbuild';
import { guardEntry } from './env-guard.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const rel = (p) => path.relative(root, p) || '.';

const { values: opt } = parseArgs({
  options: {
    out: { type: 'string', default: path.join(root, 'dist/istio-cni') },
    'if-stale': { type: 'boolean', default: false },
  },
});
const out = path.resolve(opt.out);
const work = path.join(path.dirname(out), '.build', path.basename(out)); // intermediates, kept for inspection

const runtimeDir = path.join(root, 'build/bun-runtime');

// The version the executable reports (src/version.ts): package.json's, or ISTIO_CNI_VERSION (a test
// builds a second, different executable this way to upgrade a cluster to).
const version = process.env.ISTIO_CNI_VERSION || JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')).version;
if (!/^[0-9A-Za-z.+-]{1,64}$/.test(version)) throw new Error(`version ${JSON.stringify(version)}: only letters, digits, ".", "+" and "-"`);
const bunBin = path.join(runtimeDir, 'node_modules/@oven/bun-linux-x64/bin/bun');

// Bun and the smoke test run without this shell's BUN_*, JSC_* and NODE_* knobs.
const cleanEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(BUN_|JSC_|NODE_)/.test(k)));

function newestMtime(p) {
  const st = fs.statSync(p, { throwIfNoEntry: false });
  if (!st?.isDirectory()) return st?.mtimeMs ?? 0;
  let m = st.mtimeMs;
  for (const e of fs.readdirSync(p)) if (e !== 'node_modules' && e !== 'tmp') m = Math.max(m, newestMtime(path.join(p, e)));
  return m;
}

function isStale() {
  const built = fs.statSync(out, { throwIfNoEntry: false })?.mtimeMs ?? 0;
  return ['src', 'build', 'package-lock.json'].some((p) => newestMtime(path.resolve(root, p)) > built);
}

function ensureRuntime() {
  const want = JSON.parse(fs.readFileSync(path.join(runtimeDir, 'package.json'), 'utf8')).dependencies['@oven/bun-linux-x64'];
  const pkg = path.join(runtimeDir, 'node_modules/@oven/bun-linux-x64/package.json');
  const have = fs.existsSync(pkg) && fs.existsSync(bunBin) ? JSON.parse(fs.readFileSync(pkg, 'utf8')).version : null;
  if (have === want) return;
  console.log(`installing @oven/bun-linux-x64@${want} into ${rel(runtimeDir)}`);
  // npm keeps this shell's environment (it may need NODE_EXTRA_CA_CERTS to reach the registry).
  // A registry connection can stall without failing: bound each try and try once more.
  const install = () => {
    const r = spawnSync('npm', ['ci', '--prefix', runtimeDir, '--no-audit', '--no-fund', '--loglevel=error'], {
      stdio: 'inherit',
      timeout: 180_000,
      env: { ...process.env, NPM_CONFIG_UPDATE_NOTIFIER: 'false' },
    });
    if (r.status !== 0) throw new Error(`npm ci --prefix ${rel(runtimeDir)} failed (${r.error ?? r.status ?? r.signal})`);
  };
  try {
    install();
  } catch (err) {
    console.log(`${err.message}; trying once more`);
    install();
  }
}

// The plugin's bundle requires the subcommands' bundle, compiled into the same executable, only
// when a subcommand runs: a CNI verb never loads the installer, its pod cache, client-node or pino.
const SUBCOMMANDS = 'subcommands.cjs';
const subcommandsApart = {
  name: 'subcommands-apart',
  setup(build) {
    build.onResolve({ filter: /[/\\]subcommands\.ts$/ }, (args) => (args.importer.endsWith(path.join('src', 'cli.ts')) ? { path: `./${SUBCOMMANDS}`, external: true } : undefined));
  },
};

async function bundle(entryPoint, file, plugins = []) {
  await esbuild.build({
    entryPoints: [entryPoint],
    outfile: file,
    bundle: true,
    // Node builtins stay external and everything else is inlined, undici too: client-node's
    // informer needs the real undici (Bun's built-in one ignores the kubeconfig's CA).
    platform: 'node',
    format: 'cjs',
    target: 'node22',
    minify: true,
    legalComments: 'none',
    // `await import('node:x')` and `await import('./y.ts')` become lazy requires.
    supported: { 'dynamic-import': false },
    logLevel: 'warning',
    define: { __ISTIO_CNI_VERSION__: JSON.stringify(version) },
    plugins,
  });
}

function compile(exe, entries) {
  const args = [
    'build', '--compile', '--bytecode', `--compile-executable-path=${bunBin}`, `--outfile=${exe}`,
    // A run is short and runs most code once: JavaScriptCore's JIT tiers up 10 times later than by
    // default, so it no longer compiles, on a thread, code about to finish anyway (pass-through ADD:
    // 74 -> 60 M instructions, CPU x0.72, peak RSS 50 -> 45 MiB; build/README.md).
    '--compile-jit-policy=10',
    // Nothing from the directory the runtime runs the plugin in may change it.
    '--no-compile-autoload-dotenv', '--no-compile-autoload-bunfig', '--no-compile-autoload-tsconfig', '--no-compile-autoload-package-json',
    ...entries,
  ];
  const r = spawnSync(bunBin, args, { cwd: work, env: cleanEnv, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`bun build --compile failed (${r.error ?? r.status ?? r.signal}):\n${r.stdout}${r.stderr}`);
}

// CNI VERSION as a container runtime calls it: exit 0, JSON on stdout, nothing on stderr; runtime
// options from the environment (BUN_OPTIONS with a preload of a missing file, BUN_BE_BUN, which
// would turn the executable into the bun CLI, NODE_OPTIONS) must change nothing.
function smokeTest(exe) {
  const missing = path.join(work, 'must-not-load.js');
  const env = { ...cleanEnv, CNI_COMMAND: 'VERSION', BUN_OPTIONS: `--preload ${missing}`, BUN_BE_BUN: '1', NODE_OPTIONS: `--require=${missing}` };
  const r = spawnSync(exe, [], { input: '{"cniVersion":"1.0.0"}', env, encoding: 'utf8', timeout: 10_000 });
  let problem = r.error?.message ?? (r.status !== 0 ? `exit ${r.status ?? r.signal}` : r.stderr ? 'wrote to stderr' : null);
  if (!problem) try { JSON.parse(r.stdout); } catch { problem = 'stdout is not JSON'; }
  if (problem) throw new Error(`smoke test (CNI_COMMAND=VERSION) of ${rel(exe)} failed: ${problem}\n${r.stdout}${r.stderr}`);
  // A subcommand comes from the subcommands' bundle: `explain` without a file must print its usage (exit 2).
  const sub = spawnSync(exe, ['explain'], { env: cleanEnv, encoding: 'utf8', timeout: 10_000 });
  if (sub.status !== 2 || !/usage/.test(sub.stderr)) throw new Error(`smoke test (explain from the subcommands' bundle) of ${rel(exe)} failed: exit ${sub.status ?? sub.signal}\n${sub.stdout}${sub.stderr}`);
}

if (opt['if-stale'] && !isStale()) {
  console.log(`${rel(out)} is up to date`);
} else {
  const t0 = performance.now();
  ensureRuntime();
  fs.rmSync(work, { recursive: true, force: true });
  fs.mkdirSync(work, { recursive: true });
  const bundleFile = path.join(work, 'bundle.cjs');
  const subcommandsFile = path.join(work, SUBCOMMANDS);
  const exe = path.join(work, path.basename(out));
  await bundle(path.join(root, 'src/cli.ts'), bundleFile, [subcommandsApart]);
  await bundle(path.join(root, 'src/subcommands.ts'), subcommandsFile);
  compile(exe, [bundleFile, subcommandsFile]);
  guardEntry(exe);
  smokeTest(exe);
  fs.renameSync(exe, out);
  const mib = (f) => (fs.statSync(f).size / 2 ** 20).toFixed(1);
  console.log(`built ${rel(out)} ${version} (${mib(out)} MiB, bundle ${mib(bundleFile)} MiB, subcommands ${mib(subcommandsFile)} MiB) in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
}
