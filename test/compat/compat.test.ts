/**
 * The differential test in `npm test`: COMPAT_TEST_RUNS generated pods (default 150; `npm run compat`
 * runs >= 2,000) through our ADD in both profiles and through Istio's own istio-cni plugin, each pair
 * of netns compared. istio-current: the same netns for every pod both accept, refusals only where
 * listed. seed: every difference listed, with its reason, in docs/compatibility.md. And each pod once more with
 * node-wide capture settings, against `pilot-agent istio-iptables` given the same settings as flags.
 * And each pod on native nftables (istio-current) against Istio's plugin with `native_nftables`: the
 * same inet tables, hooks and rules but for the listed differences (NFTABLES_DIFFERENCES).
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, it } from 'vitest';
import * as h from '../harness/index.ts';
import { runCompat } from './campaign.ts';
import { readmeTables } from './listed.ts';

afterAll(h.cleanupAll);

describe('differential: generated pods, our ADD against Istio\'s istio-cni plugin', () => {
  it('istio-current leaves the same rules as Istio; every seed difference and every refusal is listed', async (t) => {
    const runs = Number(process.env.COMPAT_TEST_RUNS ?? 150);
    const seed = process.env.COMPAT_SEED === undefined ? undefined : Number(process.env.COMPAT_SEED);
    const report = await runCompat({ runs, profiles: ['istio-current', 'seed'], concurrency: 2, ...(seed === undefined ? {} : { seed }) });
    t.annotate(`seed ${report.seed}, ${report.runs} pods in ${(report.ms / 1000).toFixed(0)} s (COMPAT_SEED=${report.seed} replays it)`);
    for (const [profile, tally] of report.profiles) {
      t.annotate(`${profile}: compared nft ${tally.compared.nft} (identical ${tally.identical.nft}), legacy ${tally.compared.legacy} (identical ${tally.identical.legacy}), both refused ${tally.bothRefused}, listed ${JSON.stringify([...tally.listed])}`);
    }
    const current = report.profiles.get('istio-current')!;
    assert.deepEqual(current.unlisted, [], `seed ${report.seed}`);
    assert.deepEqual(current.identical, current.compared, `seed ${report.seed}`);
    // Both backends, and both ends of the generators: pods programmed and pods refused.
    assert.ok(current.compared.nft > runs / 10 && current.compared.legacy > runs / 10, JSON.stringify(current.compared));
    assert.ok(current.bothRefused > 0);
    assert.deepEqual(report.profiles.get('seed')!.unlisted, [], `seed ${report.seed}`);
    // The rule builder against pilot-agent's istio-iptables itself, with node-wide settings as flags.
    const flags = report.pilotAgent;
    t.annotate(`istio-current with node settings vs pilot-agent istio-iptables: identical nft ${flags.identical.nft}, legacy ${flags.identical.legacy}`);
    assert.deepEqual(flags.unlisted, [], `seed ${report.seed}`);
    assert.ok(flags.identical.nft > 0 && flags.identical.legacy > 0, JSON.stringify(flags.identical));
    // Native nftables beside Istio's native nftables mode.
    const nft = report.nftables;
    t.annotate(`istio-current on native nftables vs Istio's native_nftables: compared ${nft.compared.nftables} (identical ${nft.identical.nftables}), both refused ${nft.bothRefused}, listed ${JSON.stringify([...nft.listed])}`);
    assert.deepEqual(nft.unlisted, [], `seed ${report.seed}`);
    assert.ok(nft.compared.nftables > runs / 5 && nft.identical.nftables > 0 && nft.bothRefused > 0, JSON.stringify(nft));
  });

  it('docs/compatibility.md lists exactly the differences the test accepts', () => {
    const readme = readFileSync(join(h.REPO_ROOT, 'docs', 'compatibility.md'), 'utf8');
    const block = /<!-- compat:start -->\n([\s\S]*?)<!-- compat:end -->/.exec(readme)?.[1];
    assert.equal(block, readmeTables());
  });
});
