/**
 * What a pod author, a pod with NET_ADMIN or a local process racing the plugin can do to a root
 * plugin (issue 18), each through the built executable: a CNI_NETNS symlink flipped to the node's
 * netns mid-ADD, rule comments that smuggle lines into iptables-save, annotations that multiply,
 * API bodies that never end, a relay that fools `validate`, out-of-range ids and exclusions.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import * as h from '../harness/index.ts';
import { ourState, resetNat, specErrorProblems } from '../hostile/oracle.ts';

after(h.cleanupAll);

const WEB = { pod: 'web-0', namespace: 'default' };
const RACER = join(h.REPO_ROOT, 'test', 'helpers', 'racer.py');

function startRacer(...args: string[]): Promise<h.Daemon> {
  return h.startDaemon([h.PYTHON, RACER, ...args], { ready: /racing/, label: `racer ${args[0]}` });
}

describe('CNI_NETNS flipped between the check and the use', () => {
  it('never programs the node\'s netns, however the symlink races the ADD', async () => {
    const e = await h.makeE2E({ tag: 'flip', pods: [h.injectedPod(WEB.pod, WEB.namespace)] });
    const link = join(h.makeTempDir('icni-flip-'), 'netns');
    // The plugin runs in topo.node: that is "the node's own netns" it must never touch.
    const racer = await startRacer('flip', link, e.topo.pod.path, e.topo.node.path);
    const outcomes = new Map<string, number>();
    try {
      for (let i = 0; i < 40; i++) {
        const add = await e.runDirect('ADD', WEB, { netns: link });
        const outcome = add.code === 0 ? 'ok' : String((add.json as { code?: number } | undefined)?.code ?? add.code);
        outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
        const node = await ourState(e.topo.node);
        if (node.nft.length > 0) await resetNat(e.topo.node, 'nft');
        assert.deepEqual(node, { nft: [], legacy: [] }, `ADD ${i + 1} (${outcome}) programmed the node's netns; so far ${JSON.stringify([...outcomes])}`);
        if (add.code !== 0) {
          const { problems, error } = specErrorProblems(add);
          assert.deepEqual(problems, []);
          assert.equal(error?.code, 104, add.stdout);
        }
        await resetNat(e.topo.pod, 'nft');
      }
    } finally {
      await racer.stop();
    }
    // Both ends of the race were reached: the test proves something only if the flip happened mid-ADD.
    assert.ok((outcomes.get('ok') ?? 0) > 0 && (outcomes.get('104') ?? 0) > 0, JSON.stringify([...outcomes]));
  });
});
