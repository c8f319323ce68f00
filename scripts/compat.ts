/**
 * npm run compat: the differential test in full (see test/compat/): COMPAT_RUNS generated pods (default
 * 2000), each through Istio's own istio-cni plugin and through our ADD in every profile, on one backend
 * each (alternating nft and legacy), and istio-current once more on native nftables. COMPAT_SEED replays a run, COMPAT_CONCURRENCY sets how many pods
 * run at once (default 2). Needs root and a fresh `npm run build`; builds Istio's programs on first use.
 * `npm run compat -- --update-docs` only writes the listed differences into docs/compatibility.md.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { runCompat, type CompatReport } from '../test/compat/campaign.ts';
import { readmeTables } from '../test/compat/listed.ts';
import { cleanupAll } from '../test/harness/index.ts';

if (process.argv.includes('--update-docs')) {
  const readme = new URL('../docs/compatibility.md', import.meta.url);
  const text = readFileSync(readme, 'utf8').replace(/(<!-- compat:start -->\n)[\s\S]*?(<!-- compat:end -->)/, (_, start: string, end: string) => `${start}${readmeTables()}${end}`);
  writeFileSync(readme, text);
  process.exit(0);
}

const runs = Number(process.env.COMPAT_RUNS ?? 2000);
const concurrency = Number(process.env.COMPAT_CONCURRENCY ?? 2);
const seed = process.env.COMPAT_SEED === undefined ? undefined : Number(process.env.COMPAT_SEED);

function summary(report: CompatReport): string {
  let out = `compat: ${report.runs} pods, seed ${report.seed}, ${(report.ms / 1000).toFixed(0)} s\n`;
  for (const [profile, t] of report.profiles) {
    out += `  ${profile}: compared nft ${t.compared.nft} (identical ${t.identical.nft}), legacy ${t.compared.legacy} (identical ${t.identical.legacy}); both refused ${t.bothRefused}; unlisted ${t.unlisted.length}\n`;
    for (const [id, n] of [...t.listed].sort((a, b) => b[1] - a[1])) out += `    listed ${id}: ${n}\n`;
  }
  const p = report.pilotAgent;
  out += `  istio-current with node settings vs pilot-agent istio-iptables: nft ${p.identical.nft}, legacy ${p.identical.legacy} identical; ${p.unlisted.length} different\n`;
  const n = report.nftables;
  out += `  istio-current on native nftables vs Istio's native_nftables: compared ${n.compared.nftables} (identical ${n.identical.nftables}); both refused ${n.bothRefused}; unlisted ${n.unlisted.length}\n`;
  for (const [id, count] of [...n.listed].sort((a, b) => b[1] - a[1])) out += `    listed ${id}: ${count}\n`;
  return out;
}

let failed = false;
try {
  const report = await runCompat({
    runs,
    concurrency,
    profiles: ['istio-current', 'seed'],
    ...(seed === undefined ? {} : { seed }),
    progress: (done, r) => {
      if (done % 100 === 0) process.stdout.write(summary(r));
    },
  });
  process.stdout.write(summary(report));
  for (const [profile, t] of [...report.profiles, ['pilot-agent', report.pilotAgent] as const, ['nftables', report.nftables] as const]) {
    for (const problem of t.unlisted.slice(0, 10)) process.stdout.write(`UNLISTED (${profile}): ${problem}\n`);
    failed ||= t.unlisted.length > 0;
  }
} catch (err) {
  process.stdout.write(`compat: FAILED\n${(err as Error).stack}\n`);
  failed = true;
} finally {
  await cleanupAll();
}
process.exitCode = failed ? 1 : 0;
