// Build time only: build/sea-entry.ts calls warmUp() while Node builds the start-up snapshot.
//
// V8 saves in the snapshot only what exists in the heap: a function that never ran has no bytecode
// there and is parsed and compiled again by every process that calls it, and a zod schema that never
// parsed has not generated its parser yet. Running the plugin's pure hot path once on typical input
// (config, CNI_ARGS, kubeconfig, the pod GET's response, rule set, restore and save text) saves both
// in the snapshot: an ADD then spends its CPU on its own work, not on compiling ours.
//
// Pure functions only: nothing read from the environment, the clock or a file may end up in the heap
// that every run starts from, and no logger (see build/README.md).
import { parseConfig } from '../src/cni/config.ts';
import { readCommand, readInvocation } from '../src/cni/env.ts';
import { addressesOf, passThroughResult, versionResult } from '../src/cni/result.ts';
import { decideFromAnnotations, decideFromArgs, decideFromPod } from '../src/kube/decision.ts';
import { parseResponse } from '../src/kube/http1.ts';
import { parseKubeconfig } from '../src/kube/kubeconfig.ts';
import { Pod } from '../src/kube/pod.ts';
import { nftDifferences, ownedNftables, parseNftListing } from '../src/redirect/nftables-listing.ts';
import { renderNftScript, toNftables, type NftRuleSet } from '../src/redirect/nftables.ts';
import { differences, parseSave, renderCreate, renderRemoval, renderReplace, ruleLine } from '../src/redirect/restore.ts';
import { buildRuleSet, type RuleSet } from '../src/redirect/ruleset.ts';
import { settingsFromPod } from '../src/redirect/settings-from-pod.ts';

/** The example conflist's entry as libcni hands it over, with ptp's result and containerd's annotations. */
const NETWORK_CONFIG = {
  cniVersion: '1.0.0',
  name: 'k8s-pod-network',
  type: 'istio-cni',
  log_level: 'info',
  kubernetes: { kubeconfig: '/etc/cni/net.d/ZZZ-istio-cni-kubeconfig', cni_bin_dir: '/opt/cni/bin', exclude_namespaces: ['kube-system'] },
  prevResult: {
    cniVersion: '1.0.0',
    interfaces: [{ name: 'veth1234', mac: '0a:58:0a:c8:00:01' }, { name: 'eth0', mac: '0a:58:0a:c8:00:05', sandbox: '/var/run/netns/cni-1' }],
    ips: [{ address: '10.200.0.5/24', gateway: '10.200.0.1', interface: 1 }],
    routes: [{ dst: '0.0.0.0/0' }],
  },
  runtimeConfig: { 'io.kubernetes.cri.pod-annotations': { 'sidecar.istio.io/status': '{}' } },
};

const ENV = {
  CNI_COMMAND: 'ADD',
  CNI_CONTAINERID: '0123456789abcdef',
  CNI_NETNS: '/var/run/netns/cni-1',
  CNI_IFNAME: 'eth0',
  CNI_ARGS: 'IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=0123456789abcdef;K8S_POD_UID=00000000-0000-4000-8000-000000000000',
};

const CA_DATA = Buffer.from('-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n').toString('base64');

/** As the installer writes it (YAML), and as JSON (also YAML), which kubectl and tools write too. */
const KUBECONFIG_YAML = `apiVersion: v1
kind: Config
clusters:
  - name: local
    cluster:
      server: https://10.96.0.1:443
      certificate-authority-data: ${CA_DATA}
users:
  - name: istio-cni
    user:
      token: abc.def.ghi
contexts:
  - name: istio-cni-context
    context:
      cluster: local
      user: istio-cni
current-context: istio-cni-context
`;
const KUBECONFIG_JSON = JSON.stringify({
  apiVersion: 'v1',
  kind: 'Config',
  clusters: [{ name: 'local', cluster: { server: 'https://10.96.0.1:443', 'certificate-authority-data': CA_DATA } }],
  users: [{ name: 'istio-cni', user: { token: 'abc.def.ghi' } }],
  contexts: [{ name: 'istio-cni-context', context: { cluster: 'local', user: 'istio-cni' } }],
  'current-context': 'istio-cni-context',
});

/** An injected pod as the API server returns it (fields the plugin ignores included). */
const POD = {
  kind: 'Pod',
  apiVersion: 'v1',
  metadata: {
    name: 'web',
    namespace: 'default',
    uid: '00000000-0000-4000-8000-000000000000',
    labels: { app: 'web', 'security.istio.io/tlsMode': 'istio' },
    annotations: {
      'sidecar.istio.io/status': '{"initContainers":null,"containers":["istio-proxy"],"volumes":["istio-envoy"]}',
      'traffic.sidecar.istio.io/excludeOutboundPorts': '9000,9001',
      'traffic.sidecar.istio.io/excludeOutboundIPRanges': '10.10.0.0/16',
    },
  },
  spec: {
    containers: [
      { name: 'app', image: 'app:1', ports: [{ containerPort: 8080, protocol: 'TCP' }] },
      {
        name: 'istio-proxy',
        image: 'proxyv2:1',
        env: [{ name: 'ISTIO_META_DNS_CAPTURE', value: 'true' }, { name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } }],
        securityContext: { runAsUser: 1337, runAsGroup: 1337 },
      },
    ],
  },
  status: { phase: 'Pending' },
};

/** What `iptables-save` prints for a netns holding `ruleSet`. */
function saveText(ruleSet: RuleSet): string {
  return ruleSet
    .map((t) => [`*${t.table}`, ...t.chains.map((c) => `:${c} - [0:0]`), ...t.rules.map(ruleLine), 'COMMIT'].join('\n'))
    .join('\n');
}

/** `nft -j list ruleset` as nft prints our tables (handles, counters with their counts): what CHECK reads. */
export function nftListingOf(tables: NftRuleSet, extra: Record<string, unknown>[] = []): string {
  const items: Record<string, unknown>[] = [{ metainfo: { version: '1.0.6', release_name: 'Lester Gooch #5', json_schema_version: 1 } }];
  let handle = 1;
  for (const t of tables) {
    items.push({ table: { family: 'inet', name: t.name, handle: handle++ } });
    for (const c of t.chains) items.push({ chain: { family: 'inet', table: t.name, name: c.name, handle: handle++, ...(c.base ? { ...c.base, policy: 'accept' } : {}) } });
    for (const r of t.rules) {
      const expr = r.expr.map((e) => ('counter' in e ? { counter: { packets: 7, bytes: 420 } } : e));
      items.push({ rule: { family: 'inet', table: t.name, chain: r.chain, handle: handle++, expr } });
    }
  }
  return JSON.stringify({ nftables: [...items, ...extra] });
}

function check(condition: boolean, what: string): void {
  // A sample the code rejects would warm only the error path: fail the build instead.
  if (!condition) throw new Error(`build/warm-up.ts: ${what}`);
}

/** Runs the hot path once; throws when a sample no longer takes the path it is meant to warm. */
export function warmUp(): void {
  const stdin = JSON.stringify(NETWORK_CONFIG);
  check(versionResult(stdin).cniVersion === '1.0.0', 'VERSION sample');
  const config = parseConfig(stdin);
  passThroughResult(config);
  const invocation = readInvocation(readCommand(ENV), ENV);
  check('namespace' in decideFromArgs(invocation.args, config), 'CNI_ARGS sample must need a lookup');
  check(decideFromAnnotations({ 'kubectl.kubernetes.io/default-container': 'app' })?.redirect === false, 'annotations sample');

  for (const text of [KUBECONFIG_YAML, KUBECONFIG_JSON]) {
    check(parseKubeconfig(text, '/etc/cni/net.d/ZZZ-istio-cni-kubeconfig').token === 'abc.def.ghi', 'kubeconfig sample');
  }

  const body = JSON.stringify(POD);
  const response = parseResponse(Buffer.from(`HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`));
  const pod = Pod.safeParse(JSON.parse(response.body));
  check(pod.success, 'pod sample');
  const decision = decideFromPod(pod.data!);
  check(decision.redirect, 'pod sample must be captured');
  if (!decision.redirect) return;

  const settings = settingsFromPod({ annotations: decision.annotations, proxy: decision.proxy, podIps: addressesOf(config.prevResult), defaults: config.capture });
  const ruleSet = buildRuleSet(settings, 4);
  renderCreate(ruleSet);
  const saved = parseSave(saveText(ruleSet));
  check(differences(ruleSet, saved).length === 0, 'saved rules must match');
  renderReplace(ruleSet, saved);
  check(renderRemoval(saved) !== '', 'saved rules must be ours');

  // Native nftables: the script ADD writes, the listing CHECK and DEL read.
  const tables = toNftables(ruleSet, buildRuleSet(settings, 6));
  renderNftScript(tables);
  const listed = parseNftListing(nftListingOf(tables));
  check(nftDifferences(tables, listed).length === 0, 'listed tables must match');
  check(ownedNftables(listed).tables.length > 0, 'listed tables must be ours');
}
