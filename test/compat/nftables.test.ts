/**
 * Our native nftables capture beside Istio's own (its istio-cni plugin with `native_nftables`), for
 * hand-picked pods that cover each part of the capture, read back from the kernel and compared after
 * normalisation (nft-state.ts); compat.test.ts does the same for generated pods. With the seed rule
 * set the rules themselves differ from current Istio's by design (the seed is Istio 1.3/1.4's rule
 * set); what must agree is the layout an operator's tooling sees: the same inet tables, the same base
 * chains with the same hooks, types and priorities, and Istio's chain names. With the istio-current
 * rules profile the rules and TPROXY's routing must agree too, but for the differences listed in
 * listed.ts (NFTABLES_DIFFERENCES), each with its reason.
 */
import assert from 'node:assert/strict';
import { afterAll, beforeAll, describe, it } from 'vitest';
import * as h from '../harness/index.ts';
import { differences, runNftablesCase, startCompat, type CompatEnv } from './differential.ts';
import { listedNftablesDifference } from './listed.ts';
import { nftStateDifferences, type NftState } from './nft-state.ts';
import type { GeneratedPod } from './pods.ts';

afterAll(h.cleanupAll);

const dualStack = [{ name: 'ISTIO_DUAL_STACK', value: 'true' }];
const dnsCapture = { name: 'ISTIO_META_DNS_CAPTURE', value: 'true' };
const pod = (annotations: Record<string, string>, env: GeneratedPod['env'] = [], addresses: GeneratedPod['addresses'] = 'v4'): GeneratedPod => ({ annotations, env, addresses, tags: [] });
const PODS: [string, GeneratedPod][] = [
  ['default pod', pod({})],
  ['dual-stack pod', pod({}, dualStack, 'dual')],
  ['TPROXY, dual stack', pod({ 'sidecar.istio.io/interceptionMode': 'TPROXY' }, dualStack, 'dual')],
  ['DNS capture', pod({}, [dnsCapture])],
  ['port and range annotations', pod({
    'traffic.sidecar.istio.io/includeInboundPorts': '8080,9090',
    'traffic.sidecar.istio.io/excludeOutboundPorts': '5432',
    'traffic.sidecar.istio.io/excludeOutboundIPRanges': '10.96.0.0/12',
    'traffic.sidecar.istio.io/includeOutboundPorts': '443',
  })],
  ['port and range annotations, dual stack', pod({
    'traffic.sidecar.istio.io/includeOutboundIPRanges': '10.0.0.0/8,fd00::/8',
    'traffic.sidecar.istio.io/excludeOutboundIPRanges': '10.96.0.0/12,fd00:96::/64',
    'traffic.sidecar.istio.io/excludeInboundPorts': '8081',
    'traffic.sidecar.istio.io/includeOutboundPorts': '443',
  }, dualStack, 'dual')],
  ['TPROXY', pod({ 'sidecar.istio.io/interceptionMode': 'TPROXY' })],
  ['DNS capture, dual stack', pod({}, [dnsCapture, ...dualStack], 'dual')],
  ['VM and excluded interfaces', pod({ 'traffic.sidecar.istio.io/kubevirtInterfaces': 'net1', 'traffic.sidecar.istio.io/excludeInterfaces': 'eth9' })],
  ['INVALID drop', pod({}, [{ name: 'INVALID_DROP', value: 'true' }])],
];

/**
 * Chains of the seed rule set that current Istio does not have, and why: under TPROXY the seed keeps
 * its mark rules in a mangle chain of its own rather than in the hooked output chain.
 */
const SEED_ONLY_CHAINS = new Set(['istio-proxy-mangle/istio-output']);

/** Pods asking for what only current Istio does: the seed's rule set has no INVALID drop (no mangle table for it). */
const NOT_IN_SEED = new Set(['INVALID drop']);

const tables = (state: NftState) => [...new Set([...state.chains.keys()].map((c) => c.split('/')[0]))].sort();

let env: CompatEnv;
beforeAll(async () => {
  env = await startCompat();
});
afterAll(() => env?.api.close());

describe('native nftables beside Istio\'s (seed rule set)', () => {
  for (const [name, pod] of PODS.filter(([name]) => !NOT_IN_SEED.has(name))) {
    it(`${name}: the same tables, hooked chains and chain names`, async () => {
      const { ours, istio } = await runNftablesCase(env, pod, 'seed');
      assert.ok(ours.accepted && istio.accepted, `ours: ${ours.error} istio: ${istio.error}`);
      assert.deepEqual(tables(ours.state), tables(istio.state));
      const found = nftStateDifferences(ours.state, istio.state);
      assert.deepEqual(found.filter((d) => d.kind === 'hook'), [], 'hooks, types and priorities');
      const chainsOnlyOurs = found.filter((d) => d.kind === 'only-ours' && d.line.startsWith('chain ')).map((d) => d.where);
      assert.deepEqual(chainsOnlyOurs.filter((c) => !SEED_ONLY_CHAINS.has(c)), [], 'every chain of ours has Istio\'s name');
    });
  }
});

describe('native nftables beside Istio\'s (istio-current rules profile)', () => {
  for (const [name, pod] of PODS) {
    it(`${name}: the same rules and routing, but for the listed differences`, async () => {
      const { ours, istio } = await runNftablesCase(env, pod, 'istio-current');
      assert.ok(ours.accepted && istio.accepted, `ours: ${ours.error} istio: ${istio.error}`);
      const found = nftStateDifferences(ours.state, istio.state);
      const unlisted = found.filter((d) => d.kind === 'hook' || listedNftablesDifference(d, pod, found) === undefined);
      assert.deepEqual(unlisted, []);
      assert.deepEqual(differences(ours.routing, istio.routing), [], 'TPROXY\'s ip rules and routes, the addresses on lo');
    });
  }
});
