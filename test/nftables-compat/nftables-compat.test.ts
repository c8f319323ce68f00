/**
 * Our native nftables capture beside Istio's own (its istio-cni plugin with `native_nftables`), pod by
 * pod, read back from the kernel and compared after normalisation (nft-state.ts). With the seed rule
 * set the rules themselves differ from current Istio's by design (the seed is Istio 1.3/1.4's rule
 * set); what must agree is the layout an operator's tooling sees: the same inet tables, the same base
 * chains with the same hooks, types and priorities, and Istio's chain names. With the istio-current
 * rules profile (`rules_profile`, when this build has it) the rules must agree too, but for the
 * differences listed in LISTED, each with its reason.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { parseConfig } from '../../src/cni/config.ts';
import * as h from '../harness/index.ts';
import { runNftCase, startNftCompat, type NftCompatEnv, type NftCompatPod } from './differential.ts';
import { nftStateDifferences, type NftDifference, type NftState } from './nft-state.ts';

after(h.cleanupAll);

const dualStack = [{ name: 'ISTIO_DUAL_STACK', value: 'true' }];
const dnsCapture = { name: 'ISTIO_META_DNS_CAPTURE', value: 'true' };
const PODS: [string, NftCompatPod][] = [
  ['default pod', { annotations: {}, proxyEnv: [], dualStack: false }],
  ['dual-stack pod', { annotations: {}, proxyEnv: dualStack, dualStack: true }],
  ['TPROXY, dual stack', { annotations: { 'sidecar.istio.io/interceptionMode': 'TPROXY' }, proxyEnv: dualStack, dualStack: true }],
  ['DNS capture', { annotations: {}, proxyEnv: [dnsCapture], dualStack: false }],
  ['port and range annotations', {
    annotations: {
      'traffic.sidecar.istio.io/includeInboundPorts': '8080,9090',
      'traffic.sidecar.istio.io/excludeOutboundPorts': '5432',
      'traffic.sidecar.istio.io/excludeOutboundIPRanges': '10.96.0.0/12',
      'traffic.sidecar.istio.io/includeOutboundPorts': '443',
    },
    proxyEnv: [],
    dualStack: false,
  }],
  ['port and range annotations, dual stack', {
    annotations: {
      'traffic.sidecar.istio.io/includeOutboundIPRanges': '10.0.0.0/8,fd00::/8',
      'traffic.sidecar.istio.io/excludeOutboundIPRanges': '10.96.0.0/12,fd00:96::/64',
      'traffic.sidecar.istio.io/excludeInboundPorts': '8081',
      'traffic.sidecar.istio.io/includeOutboundPorts': '443',
    },
    proxyEnv: dualStack,
    dualStack: true,
  }],
  ['TPROXY', { annotations: { 'sidecar.istio.io/interceptionMode': 'TPROXY' }, proxyEnv: [], dualStack: false }],
  ['DNS capture, dual stack', { annotations: {}, proxyEnv: [dnsCapture, ...dualStack], dualStack: true }],
  ['VM and excluded interfaces', { annotations: { 'traffic.sidecar.istio.io/kubevirtInterfaces': 'net1', 'traffic.sidecar.istio.io/excludeInterfaces': 'eth9' }, proxyEnv: [], dualStack: false }],
  ['INVALID drop', { annotations: {}, proxyEnv: [{ name: 'INVALID_DROP', value: 'true' }], dualStack: false }],
];

/**
 * Chains of the seed rule set that current Istio does not have, and why: under TPROXY the seed keeps
 * its mark rules in a mangle chain of its own rather than in the hooked output chain.
 */
const SEED_ONLY_CHAINS = new Set(['istio-proxy-mangle/istio-output']);

/** Pods asking for what only current Istio does: the seed's rule set has no INVALID drop (no mangle table for it). */
const NOT_IN_SEED = new Set(['INVALID drop']);

const tables = (state: NftState) => [...new Set([...state.chains.keys()].map((c) => c.split('/')[0]))].sort();

let env: NftCompatEnv;
before(async () => {
  env = await startNftCompat();
});
after(() => env?.api.close());

describe('native nftables beside Istio\'s (seed rule set)', () => {
  for (const [name, pod] of PODS.filter(([name]) => !NOT_IN_SEED.has(name))) {
    it(`${name}: the same tables, hooked chains and chain names`, async () => {
      const { ours, istio } = await runNftCase(env, pod);
      assert.ok(ours.accepted && istio.accepted, `ours: ${ours.output} istio: ${istio.output}`);
      assert.deepEqual(tables(ours.state), tables(istio.state));
      const differences = nftStateDifferences(ours.state, istio.state);
      assert.deepEqual(differences.filter((d) => d.kind === 'hook'), [], 'hooks, types and priorities');
      const chainsOnlyOurs = differences.filter((d) => d.kind === 'only-ours' && d.line.startsWith('chain ')).map((d) => d.where);
      assert.deepEqual(chainsOnlyOurs.filter((c) => !SEED_ONLY_CHAINS.has(c)), [], 'every chain of ours has Istio\'s name');
    });
  }
});

/**
 * Where the istio-current rules in nftables form differ from Istio's native nftables mode, and why:
 * - an IPv4-only pod's hooked chains first return IPv6 packets (`meta nfproto ipv6`), as with
 *   iptables, where such a pod gets no ip6tables rules; Istio's rules would capture its IPv6 too;
 * - Istio's native mode drops only TCP packets conntrack finds INVALID, its iptables mode all of
 *   them; the profile is Istio's iptables rule set, so ours drops all.
 */
const LISTED: { why: string; is: (d: NftDifference, pod: NftCompatPod) => boolean }[] = [
  { why: 'IPv6 of an IPv4-only pod left alone', is: (d, pod) => !pod.dualStack && d.kind === 'only-ours' && /\/(prerouting|output) \(IPv6\)$/.test(d.where) && d.line === 'meta nfproto ipv6 counter return' },
  { why: 'INVALID drop of every protocol', is: (d) => d.where.startsWith('istio-proxy-mangle/prerouting') && d.line === (d.kind === 'only-ours' ? 'ct state invalid counter jump istio-drop' : 'meta l4proto tcp ct state invalid counter jump istio-drop') },
];

/** Whether this build reads the rules profile (issue 14). */
const hasProfiles = 'rulesProfile' in parseConfig(JSON.stringify({ cniVersion: '1.0.0', rules_profile: 'istio-current' }));

describe('native nftables beside Istio\'s (istio-current rules profile)', () => {
  for (const [name, pod] of PODS) {
    it(`${name}: the same rules, but for the listed differences`, { skip: hasProfiles ? false : 'this build has no rules profile' }, async () => {
      const { ours, istio } = await runNftCase(env, pod, { rules_profile: 'istio-current' });
      assert.ok(ours.accepted && istio.accepted, `ours: ${ours.output} istio: ${istio.output}`);
      const unlisted = nftStateDifferences(ours.state, istio.state).filter((d) => !LISTED.some((l) => l.is(d, pod)));
      assert.deepEqual(unlisted, []);
    });
  }
});
