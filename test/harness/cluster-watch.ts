// What the start-up race tests observe on the real cluster, independently of the plugin:
// - every pod of a namespace, through a watch of the API server (as the admin): whether it was
//   ever unschedulable, each istio-validation run's exit code, whether its app container ever
//   started, when it became Ready, when it went away;
// - every start of every app container, reported by the stand-in app itself from inside its own
//   network namespace (cluster/standin, reportCapture: is its traffic captured?) into a host dir.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { request } from 'node:https';
import { join } from 'node:path';
import { CLUSTER_DIR, NET } from './cluster.ts';
import { PROXY_IMAGE } from './cluster-images.ts';
import { sleep } from './proc.ts';

/** Where the app containers of the tests' pods write their capture reports (a hostPath). */
export const CAPTURE_REPORTS = join(CLUSTER_DIR, 'capture-reports');
/** Outside every pod (the pods' gateway on the node), where no proxy listens: see reportCapture. */
export const CAPTURE_PROBE = `${NET.podGateway}:9`;

export interface CaptureReport {
  uid: string;
  pod: string;
  captured: boolean;
  probe: string;
  answer?: string;
  error?: string;
  at: string;
}

/** Every capture report written so far (one per app container start). */
export function captureReports(): CaptureReport[] {
  if (!existsSync(CAPTURE_REPORTS)) return [];
  return readdirSync(CAPTURE_REPORTS)
    .filter((f) => f.endsWith('.json') && !f.startsWith('.'))
    .map((f) => JSON.parse(readFileSync(join(CAPTURE_REPORTS, f), 'utf8')) as CaptureReport);
}

/**
 * A Deployment of the stand-in app, `replicas` pods labelled app=<name>, whose app container
 * reports at each start whether its traffic is captured. Put it through kubeInject to mesh it.
 */
export function reportingDeployment(name: string, replicas: number): string {
  return JSON.stringify({
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name },
    spec: {
      replicas,
      selector: { matchLabels: { app: name } },
      template: {
        // The injected proxy's default request (100m CPU) would fit ~19 pods on this 2-core node.
        metadata: { labels: { app: name }, annotations: { 'sidecar.istio.io/proxyCPU': '10m', 'sidecar.istio.io/proxyMemory': '32Mi' } },
        spec: {
          terminationGracePeriodSeconds: 2,
          containers: [{
            name: 'app',
            image: PROXY_IMAGE,
            imagePullPolicy: 'IfNotPresent',
            command: ['/usr/local/bin/standin', 'app', '8080'],
            env: [
              { name: 'CAPTURE_REPORT_DIR', value: '/capture-reports' },
              { name: 'CAPTURE_PROBE', value: CAPTURE_PROBE },
              { name: 'POD_UID', valueFrom: { fieldRef: { fieldPath: 'metadata.uid' } } },
            ],
            ports: [{ containerPort: 8080 }],
            volumeMounts: [{ name: 'capture-reports', mountPath: '/capture-reports' }],
          }],
          volumes: [{ name: 'capture-reports', hostPath: { path: CAPTURE_REPORTS, type: 'DirectoryOrCreate' } }],
        },
      },
    },
  });
}

interface ContainerState {
  running?: object;
  terminated?: { exitCode: number; containerID?: string; startedAt?: string };
}
interface ContainerStatus {
  name: string;
  restartCount: number;
  ready?: boolean;
  started?: boolean;
  state?: ContainerState;
  lastState?: ContainerState;
}
export interface WatchedPod {
  metadata: { name: string; namespace: string; uid: string; resourceVersion: string; labels?: Record<string, string>; deletionTimestamp?: string };
  spec: { nodeName?: string };
  status?: {
    phase?: string;
    conditions?: Array<{ type: string; status: string; reason?: string }>;
    initContainerStatuses?: ContainerStatus[];
    containerStatuses?: ContainerStatus[];
  };
}

/** One pod's life as the watch saw it. */
export interface PodRecord {
  uid: string;
  name: string;
  labels: Record<string, string>;
  firstSeen: number;
  /** The scheduler said no at least once (e.g. a NoSchedule taint). */
  unschedulable: boolean;
  boundAt?: number;
  /** Each istio-validation run that ended, by container ID: its exit code. */
  validationRuns: Map<string, number>;
  /** The app container ever ran (running now, ran before, or restarted). */
  appStarted: boolean;
  readyAt?: number;
  goneAt?: number;
}

/** Every pod of a namespace from a watch (list, then watch from its resourceVersion, resumed when it breaks). */
export class PodWatch {
  readonly pods = new Map<string, PodRecord>();
  private stopped = false;
  private readonly done: Promise<void>;
  private abort?: () => void;
  /** Resolves once the first list is in. */
  readonly listed: Promise<void>;

  constructor(readonly namespace: string) {
    let listed!: () => void;
    this.listed = new Promise((resolve) => (listed = resolve));
    this.done = this.loop(listed);
  }

  /** The pods labelled app=<app>, in the order first seen. */
  of(app: string): PodRecord[] {
    return [...this.pods.values()].filter((p) => p.labels.app === app);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.abort?.();
    await this.done;
  }

  private note(pod: WatchedPod, gone: boolean): void {
    const now = Date.now();
    let rec = this.pods.get(pod.metadata.uid);
    if (rec === undefined) {
      rec = { uid: pod.metadata.uid, name: pod.metadata.name, labels: {}, firstSeen: now, unschedulable: false, validationRuns: new Map(), appStarted: false };
      this.pods.set(rec.uid, rec);
    }
    rec.labels = pod.metadata.labels ?? {};
    const conditions = pod.status?.conditions ?? [];
    if (conditions.some((c) => c.type === 'PodScheduled' && c.status === 'False' && c.reason === 'Unschedulable')) rec.unschedulable = true;
    if (pod.spec.nodeName !== undefined) rec.boundAt ??= now;
    for (const s of pod.status?.initContainerStatuses ?? []) {
      if (s.name !== 'istio-validation') continue;
      for (const t of [s.state?.terminated, s.lastState?.terminated]) {
        if (t !== undefined) rec.validationRuns.set(t.containerID ?? `${t.startedAt}`, t.exitCode);
      }
    }
    for (const s of pod.status?.containerStatuses ?? []) {
      if (s.name === 'app' && (s.state?.running !== undefined || s.state?.terminated !== undefined || s.lastState?.terminated !== undefined || s.restartCount > 0)) rec.appStarted = true;
    }
    if (conditions.some((c) => c.type === 'Ready' && c.status === 'True')) rec.readyAt ??= now;
    if (gone) rec.goneAt ??= now;
  }

  private async loop(listed: () => void): Promise<void> {
    const base = `/api/v1/namespaces/${this.namespace}/pods`;
    let resourceVersion: string | undefined;
    while (!this.stopped) {
      try {
        if (resourceVersion === undefined) {
          const list = JSON.parse(await this.get(base)) as { metadata: { resourceVersion: string }; items: WatchedPod[] };
          for (const pod of list.items) this.note(pod, false);
          resourceVersion = list.metadata.resourceVersion;
          listed();
        }
        resourceVersion = await this.watch(`${base}?watch=true&allowWatchBookmarks=true&resourceVersion=${resourceVersion}`, resourceVersion);
      } catch {
        // The API server is away (a test stops it) or the watch broke: resume from where it was.
        if (!this.stopped) await sleep(500);
      }
    }
  }

  /** Reads events until the stream ends; resolves with the last resourceVersion (undefined: list again). */
  private watch(path: string, from: string): Promise<string | undefined> {
    return new Promise((resolve, reject) => {
      let last: string | undefined = from;
      let pending = '';
      const req = request({ ...adminRequest(path), timeout: 0 }, (res) => {
        if (res.statusCode === 410) return resolve(undefined);
        if (res.statusCode !== 200) return reject(new Error(`watch: HTTP ${res.statusCode}`));
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          pending += chunk;
          const lines = pending.split('\n');
          pending = lines.pop() ?? '';
          for (const line of lines.filter(Boolean)) {
            const event = JSON.parse(line) as { type: string; object: WatchedPod & { code?: number } };
            if (event.type === 'ERROR') {
              last = event.object.code === 410 ? undefined : last;
              continue;
            }
            if (event.type !== 'BOOKMARK') this.note(event.object, event.type === 'DELETED');
            last = event.object.metadata.resourceVersion;
          }
        });
        res.on('end', () => resolve(last));
        res.on('error', reject);
      });
      req.on('error', reject);
      this.abort = () => req.destroy(new Error('stopped'));
      req.end();
    });
  }

  private get(path: string): Promise<string> {
    return new Promise((resolve, reject) => {
      const req = request({ ...adminRequest(path), timeout: 10_000 }, (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (d: string) => (body += d)).on('end', () => (res.statusCode === 200 ? resolve(body) : reject(new Error(`GET ${path}: HTTP ${res.statusCode}`))));
      });
      req.on('timeout', () => req.destroy(new Error(`GET ${path}: no answer`)));
      req.on('error', reject);
      req.end();
    });
  }
}

/** A request to the cluster's API server as its admin (client certificate). */
function adminRequest(path: string) {
  const pki = join(CLUSTER_DIR, 'pki');
  return {
    host: NET.nodeIp,
    port: NET.apiPort,
    path,
    ca: readFileSync(join(pki, 'ca.crt')),
    cert: readFileSync(join(pki, 'admin.crt')),
    key: readFileSync(join(pki, 'admin.key')),
    agent: false as const,
  };
}

export interface CaptureVerdict {
  /** Pods of the app. */
  created: number;
  /** Pods whose app container ran in a netns that did not capture its traffic. */
  ranUncaptured: string[];
  /** Pods whose app container ran and wrote no report (counted as uncaptured: nothing proves otherwise). */
  unreported: string[];
}

/** For every pod of `app` the watch saw: did its app ever run without capture? */
export function captureVerdict(watch: PodWatch, app: string): CaptureVerdict {
  const reports = captureReports();
  const pods = watch.of(app);
  const ranUncaptured: string[] = [];
  const unreported: string[] = [];
  for (const pod of pods) {
    const mine = reports.filter((r) => r.uid === pod.uid);
    if (mine.some((r) => !r.captured)) ranUncaptured.push(`${pod.name}: ${mine.filter((r) => !r.captured).map((r) => r.error ?? r.answer).join('; ')}`);
    else if (pod.appStarted && mine.length === 0) unreported.push(pod.name);
  }
  // A report from a pod the watch never saw would mean the watch missed one.
  const known = new Set(pods.map((p) => p.uid));
  for (const r of reports) if (r.pod.startsWith(`${app}-`) && !known.has(r.uid)) unreported.push(`${r.pod} (uid ${r.uid}, not seen by the watch)`);
  return { created: pods.length, ranUncaptured, unreported };
}
