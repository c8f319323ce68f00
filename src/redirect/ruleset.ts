import type { RedirectSettings } from './settings.ts';

export type Table = 'nat';

/** One rule as data: its chain and the match/target words exactly as `iptables-save` prints them. */
export interface Rule {
  chain: string;
  spec: readonly string[];
}

export interface TableRules {
  table: Table;
  /** Chains this plugin owns; created on ADD, removed on DEL. */
  chains: readonly string[];
  rules: readonly Rule[];
}

export type RuleSet = readonly TableRules[];

/** Every chain the plugin creates carries this prefix; anything else in the netns is not ours. */
export const CHAIN_PREFIX = 'ISTIO_';

const INBOUND = 'ISTIO_INBOUND';
const IN_REDIRECT = 'ISTIO_IN_REDIRECT';
const OUTPUT = 'ISTIO_OUTPUT';
const REDIRECT = 'ISTIO_REDIRECT';
/** The proxy's source address for inbound passthrough traffic; Istio's convention. */
const INBOUND_PASSTHROUGH_SOURCE = '127.0.0.6/32';
const LOCALHOST = '127.0.0.1/32';
const SSH_PORT = 22;

/** The REDIRECT-mode rule set istio-iptables programs for a sidecar pod (IPv4). */
export function buildRuleSet(settings: RedirectSettings): RuleSet {
  const rule = (chain: string, ...spec: string[]): Rule => ({ chain, spec });
  const inboundExclusions = [SSH_PORT, ...settings.excludeInboundPorts].map((port) =>
    rule(INBOUND, '-p', 'tcp', '-m', 'tcp', '--dport', String(port), '-j', 'RETURN'),
  );
  return [
    {
      table: 'nat',
      chains: [INBOUND, IN_REDIRECT, OUTPUT, REDIRECT],
      rules: [
        rule('PREROUTING', '-p', 'tcp', '-j', INBOUND),
        rule('OUTPUT', '-p', 'tcp', '-j', OUTPUT),
        ...inboundExclusions,
        rule(INBOUND, '-p', 'tcp', '-j', IN_REDIRECT),
        rule(IN_REDIRECT, '-p', 'tcp', '-j', 'REDIRECT', '--to-ports', String(settings.inboundPort)),
        // Inbound traffic the proxy passes through to the app comes from 127.0.0.6: leave it.
        rule(OUTPUT, '-s', INBOUND_PASSTHROUGH_SOURCE, '-o', 'lo', '-j', 'RETURN'),
        // The app calling its own pod IP over lo is inbound traffic: send it to the inbound listener.
        rule(OUTPUT, '!', '-d', LOCALHOST, '-o', 'lo', '-j', IN_REDIRECT),
        rule(OUTPUT, '-m', 'owner', '--uid-owner', String(settings.proxyUid), '-j', 'RETURN'),
        rule(OUTPUT, '-m', 'owner', '--gid-owner', String(settings.proxyGid), '-j', 'RETURN'),
        rule(OUTPUT, '-d', LOCALHOST, '-j', 'RETURN'),
        rule(OUTPUT, '-j', REDIRECT),
        rule(REDIRECT, '-p', 'tcp', '-j', 'REDIRECT', '--to-ports', String(settings.outboundPort)),
      ],
    },
  ];
}
