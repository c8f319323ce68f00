/**
 * Hostile input through the built executable: a few hundred generated invocations (the same
 * generators as `npm run fuzz`, which runs >= 10,000), then one test per failure the generators found.
 */
import assert from 'node:assert/strict';
import { afterAll, describe, it } from 'vitest';
import * as h from '../harness/index.ts';
import { runCampaign } from '../hostile/campaign.ts';
import { runInstallCampaign } from '../hostile/install-campaign.ts';
import { NOTHING, ourState, specErrorProblems } from '../hostile/oracle.ts';

afterAll(h.cleanupAll);

const BIN = h.DEFAULT_ISTIO_CNI_BIN;
const WEB = { pod: 'web-0', namespace: 'default' };

/** One ADD of the injected pod straight to the executable, with `patch` merged into its config. */
async function addWith(e: h.E2E, patch: Record<string, unknown>, rawStdin?: (doc: string) => string) {
  const doc = JSON.stringify({ ...e.conf.conflist.plugins[1], name: e.conf.netName, cniVersion: '1.0.0', ...patch });
  return h.runPlugin(BIN, {
    command: 'ADD',
    stdin: rawStdin ? rawStdin(doc) : doc,
    containerId: 'c1',
    netns: e.topo.pod,
    ifName: 'eth0',
    cniArgs: e.cniArgsFor(WEB),
    hostNetns: e.topo.node,
  });
}

describe('generated hostile invocations', () => {
  it('end in a result or one SPEC error, and all or nothing of our rules', async () => {
    const runs = Number(process.env.FUZZ_TEST_RUNS ?? 240);
    const report = await runCampaign({ runs, concurrency: 8 });
    assert.ok(report.runs >= runs, `${report.runs} cases run`);
    // The generators must reach both ends: programmed pods and refused input.
    assert.ok((report.outcomes.get('ok') ?? 0) > 0, JSON.stringify([...report.outcomes]));
    assert.ok(report.outcomes.size >= 4, JSON.stringify([...report.outcomes]));
  });
});

describe('generated host directories for the installer', () => {
  it('links, FIFOs, devices and planted temp names: it finishes, writes through nothing, leaves no temp file', async () => {
    const runs = Number(process.env.FUZZ_TEST_INSTALL_RUNS ?? 60);
    const report = await runInstallCampaign({ runs, concurrency: 6 });
    assert.ok(report.runs >= runs, `${report.runs} cases run`);
    assert.ok([...report.outcomes.keys()].some((k) => k.endsWith(' 0')) && [...report.outcomes.keys()].some((k) => k.endsWith(' 1')), JSON.stringify([...report.outcomes]));
  });
});

describe('failures the generators found', () => {
  it('refuses a prevResult nested too deeply to print back before touching the netns', async () => {
    const e = await h.makeE2E({ tag: 'deep', pods: [h.injectedPod(WEB.pod, WEB.namespace)] });
    const depth = 20_000;
    const add = await addWith(e, { prevResult: { cniVersion: '1.0.0', nested: '@deep' } }, (doc) =>
      doc.replace('"@deep"', `${'{"n":'.repeat(depth)}{}${'}'.repeat(depth)}`),
    );
    const { problems, error } = specErrorProblems(add);
    assert.deepEqual(problems, []);
    assert.equal(error?.code, 7);
    assert.match(error!.details, /prevResult/);
    assert.deepEqual(await ourState(e.topo.pod), NOTHING);
  });
});
