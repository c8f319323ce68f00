/**
 * Our native nftables capture beside Istio's: one pod, served by the fake API server, ADDed by our
 * built dist/istio-cni (`"iptables_backend": "nftables"`) into one fresh netns and by Istio's own
 * istio-cni plugin (`"native_nftables": true`, built from the pinned istio.io/istio module) into
 * another; both read back with nft-state.ts. Both plugins run in the machine's netns and enter the pod's.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import * as h from '../harness/index.ts';
import { istioPrograms, type IstioPrograms } from '../harness/istio.ts';
import { readNftState, type NftState } from './nft-state.ts';

const NAMESPACE = 'default';
const ADDRESS = { 4: '10.200.0.5/24', 6: 'fd00:200::5/64' } as const;

export interface NftCompatEnv {
  api: h.FakeKubeApi;
  istio: IstioPrograms;
  ourKubeconfig: string;
  /** Istio's plugin reads `<cni_agent_run_dir>/istio-cni-kubeconfig`. */
  istioRunDir: string;
  logFile: string;
}

export async function startNftCompat(): Promise<NftCompatEnv> {
  const [istio, api] = await Promise.all([istioPrograms(), h.startFakeKubeApi()]);
  const dir = h.makeTempDir('icni-nftcompat-');
  const istioRunDir = join(dir, 'istio-run');
  mkdirSync(istioRunDir);
  api.writeKubeconfig(istioRunDir, { auth: 'token', caMode: 'data', fileName: 'istio-cni-kubeconfig' });
  return { api, istio, ourKubeconfig: api.writeKubeconfig(dir, { auth: 'token', caMode: 'data' }), istioRunDir, logFile: join(dir, 'istio-cni.log') };
}

export interface NftCompatPod {
  annotations: Record<string, string>;
  /** Extra env of the istio-proxy container (ISTIO_META_DNS_CAPTURE, …). */
  proxyEnv: { name: string; value: string }[];
  dualStack: boolean;
}

export interface NftSide {
  accepted: boolean;
  output: string;
  state: NftState;
}

/** A pod netns whose eth0 holds the pod's addresses (Istio reads them from the netns). */
async function podNetns(dualStack: boolean): Promise<h.Netns> {
  const ns = await h.createNetns({ tag: 'nftcmp' });
  const ip = (...args: string[]) => h.runOk([h.IP, '-n', ns.name, ...args]);
  await ip('link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0-peer');
  await ip('link', 'set', 'eth0-peer', 'up');
  await ip('link', 'set', 'eth0', 'up');
  await ip('addr', 'add', ADDRESS[4], 'dev', 'eth0');
  if (dualStack) await ip('addr', 'add', ADDRESS[6], 'dev', 'eth0', 'nodad');
  return ns;
}

let podCounter = 0;

/** One pod: Istio's plugin and ours, each in its own netns; `ourConfig` is merged into our plugin's config (e.g. a rules profile). */
export async function runNftCase(env: NftCompatEnv, pod: NftCompatPod, ourConfig: Record<string, unknown> = {}): Promise<{ ours: NftSide; istio: NftSide }> {
  const name = `nftcmp-${process.pid}-${++podCounter}`;
  const manifest = h.injectedPod(name, NAMESPACE, { metadata: { annotations: pod.annotations } });
  const proxy = (manifest.spec as { containers: { name: string; env: unknown[] }[] }).containers.find((c) => c.name === 'istio-proxy')!;
  proxy.env = [...proxy.env, ...pod.proxyEnv];
  env.api.setPod(manifest);
  const [istioNs, oursNs] = await Promise.all([podNetns(pod.dualStack), podNetns(pod.dualStack)]);
  try {
    const ips = [ADDRESS[4], ...(pod.dualStack ? [ADDRESS[6]] : [])].map((address) => ({ address, interface: 0 }));
    const invocation = (ns: h.Netns, conf: Record<string, unknown>): h.RunPluginOptions => ({
      command: 'ADD',
      stdin: { cniVersion: '1.0.0', name: 'nftcompat', type: 'istio-cni', ...conf, prevResult: { cniVersion: '1.0.0', interfaces: [{ name: 'eth0', sandbox: ns.path }], ips } },
      containerId: `c-${name}`,
      netns: ns,
      ifName: 'eth0',
      path: h.DEBIAN_CNI_DIR,
      cniArgs: { IgnoreUnknown: '1', K8S_POD_NAMESPACE: NAMESPACE, K8S_POD_NAME: name, K8S_POD_INFRA_CONTAINER_ID: `c-${name}`, K8S_POD_UID: 'u' },
    });
    const side = async (run: Promise<h.PluginRunResult>, ns: h.Netns): Promise<NftSide> => {
      const done = await run;
      return { accepted: done.code === 0, output: done.code === 0 ? '' : `${done.stdout.trim()} ${done.stderr.trim().split('\n').slice(-3).join(' ')}`, state: await readNftState(ns) };
    };
    const istioConf = { cni_agent_run_dir: env.istioRunDir, exclude_namespaces: [], pod_namespace: 'istio-system', native_nftables: true };
    const ourConf = { kubernetes: { kubeconfig: env.ourKubeconfig }, exclude_namespaces: [], log_file: env.logFile, iptables_backend: 'nftables', ...ourConfig };
    const [istio, ours] = await Promise.all([
      side(h.runPlugin(env.istio.istioCni, invocation(istioNs, istioConf)), istioNs),
      side(h.runPlugin(h.DEFAULT_ISTIO_CNI_BIN, invocation(oursNs, ourConf)), oursNs),
    ]);
    return { ours, istio };
  } finally {
    env.api.deletePod(NAMESPACE, name);
    await Promise.all([istioNs, oursNs].map((ns) => h.deleteNetns(ns)));
  }
}
