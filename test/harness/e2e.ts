// One call to get everything an end-to-end test of the chain needs: a node/pod topology, the
// fake apiserver reachable from the node netns, a kubeconfig, a conflist, a CNI_PATH and a
// runner that sends CNI_ARGS the way containerd does.
import { existsSync } from 'node:fs';
import { defaultContainerId, runCni, runPlugin, type CniRunResult, type CniVerb, type PluginRunResult, type RunCniOptions, type RunPluginOptions } from './cnitool.ts';
import { DEFAULT_ISTIO_CNI_BIN, makeCniPath, writeConflist, type ConflistOptions, type WrittenConflist } from './conflist.ts';
import { startFakeKubeApi, type FakeKubeApi, type KubeconfigOptions, type Pod } from './kube-api.ts';
import { makeTopology, type Topology } from './netns.ts';
import { makeTempDir } from './proc.ts';

export interface E2EOptions {
  tag?: string;
  /** Pods the fake apiserver serves. */
  pods?: Pod[];
  /** Start the fake apiserver (default true when the chain has istio-cni). */
  withApi?: boolean;
  /** How the kubeconfig authenticates (default token + CA data). */
  kubeconfig?: KubeconfigOptions;
  /** Passed to writeConflist (kubeconfig is filled in unless given). */
  conflist?: ConflistOptions;
  /** The istio-cni executable (default dist/istio-cni or $ISTIO_CNI_BIN). */
  pluginBin?: string;
  /** Bring lo up in the pod netns (default true). */
  podLoUp?: boolean;
}

export interface PodRef {
  pod: string;
  namespace: string;
  /** Default: the pod's metadata.uid when the apiserver has it, else a fixed fake. */
  uid?: string;
  /** CNI_CONTAINERID and K8S_POD_INFRA_CONTAINER_ID (default: the driver's id derived from the pod netns path). */
  containerId?: string;
}

export interface E2E {
  topo: Topology;
  api: FakeKubeApi | undefined;
  kubeconfigPath: string | undefined;
  conf: WrittenConflist;
  cniPath: string;
  cacheDir: string;
  /** Options that runCni gets for this environment (before per-call overrides). */
  base: RunCniOptions;
  /** containerd-style CNI_ARGS: IgnoreUnknown=1;K8S_POD_NAMESPACE;K8S_POD_NAME;K8S_POD_INFRA_CONTAINER_ID;K8S_POD_UID. */
  cniArgsFor(ref: PodRef): Record<string, string>;
  /** runCni(verb) for a pod of this environment (its pod netns unless overridden). */
  run(verb: CniVerb, ref?: PodRef, overrides?: Partial<RunCniOptions>): Promise<CniRunResult>;
  /** The stdin libcni gives istio-cni in this environment: its conflist entry, name, cniVersion and prevResult. */
  pluginStdin(prevResult?: unknown): Record<string, unknown>;
  /**
   * The plugin alone, without libcni, as libcni would run it for this pod: its stdin, containerd-style
   * CNI_ARGS, the pod netns and the node netns to run in, unless overridden.
   */
  runDirect(command: string, ref: PodRef, overrides?: Partial<RunPluginOptions> & { prevResult?: unknown }): Promise<PluginRunResult>;
}

export async function makeE2E(opts: E2EOptions = {}): Promise<E2E> {
  const withIstio = opts.conflist?.withIstio ?? true;
  const pluginBin = opts.pluginBin ?? DEFAULT_ISTIO_CNI_BIN;
  if (withIstio && !existsSync(pluginBin)) {
    throw new Error(`istio-cni executable ${pluginBin} not found: build it first (npm run build) or set ISTIO_CNI_BIN`);
  }
  const topo = await makeTopology({ ...(opts.tag ? { tag: opts.tag } : {}), ...(opts.podLoUp !== undefined ? { podLoUp: opts.podLoUp } : {}) });
  let api: FakeKubeApi | undefined;
  let kubeconfigPath: string | undefined;
  if (opts.withApi ?? withIstio) {
    api = await startFakeKubeApi({ pods: opts.pods ?? [] });
    await api.exposeIn(topo.node);
    kubeconfigPath = api.writeKubeconfig(undefined, opts.kubeconfig ?? { auth: 'token', caMode: 'data' });
  }
  const confOpts: ConflistOptions = { ...opts.conflist };
  if (confOpts.kubeconfig === undefined && kubeconfigPath !== undefined) confOpts.kubeconfig = kubeconfigPath;
  const conf = writeConflist(confOpts);
  const cniPath = makeCniPath(withIstio ? { pluginBin } : { withoutIstio: true });
  const cacheDir = makeTempDir('icni-cache-');
  const base: RunCniOptions = {
    netName: conf.netName,
    hostNetns: topo.node,
    netnsPath: topo.pod.path,
    confDir: conf.confDir,
    cniPath,
    cacheDir,
    cniArgs: { IgnoreUnknown: '1' },
  };
  const cniArgsFor = (ref: PodRef): Record<string, string> => {
    const uid = ref.uid ?? (api?.pods.get(`${ref.namespace}/${ref.pod}`)?.metadata.uid as string | undefined) ?? '00000000-0000-0000-0000-000000000000';
    return {
      IgnoreUnknown: '1',
      K8S_POD_NAMESPACE: ref.namespace,
      K8S_POD_NAME: ref.pod,
      K8S_POD_INFRA_CONTAINER_ID: ref.containerId ?? defaultContainerId(topo.pod),
      K8S_POD_UID: uid,
    };
  };
  function pluginStdin(prevResult?: unknown): Record<string, unknown> {
    const entry = conf.conflist.plugins.find((p) => p.type === 'istio-cni');
    return { ...entry, name: conf.netName, cniVersion: conf.conflist.cniVersion, ...(prevResult === undefined ? {} : { prevResult }) };
  }
  return {
    topo,
    api,
    kubeconfigPath,
    conf,
    cniPath,
    cacheDir,
    base,
    cniArgsFor,
    run(verb, ref, overrides = {}) {
      const o: RunCniOptions = { ...base };
      if (ref) o.cniArgs = cniArgsFor(ref);
      if (ref?.containerId !== undefined) o.containerId = ref.containerId;
      return runCni(verb, { ...o, ...overrides });
    },
    pluginStdin,
    runDirect(command, ref, { prevResult, ...overrides } = {}) {
      return runPlugin(pluginBin, {
        command,
        stdin: pluginStdin(prevResult),
        containerId: ref.containerId ?? defaultContainerId(topo.pod),
        netns: topo.pod,
        ifName: 'eth0',
        cniArgs: cniArgsFor(ref),
        path: cniPath,
        hostNetns: topo.node,
        ...overrides,
      });
    },
  };
}
