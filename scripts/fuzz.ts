/**
 * npm run fuzz: generated hostile invocations through the built dist/istio-cni (see
 * test/hostile/), then generated host directories for `istio-cni install`. FUZZ_RUNS sets the
 * plugin's count (default 10000), FUZZ_INSTALL_RUNS the installer's (default 2000; 0 skips it),
 * FUZZ_CONCURRENCY how many run at once (default 6), FUZZ_SEED replays a run (both campaigns),
 * FUZZ_SLOW=<ms> prints every plugin case slower than that. Needs root and a fresh `npm run build`.
 */
import { cleanupAll } from '../test/harness/index.ts';
import { runCampaign } from '../test/hostile/campaign.ts';
import { runInstallCampaign } from '../test/hostile/install-campaign.ts';

const runs = Number(process.env.FUZZ_RUNS ?? 10_000);
const installRuns = Number(process.env.FUZZ_INSTALL_RUNS ?? 2_000);
const concurrency = Number(process.env.FUZZ_CONCURRENCY ?? 6);
const seed = process.env.FUZZ_SEED === undefined ? undefined : Number(process.env.FUZZ_SEED);

let last = 0;
try {
  const report = await runCampaign({
    runs,
    concurrency,
    ...(seed === undefined ? {} : { seed }),
    progress: (done) => {
      if (done - last >= 500) {
        last = done;
        process.stdout.write(`${done} cases\n`);
      }
    },
  });
  const outcomes = [...report.outcomes].sort((a, b) => b[1] - a[1]).map(([k, n]) => `${k}: ${n}`).join(', ');
  process.stdout.write(`fuzz: ${report.runs} cases, seed ${report.seed}, ${(report.ms / 1000).toFixed(1)} s (${(report.runs / (report.ms / 1000)).toFixed(1)}/s), no problem\noutcomes (ok or SPEC error code): ${outcomes}\n`);
  if (installRuns > 0) {
    last = 0;
    const installer = await runInstallCampaign({
      runs: installRuns,
      concurrency,
      seed: report.seed,
      progress: (done) => {
        if (done - last >= 500) {
          last = done;
          process.stdout.write(`${done} installer cases\n`);
        }
      },
    });
    const exits = [...installer.outcomes].sort((a, b) => b[1] - a[1]).map(([k, n]) => `${k}: ${n}`).join(', ');
    process.stdout.write(`fuzz install: ${installer.runs} cases, seed ${installer.seed}, ${(installer.ms / 1000).toFixed(1)} s, no problem\nexit codes: ${exits}\n`);
  }
} catch (err) {
  process.stdout.write(`fuzz: FAILED\n${(err as Error).message}\n`);
  process.exitCode = 1;
} finally {
  await cleanupAll();
}
