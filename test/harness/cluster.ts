// A real one-node Kubernetes cluster on this machine, as root and without systemd: etcd,
// kube-apiserver, kube-controller-manager, kube-scheduler (built from source by
// `cluster/build.sh k8s`), Debian's containerd 1.6 and the kubelet, with a bridge + host-local
// conflist standing in for calico and our DaemonSet installed with `helm install` of the chart in
// deploy/charts/istio-cni with cluster/values.yaml. Everything lives in CLUSTER_DIR; the processes are detached (they outlive the
// `scripts/cluster.sh up` that starts them) and recorded by PID in its state file, which is
// also what `down` undoes. One cluster per machine: fixed ports (2379, 2380, 6443, 10248,
// 10250, 10257, 10259) and fixed names.
import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { request as httpRequest } from 'node:http';
import { createConnection } from 'node:net';
import { join } from 'node:path';
import { machineSnapshot, NET, prepareHost, restoreHost, shimPids, sweepNode, type MachineSnapshot, type SandboxRef } from './cluster-host.ts';
import { importClusterImages } from './cluster-images.ts';
import { makeClusterPki, type CertName, type ClusterPki } from './cluster-pki.ts';
import { DEBIAN_CNI_DIR, REPO_ROOT } from './conflist.ts';
import { CONTAINERD, containerdConfigToml } from './containerd.ts';
import { criClient, removeAllSandboxes, type CriClient } from './cri.ts';
import { minimalEnv, run, sleep, type RunResult } from './proc.ts';
import { captureBackend } from './nftables.ts';

export const CLUSTER_DIR = '/var/lib/icni-cluster';
export const NODE_NAME = 'icni-node';
/** The primary network (standing in for calico): its name, and its file in the node's net.d. */
export const PRIMARY_NETWORK = 'icni-cluster';
export const PRIMARY_CONFLIST = '10-icni-bridge.conflist';
/** The chart, and the values that set this cluster's image and host paths. */
export const CHART_DIR = join(REPO_ROOT, 'deploy', 'charts', 'istio-cni');
export const CLUSTER_VALUES = join(REPO_ROOT, 'cluster', 'values.yaml');
/** The Helm release of our DaemonSet, in kube-system. */
export const RELEASE = 'istio-cni';
export { NET };

export const paths = {
  state: join(CLUSTER_DIR, 'state.json'),
  logs: join(CLUSTER_DIR, 'logs'),
  pki: join(CLUSTER_DIR, 'pki'),
  etcdData: join(CLUSTER_DIR, 'etcd'),
  adminKubeconfig: join(CLUSTER_DIR, 'admin.kubeconfig'),
  containerd: join(CLUSTER_DIR, 'containerd'),
  containerdSocket: join(CLUSTER_DIR, 'containerd', 'containerd.sock'),
  kubeletRoot: join(CLUSTER_DIR, 'kubelet'),
  podLogs: join(CLUSTER_DIR, 'pod-logs'),
  /** The node's CNI dirs, as cluster/values.yaml sets cniBinDir and cniConfDir. */
  cniBin: join(CLUSTER_DIR, 'cni', 'bin'),
  cniNet: join(CLUSTER_DIR, 'cni', 'net.d'),
  ipam: join(CLUSTER_DIR, 'cni', 'ipam'),
  /** The installer's pod cache socket dir, as cluster/values.yaml sets podCache.socketPath. */
  podCache: join(CLUSTER_DIR, 'pod-cache'),
  /** The plugin's log_file, as cluster/values.yaml sets pluginLogFile. */
  pluginLog: join(CLUSTER_DIR, 'cni', 'istio-cni.log'),
  work: join(CLUSTER_DIR, 'work'),
  /** helm's cache, config and data (release storage is in the cluster; this is the client's). */
  helm: join(CLUSTER_DIR, 'helm'),
  /** The apiserver's audit log: every request of our DaemonSet's ServiceAccount (PLUGIN_USER). */
  auditLog: join(CLUSTER_DIR, 'logs', 'audit.log'),
} as const;

/** Who the plugin (with the kubeconfig the installer writes), the installer and repair are to the API. */
export const PLUGIN_USER = 'system:serviceaccount:kube-system:istio-cni';

/** The apiserver's audit policy: our ServiceAccount's requests, nobody else's. */
const AUDIT_POLICY = {
  apiVersion: 'audit.k8s.io/v1',
  kind: 'Policy',
  omitStages: ['RequestReceived'],
  rules: [{ level: 'Metadata', users: [PLUGIN_USER] }, { level: 'None' }],
};

export const COMPONENTS = ['etcd', 'kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'containerd', 'kubelet'] as const;
export type Component = (typeof COMPONENTS)[number];

interface ClusterState {
  /** The Kubernetes kit's bin dir (cluster/build.sh k8s). */
  bins: string;
  /** The machine before `up`. */
  host: MachineSnapshot;
  /** Each running component's PID and executable (a PID reused by another program is not ours). */
  procs: Partial<Record<Component, { pid: number; exe: string }>>;
}

const API = `https://${NET.nodeIp}:${NET.apiPort}`;
/**
 * overlayfs, not the native snapshotter of the other containerd tests: with native every container
 * is a full copy of its image (~230 MB here, the plugin executable and a Debian base), which made
 * pod starts slow and left gigabytes for `down` to delete.
 */
export const SNAPSHOTTER = 'overlayfs';
const PORTS = [2379, 2380, NET.apiPort, 10248, 10250, 10257, 10259];

// ---------------------------------------------------------------------------------------
// State

function readState(): ClusterState | undefined {
  try {
    return JSON.parse(readFileSync(paths.state, 'utf8')) as ClusterState;
  } catch {
    return undefined;
  }
}

function writeState(state: ClusterState): void {
  writeFileSync(paths.state, `${JSON.stringify(state, null, 2)}\n`);
}

/** argv[0] of a live (not zombie) process, or undefined. */
function liveExe(pid: number): string | undefined {
  try {
    if (readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /, '').startsWith('Z')) return undefined;
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')[0];
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------
// Component command lines

function kubeconfigText(pki: ClusterPki, user: CertName, server = API): string {
  const { cert: crt, key } = pki.cert(user);
  return JSON.stringify({
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: 'icni', cluster: { server, 'certificate-authority': pki.caCert } }],
    users: [{ name: user, user: { 'client-certificate': crt, 'client-key': key } }],
    contexts: [{ name: 'icni', context: { cluster: 'icni', user } }],
    'current-context': 'icni',
  }, null, 2);
}

const kubeconfigPath = (who: string) => join(CLUSTER_DIR, `${who}.kubeconfig`);

function kubeletConfig(pki: ClusterPki): object {
  const serving = pki.cert('kubelet-serving');
  return {
    apiVersion: 'kubelet.config.k8s.io/v1beta1',
    kind: 'KubeletConfiguration',
    // This machine has cgroup v1 only; from 1.35 on the kubelet refuses it unless told otherwise.
    failCgroupV1: false,
    cgroupDriver: 'cgroupfs',
    containerRuntimeEndpoint: `unix://${paths.containerdSocket}`,
    address: NET.nodeIp,
    readOnlyPort: 0,
    healthzBindAddress: '127.0.0.1',
    tlsCertFile: serving.cert,
    tlsPrivateKeyFile: serving.key,
    authentication: { anonymous: { enabled: false }, webhook: { enabled: true }, x509: { clientCAFile: pki.caCert } },
    authorization: { mode: 'Webhook' },
    failSwapOn: false,
    // Nothing to pull from and no ephemeral-storage accounting wanted: never evict, never collect images.
    localStorageCapacityIsolation: false,
    imageGCHighThresholdPercent: 100,
    evictionHard: { 'memory.available': '0%', 'nodefs.available': '0%', 'nodefs.inodesFree': '0%', 'imagefs.available': '0%' },
    // The KUBE-IPTABLES-HINT/KUBE-FIREWALL chains are for a kube-proxy; there is none, and they
    // would land in the machine's own iptables.
    makeIPTablesUtilChains: false,
    podLogsDir: paths.podLogs,
    volumePluginDir: join(paths.kubeletRoot, 'volume-plugins'),
    // No cluster DNS; pods get a resolv.conf with no server, so no query can leave the machine.
    resolvConf: join(CLUSTER_DIR, 'resolv.conf'),
    rotateCertificates: false,
    serializeImagePulls: false,
  };
}

function commandLine(c: Component, bins: string, pki: ClusterPki): string[] {
  const cfg = (who: string) => kubeconfigPath(who);
  switch (c) {
    case 'etcd':
      return [join(bins, 'etcd'), '--name=icni-node', `--data-dir=${paths.etcdData}`,
        '--listen-client-urls=http://127.0.0.1:2379', '--advertise-client-urls=http://127.0.0.1:2379',
        '--listen-peer-urls=http://127.0.0.1:2380', '--initial-advertise-peer-urls=http://127.0.0.1:2380',
        '--initial-cluster=icni-node=http://127.0.0.1:2380',
        // A throw-away test cluster: no fsync per write (2 shared cores, a busy disk).
        '--unsafe-no-fsync'];
    case 'kube-apiserver': {
      const serving = pki.cert('apiserver');
      const kubeletClient = pki.cert('apiserver-kubelet-client');
      return [join(bins, 'kube-apiserver'), '--etcd-servers=http://127.0.0.1:2379',
        `--bind-address=${NET.nodeIp}`, `--advertise-address=${NET.nodeIp}`, `--secure-port=${NET.apiPort}`,
        `--tls-cert-file=${serving.cert}`, `--tls-private-key-file=${serving.key}`, `--client-ca-file=${pki.caCert}`,
        `--kubelet-client-certificate=${kubeletClient.cert}`, `--kubelet-client-key=${kubeletClient.key}`,
        `--kubelet-certificate-authority=${pki.caCert}`, '--kubelet-preferred-address-types=InternalIP',
        '--service-account-issuer=https://kubernetes.default.svc.cluster.local',
        `--service-account-key-file=${pki.saPub}`, `--service-account-signing-key-file=${pki.saKey}`,
        `--service-cluster-ip-range=${NET.serviceCidr}`, '--authorization-mode=Node,RBAC',
        '--enable-admission-plugins=NodeRestriction', '--allow-privileged=true', '--profiling=false',
        `--cert-dir=${join(CLUSTER_DIR, 'apiserver')}`,
        `--audit-policy-file=${join(CLUSTER_DIR, 'audit-policy.json')}`, `--audit-log-path=${paths.auditLog}`];
    }
    case 'kube-controller-manager':
      return [join(bins, 'kube-controller-manager'), `--kubeconfig=${cfg('controller-manager')}`,
        `--authentication-kubeconfig=${cfg('controller-manager')}`, `--authorization-kubeconfig=${cfg('controller-manager')}`,
        '--bind-address=127.0.0.1', `--root-ca-file=${pki.caCert}`, `--service-account-private-key-file=${pki.saKey}`,
        '--use-service-account-credentials=true', '--leader-elect=false', '--cluster-name=icni',
        `--service-cluster-ip-range=${NET.serviceCidr}`, '--profiling=false'];
    case 'kube-scheduler':
      return [join(bins, 'kube-scheduler'), `--kubeconfig=${cfg('scheduler')}`,
        `--authentication-kubeconfig=${cfg('scheduler')}`, `--authorization-kubeconfig=${cfg('scheduler')}`,
        '--bind-address=127.0.0.1', '--leader-elect=false', '--profiling=false'];
    case 'containerd':
      return [CONTAINERD, '--config', join(paths.containerd, 'config.toml')];
    case 'kubelet':
      return [join(bins, 'kubelet'), `--config=${join(CLUSTER_DIR, 'kubelet-config.json')}`, `--kubeconfig=${cfg('kubelet')}`,
        `--root-dir=${paths.kubeletRoot}`, `--node-ip=${NET.nodeIp}`, `--hostname-override=${NODE_NAME}`, '--v=2'];
  }
}

// ---------------------------------------------------------------------------------------
// Probes

interface HttpAnswer {
  status: number;
  body: string;
}

function httpGet(url: string, tls?: { ca?: string; cert?: string; key?: string; insecure?: boolean }, timeoutMs = 2000): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    const options = {
      timeout: timeoutMs,
      ...(tls && {
        ca: tls.ca && readFileSync(tls.ca),
        cert: tls.cert && readFileSync(tls.cert),
        key: tls.key && readFileSync(tls.key),
        rejectUnauthorized: !tls.insecure,
      }),
    };
    const req = (url.startsWith('https:') ? httpsRequest : httpRequest)(url, options, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => (body += d)).on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error(`no answer from ${url} in ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end();
  });
}

function portInUse(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createConnection({ port, host });
    s.once('connect', () => (s.destroy(), resolve(true)));
    s.once('error', () => resolve(false));
  });
}

/** Thrown by a waitUntil check: stop waiting at once (e.g. the process being waited for died). */
export class GaveUp extends Error {}

/**
 * Poll `check` until it returns true; throw with the last reason (a string it returned, or what
 * it threw) after timeoutMs.
 */
export async function waitUntil(what: string, check: () => Promise<boolean | string>, timeoutMs: number, intervalMs = 250): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  for (;;) {
    try {
      const r = await check();
      if (r === true) return;
      last = typeof r === 'string' ? r : '';
    } catch (err) {
      if (err instanceof GaveUp) throw new Error(`cluster: ${what}: ${err.message}`);
      last = (err as Error).message;
    }
    if (Date.now() > deadline) throw new Error(`cluster: ${what}: not within ${timeoutMs} ms${last ? `: ${last}` : ''}`);
    await sleep(intervalMs);
  }
}

function readiness(c: Component, pki: ClusterPki): () => Promise<boolean | string> {
  const admin = pki.cert('admin');
  const ok = (a: HttpAnswer) => a.status === 200 || `HTTP ${a.status}: ${a.body.slice(0, 200)}`;
  switch (c) {
    case 'etcd':
      return async () => ok(await httpGet('http://127.0.0.1:2379/health'));
    case 'kube-apiserver':
      return async () => ok(await httpGet(`${API}/readyz`, { ca: pki.caCert, cert: admin.cert, key: admin.key }));
    case 'kube-controller-manager':
      return async () => ok(await httpGet('https://127.0.0.1:10257/healthz', { insecure: true }));
    case 'kube-scheduler':
      return async () => ok(await httpGet('https://127.0.0.1:10259/healthz', { insecure: true }));
    case 'containerd':
      return async () => {
        const cri = criClient(paths.containerdSocket, 2000);
        try {
          const conditions = await cri.status();
          return conditions.every((x) => x.status) || JSON.stringify(conditions);
        } finally {
          cri.close();
        }
      };
    case 'kubelet':
      return async () => ok(await httpGet('http://127.0.0.1:10248/healthz'));
  }
}

// ---------------------------------------------------------------------------------------
// Components

function componentPki(): Promise<ClusterPki> {
  return makeClusterPki(paths.pki, { nodeName: NODE_NAME, nodeIp: NET.nodeIp, apiServiceIp: NET.apiServiceIp });
}

/** A component's log file (stdout and stderr, appended across restarts). */
export const logOf = (c: Component) => join(paths.logs, `${c}.log`);

/**
 * Start one component, detached (its own session, output appended to its log), record its PID,
 * and wait until it answers its health check. Used by `up`, and by tests that restart a part.
 */
export async function startComponent(c: Component, timeoutMs = 120_000): Promise<number> {
  const state = readState();
  if (!state) throw new Error('cluster: not up (no state file)');
  const running = state.procs[c];
  if (running && liveExe(running.pid) === running.exe) throw new Error(`cluster: ${c} already runs as PID ${running.pid}`);
  const pki = await componentPki();
  const argv = commandLine(c, state.bins, pki);
  const log = openSync(logOf(c), 'a');
  const child = spawn(argv[0]!, argv.slice(1), { detached: true, stdio: ['ignore', log, log], env: minimalEnv(), cwd: CLUSTER_DIR });
  closeSync(log);
  child.unref();
  const pid = child.pid;
  if (pid === undefined) throw new Error(`cluster: could not start ${argv[0]}`);
  state.procs[c] = { pid, exe: argv[0]! };
  writeState(state);
  const ready = readiness(c, pki);
  await waitUntil(`${c} ready (log: ${logOf(c)})`, async () => {
    if (!liveExe(pid)) throw new GaveUp(`${c} exited; last log lines:\n${tail(logOf(c), 15)}`);
    return ready();
  }, timeoutMs);
  return pid;
}

function tail(file: string, lines: number): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

/** Stop one component by its recorded PID: `signal`, then SIGKILL after graceMs. */
export async function stopComponent(c: Component, signal: NodeJS.Signals = 'SIGTERM', graceMs = 15_000): Promise<void> {
  const state = readState();
  const proc = state?.procs[c];
  if (!state || !proc) return;
  const ours = () => liveExe(proc.pid) === proc.exe;
  if (ours()) {
    process.kill(proc.pid, signal);
    const deadline = Date.now() + graceMs;
    while (ours() && Date.now() < deadline) await sleep(100);
    if (ours()) process.kill(proc.pid, 'SIGKILL');
    while (ours()) await sleep(50);
  }
  delete state.procs[c];
  writeState(state);
}

export async function restartComponent(c: Component): Promise<number> {
  await stopComponent(c);
  return startComponent(c);
}

// ---------------------------------------------------------------------------------------
// kubectl and the node's runtime

/** kubectl of the kit against the cluster as its admin; throws unless it exits 0. */
export async function kubectl(args: readonly string[], opts: { input?: string; timeoutMs?: number } = {}): Promise<RunResult> {
  const r = await kubectlRun(args, opts);
  if (r.code !== 0) throw new Error(`kubectl ${args.join(' ')} failed (${r.code}): ${r.stderr}${r.stdout}`);
  return r;
}

/** kubectl without the exit check (for commands whose failure is the answer). */
export function kubectlRun(args: readonly string[], opts: { input?: string; timeoutMs?: number } = {}): Promise<RunResult> {
  const state = readState();
  if (!state) throw new Error('cluster: not up (no state file)');
  return run([join(state.bins, 'kubectl'), `--kubeconfig=${paths.adminKubeconfig}`, ...args], {
    env: minimalEnv({ HOME: CLUSTER_DIR }),
    timeoutMs: opts.timeoutMs ?? 120_000,
    ...(opts.input !== undefined && { input: opts.input }),
  });
}

export async function kubectlJson<T>(args: readonly string[]): Promise<T> {
  return JSON.parse((await kubectl([...args, '-o', 'json'])).stdout) as T;
}

/** A CRI client on the node's containerd (what the kubelet talks to). Close it when done. */
export function nodeCri(): CriClient {
  return criClient(paths.containerdSocket);
}

export interface PodSandboxOnNode {
  id: string;
  /** containerd's /run/netns/cni-… of the pod. */
  netns: string;
  /** The sandbox's (pause) process. */
  pid: number;
}

/** What containerd's verbose PodSandboxStatus tells about a sandbox. */
interface SandboxInfo {
  pid?: number;
  runtimeSpec?: { linux?: { namespaces?: Array<{ type: string; path?: string }> } };
}

const netnsOf = (info: SandboxInfo) => info.runtimeSpec?.linux?.namespaces?.find((n) => n.type === 'network')?.path;

/** A pod's ready sandbox, found through the CRI by the pod's UID (as crictl inspectp would). */
export async function podSandbox(uid: string): Promise<PodSandboxOnNode> {
  const cri = nodeCri();
  try {
    const ready = (await cri.listPodSandbox()).filter((s) => s.metadata.uid === uid && s.state === 'SANDBOX_READY');
    if (ready.length !== 1) throw new Error(`cluster: pod ${uid} has ${ready.length} ready sandboxes`);
    const status = await cri.podSandboxStatus(ready[0]!.id, true);
    const info = JSON.parse(status.info.info ?? '{}') as SandboxInfo;
    const netns = netnsOf(info);
    if (!netns || !info.pid) throw new Error(`cluster: sandbox ${ready[0]!.id} has no netns or pid in its status`);
    return { id: ready[0]!.id, netns, pid: info.pid };
  } finally {
    cri.close();
  }
}

export interface PluginLogLine {
  verb: string;
  containerId?: string;
  netns?: string;
  pod?: string;
  decision?: string;
  reason?: string;
  apiAttempts?: number;
  msg: string;
  [key: string]: unknown;
}

/** The plugin's log on the node (cluster/values.yaml's pluginLogFile), one object per line. */
export function pluginLog(): PluginLogLine[] {
  if (!existsSync(paths.pluginLog)) return [];
  return readFileSync(paths.pluginLog, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as PluginLogLine);
}

export interface AuditEvent {
  verb: string;
  requestURI: string;
  user: { username: string };
  userAgent?: string;
  objectRef?: { resource?: string; subresource?: string; namespace?: string; name?: string };
  responseStatus?: { code?: number };
}

/**
 * The apiserver's record of every request our ServiceAccount made, once each (a watch is logged
 * when its response starts and again when it ends: the first is kept).
 */
export function auditEvents(): AuditEvent[] {
  if (!existsSync(paths.auditLog)) return [];
  const byId = new Map<string, AuditEvent>();
  for (const line of readFileSync(paths.auditLog, 'utf8').trim().split('\n').filter(Boolean)) {
    const e = JSON.parse(line) as AuditEvent & { auditID: string };
    if (!byId.has(e.auditID)) byId.set(e.auditID, e);
  }
  return [...byId.values()];
}

// ---------------------------------------------------------------------------------------
// up, down, status

/** The primary conflist as `up` writes it (the installer adds its entry to this file, and takes it out). */
export function primaryConflist(): string {
  return `${JSON.stringify({
    cniVersion: '1.0.0',
    name: PRIMARY_NETWORK,
    plugins: [{
      type: 'bridge',
      bridge: NET.bridge,
      // The bridge and its gateway address are the node's (prepareHost): no IP forwarding needed.
      isGateway: false,
      ipMasq: false,
      hairpinMode: true,
      ipam: { type: 'host-local', ranges: [[{ subnet: NET.podCidr, gateway: NET.podGateway }]], routes: [{ dst: '0.0.0.0/0' }], dataDir: paths.ipam },
    }],
  }, null, 2)}\n`;
}

/** A kit's bin dir (cluster/build.sh), built when missing (k8s, istio: 10-20 min cold on 2 cores; helm: 2 min). */
export async function kitBins(kit: 'k8s' | 'istio' | 'helm'): Promise<string> {
  const r = await new Promise<RunResult>((resolve) => {
    const child = spawn('/usr/bin/bash', [join(REPO_ROOT, 'cluster', 'build.sh'), kit], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env } });
    let stdout = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.on('close', (code) => resolve({ code: code ?? -1, signal: null, stdout, stderr: '', timedOut: false }));
  });
  const dir = r.stdout.trim().split('\n').pop() ?? '';
  if (r.code !== 0 || !existsSync(dir)) throw new Error(`cluster/build.sh ${kit} failed (${r.code})`);
  return dir;
}

async function healthy(): Promise<boolean> {
  const state = readState();
  if (!state) return false;
  if (!COMPONENTS.every((c) => state.procs[c] && liveExe(state.procs[c].pid) === state.procs[c].exe)) return false;
  try {
    return (await readiness('kube-apiserver', await componentPki())()) === true;
  } catch {
    return false;
  }
}

export interface UpOptions {
  /** Progress lines (default: stderr). */
  log?: (line: string) => void;
}

/**
 * Bring the cluster up with our DaemonSet installed and Ready. A cluster that is already up and
 * healthy is left as it is; a broken or half-made one is taken down first.
 */
export async function clusterUp(opts: UpOptions = {}): Promise<void> {
  const log = opts.log ?? ((l: string) => process.stderr.write(`${l}\n`));
  if (process.getuid?.() !== 0) throw new Error('cluster: must run as root');
  if (await healthy()) {
    log('cluster: already up');
    return;
  }
  if (existsSync(CLUSTER_DIR)) await clusterDown({ log });
  for (const port of PORTS) {
    if (await portInUse(port)) throw new Error(`cluster: port ${port} is in use on 127.0.0.1 (another cluster?)`);
  }
  const started = Date.now();
  const step = (what: string) => log(`cluster: ${what} (${((Date.now() - started) / 1000).toFixed(1)} s)`);

  const bins = await kitBins('k8s');
  step(`Kubernetes binaries in ${bins}`);
  for (const dir of [paths.logs, paths.containerd, paths.kubeletRoot, paths.podLogs, paths.cniBin, paths.cniNet, paths.ipam, paths.work]) {
    mkdirSync(dir, { recursive: true });
  }
  writeState({ bins, host: machineSnapshot(), procs: {} });
  await prepareHost();
  step(`node ${NODE_NAME} at ${NET.nodeIp} on ${NET.nodeLink}`);

  const pki = await componentPki();
  writeFileSync(paths.adminKubeconfig, kubeconfigText(pki, 'admin'), { mode: 0o600 });
  for (const [who, user] of [['controller-manager', 'controller-manager'], ['scheduler', 'scheduler'], ['kubelet', 'kubelet']] as const) {
    writeFileSync(kubeconfigPath(who), kubeconfigText(pki, user), { mode: 0o600 });
  }
  writeFileSync(join(CLUSTER_DIR, 'kubelet-config.json'), JSON.stringify(kubeletConfig(pki), null, 2));
  writeFileSync(join(CLUSTER_DIR, 'resolv.conf'), 'options ndots:1\n');
  writeFileSync(join(CLUSTER_DIR, 'audit-policy.json'), JSON.stringify(AUDIT_POLICY));
  for (const plugin of ['bridge', 'host-local', 'loopback']) symlinkSync(join(DEBIAN_CNI_DIR, plugin), join(paths.cniBin, plugin));
  writeFileSync(join(paths.cniNet, PRIMARY_CONFLIST), primaryConflist());
  writeFileSync(join(paths.containerd, 'config.toml'), containerdConfigToml(paths.containerd, { cniBinDir: paths.cniBin, cniConfDir: paths.cniNet }, SNAPSHOTTER));

  for (const c of ['etcd', 'kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'containerd'] as const) {
    await startComponent(c);
    step(`${c} ready`);
  }
  await importClusterImages(paths.containerdSocket, paths.work, SNAPSHOTTER);
  step('images imported into containerd');
  await startComponent('kubelet');
  await waitUntil('node Ready', async () => {
    const r = await kubectlRun(['get', 'node', NODE_NAME, '-o', 'jsonpath={.status.conditions[?(@.type=="Ready")].status}']);
    return r.stdout === 'True' || r.stderr || r.stdout;
  }, 120_000, 500);
  step(`node ${NODE_NAME} Ready`);
  // Pods need their namespace's default ServiceAccount, made by the controller-manager.
  await waitUntil('default ServiceAccount', async () => (await kubectlRun(['get', 'serviceaccount', 'default'])).code === 0, 60_000, 500);
  await installDaemonSet();
  step('istio-cni DaemonSet Ready');
  await publishMeshRootCert('default');
  log(`cluster: up in ${((Date.now() - started) / 1000).toFixed(1)} s\nexport KUBECONFIG=${paths.adminKubeconfig}\nalias kubectl=${join(bins, 'kubectl')}`);
}

/**
 * What istiod would publish in every namespace and injected pods mount: the istio-ca-root-cert
 * ConfigMap (the cluster's CA stands in for the mesh's root; there is no istiod here).
 */
export async function publishMeshRootCert(namespace: string): Promise<void> {
  await kubectl(['-n', namespace, 'create', 'configmap', 'istio-ca-root-cert', `--from-file=root-cert.pem=${join(paths.pki, 'ca.crt')}`]);
}

/** helm (cluster/build.sh helm) on this cluster as its admin; its own files in the cluster dir. */
export async function helm(args: readonly string[], opts: { timeoutMs?: number } = {}): Promise<RunResult> {
  const bin = join(await kitBins('helm'), 'helm');
  const home = (what: string) => join(paths.helm, what);
  const r = await run([bin, `--kubeconfig=${paths.adminKubeconfig}`, ...args], {
    env: minimalEnv({ HOME: CLUSTER_DIR, HELM_CACHE_HOME: home('cache'), HELM_CONFIG_HOME: home('config'), HELM_DATA_HOME: home('data') }),
    timeoutMs: opts.timeoutMs ?? 120_000,
  });
  if (r.code !== 0) throw new Error(`helm ${args.join(' ')} failed (${r.code}): ${r.stderr}${r.stdout}`);
  return r;
}

/**
 * The chart with cluster/values.yaml and `values` on top (helm's --set, e.g. `repair.deletePods=false`),
 * as an operator installs and changes it (`helm upgrade --install`: an install the first time; an
 * upgrade also makes again what was deleted behind helm's back, e.g. the DaemonSet); then the
 * DaemonSet's pod Ready.
 */
export async function installDaemonSet(values: readonly string[] = []): Promise<void> {
  await upgradeRelease(values);
  await kubectl(['-n', 'kube-system', 'rollout', 'status', 'daemonset/istio-cni-node', '--timeout=180s'], { timeoutMs: 200_000 });
}

/** `helm upgrade --install` of the chart with cluster/values.yaml and `values`, not waiting for the rollout. */
export async function upgradeRelease(values: readonly string[]): Promise<void> {
  // ISTIO_CNI_TEST_BACKEND=nftables: the cluster's pods captured with native nftables.
  const backend = captureBackend() === 'nftables' ? ['iptablesBackend=nftables'] : [];
  await helm(['upgrade', '--install', RELEASE, CHART_DIR, '--namespace', 'kube-system', '--values', CLUSTER_VALUES, ...[...backend, ...values].flatMap((v) => ['--set', v])]);
}

/** The DaemonSet's pods, by the chart's label. */
export async function daemonSetPods(): Promise<Array<{ metadata: { name: string; uid: string; deletionTimestamp?: string }; status: { containerStatuses?: Array<{ name: string; restartCount: number; ready: boolean; image: string; containerID?: string; state?: { running?: { startedAt: string } } }> } }>> {
  return (await kubectlJson<{ items: never[] }>(['-n', 'kube-system', 'get', 'pods', '-l', 'app.kubernetes.io/name=istio-cni'])).items;
}

/** Only the DaemonSet deleted (the release's ServiceAccount, RBAC and ConfigMap stay), waiting until its pods are gone. */
export async function deleteDaemonSet(): Promise<void> {
  await kubectl(['-n', 'kube-system', 'delete', 'daemonset', 'istio-cni-node', '--wait=true']);
  await waitUntil('istio-cni-node pods gone', async () => (await daemonSetPods()).length === 0 || 'still there', 60_000, 250);
}

/** `helm uninstall`, waiting until the DaemonSet's pods are gone. */
export async function uninstallDaemonSet(): Promise<void> {
  await helm(['uninstall', RELEASE, '--namespace', 'kube-system', '--wait', '--timeout=60s'], { timeoutMs: 90_000 });
  await waitUntil('istio-cni-node pods gone', async () => {
    const r = await kubectl(['-n', 'kube-system', 'get', 'pods', '-l', 'app.kubernetes.io/name=istio-cni', '-o', 'name']);
    return r.stdout.trim() === '' || r.stdout.trim();
  }, 60_000, 500);
}

/** Every sandbox containerd knows, with its netns (while containerd runs). */
async function sandboxesOnNode(cri: CriClient): Promise<SandboxRef[]> {
  const refs: SandboxRef[] = [];
  for (const s of await cri.listPodSandbox()) {
    const info = JSON.parse((await cri.podSandboxStatus(s.id, true)).info.info ?? '{}') as SandboxInfo;
    const netns = netnsOf(info);
    if (netns) refs.push({ id: s.id, netns });
  }
  return refs;
}

/**
 * Take everything down and put the machine back as `up` found it: the kubelet first (so nothing
 * restarts), every pod sandbox through containerd (the CNI DEL runs, containerd removes the
 * netns), containerd, the control plane; then what a crash could have left (see sweepNode), the
 * host's links, rules and sysctls, and the cluster dir. Safe to run when nothing is up.
 */
export async function clusterDown(opts: UpOptions = {}): Promise<void> {
  const log = opts.log ?? ((l: string) => process.stderr.write(`${l}\n`));
  const started = Date.now();
  const step = (what: string) => log(`cluster: ${what} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
  const state = readState();
  if (state) {
    await stopComponent('kubelet');
    step('kubelet stopped');
    const containerd = state.procs.containerd;
    let sandboxes: SandboxRef[] = [];
    if (containerd && liveExe(containerd.pid) === containerd.exe) {
      const cri = nodeCri();
      sandboxes = await sandboxesOnNode(cri).catch(() => []);
      await removeAllSandboxes(cri, 500, 120_000).catch((err: Error) => log(`cluster: removing sandboxes: ${err.message}`));
      cri.close();
      step(`${sandboxes.length} pod sandboxes removed`);
    }
    for (const c of ['containerd', 'kube-scheduler', 'kube-controller-manager', 'kube-apiserver', 'etcd'] as const) {
      await stopComponent(c);
      step(`${c} stopped`);
    }
    // Shims exit once their containers are gone; wait a moment before sweeping what is left.
    await waitUntil('containerd shims gone', async () => shimPids(paths.containerdSocket).length === 0, 10_000).catch(() => undefined);
    sweepNode({ clusterDir: CLUSTER_DIR, containerdSocket: paths.containerdSocket, runcRoot: join(paths.containerd, 'runc'), sandboxes });
    step('leftovers swept');
  }
  restoreHost(state?.host);
  step('host restored');
  rmSync(CLUSTER_DIR, { recursive: true, force: true });
  step(`${CLUSTER_DIR} removed`);
  log('cluster: down');
}

export interface ClusterStatus {
  up: boolean;
  components: Array<{ component: Component; pid?: number; running: boolean }>;
  kubeconfig: string;
}

export async function clusterStatus(): Promise<ClusterStatus> {
  const state = readState();
  return {
    up: await healthy(),
    components: COMPONENTS.map((c) => {
      const proc = state?.procs[c];
      return { component: c, ...(proc && { pid: proc.pid }), running: proc !== undefined && liveExe(proc.pid) === proc.exe };
    }),
    kubeconfig: paths.adminKubeconfig,
  };
}
