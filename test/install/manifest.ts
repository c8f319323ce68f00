// deploy/istio-cni.yaml as data: the objects, and the installer environment the DaemonSet gives.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import * as h from '../harness/index.ts';

export const MANIFEST = join(h.REPO_ROOT, 'deploy', 'istio-cni.yaml');

// Only the fields the tests read.
export interface K8sObject {
  kind: string;
  metadata: { name: string; namespace?: string };
  data?: Record<string, string>;
  rules?: Array<{ apiGroups: string[]; resources: string[]; verbs: string[] }>;
  roleRef?: { kind: string; name: string };
  subjects?: Array<{ kind: string; name: string; namespace: string }>;
  spec?: { template: { spec: PodSpec } };
}
interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: { configMapKeyRef?: { name: string; key: string }; fieldRef?: { fieldPath: string } };
}
interface Probe {
  httpGet: { path: string; port: string | number };
}
export interface Container {
  name: string;
  image: string;
  command?: string[];
  env: EnvVar[];
  ports?: Array<{ name: string; containerPort: number }>;
  readinessProbe?: Probe;
  livenessProbe?: Probe;
  securityContext?: { runAsUser?: number; runAsNonRoot?: boolean; capabilities?: { drop?: string[]; add?: string[] } };
  volumeMounts?: Array<{ name: string; mountPath: string }>;
}
export interface PodSpec {
  serviceAccountName: string;
  hostNetwork: boolean;
  priorityClassName: string;
  tolerations: Array<Record<string, string>>;
  containers: Container[];
  volumes: Array<{ name: string; hostPath: { path: string } }>;
}

export function manifestObjects(): K8sObject[] {
  return parseAllDocuments(readFileSync(MANIFEST, 'utf8')).map((d) => d.toJS() as K8sObject);
}

export function find(objects: K8sObject[], kind: string): K8sObject {
  const o = objects.find((x) => x.kind === kind);
  if (!o) throw new Error(`${MANIFEST}: no ${kind}`);
  return o;
}

export function container(objects: K8sObject[], name: string): Container {
  const c = find(objects, 'DaemonSet').spec!.template.spec.containers.find((x) => x.name === name);
  if (!c) throw new Error(`${MANIFEST}: no container ${name}`);
  return c;
}

/** The node's address as the downward API gives a host-network pod (status.podIP) in these tests. */
export const POD_IP = '127.0.0.1';

/** The installer container's environment with ConfigMap and downward API references resolved, as kubelet would give it on `nodeName`. */
export function daemonSetEnv(objects: K8sObject[], nodeName = 'test-node'): Record<string, string> {
  const env: Record<string, string> = {};
  for (const v of container(objects, 'install-cni').env) {
    const ref = v.valueFrom?.configMapKeyRef;
    const field = v.valueFrom?.fieldRef?.fieldPath;
    const value = ref
      ? objects.find((o) => o.kind === 'ConfigMap' && o.metadata.name === ref.name)?.data?.[ref.key]
      : field === 'spec.nodeName'
        ? nodeName
        : field === 'status.podIP'
          ? POD_IP
          : v.value;
    if (value === undefined) throw new Error(`${MANIFEST}: env ${v.name} has no value`);
    env[v.name] = value;
  }
  return env;
}

/** Host path -> path in the container, for each hostPath volume the container mounts. */
export function hostMounts(objects: K8sObject[]): Map<string, string> {
  const pod = find(objects, 'DaemonSet').spec!.template.spec;
  const mounts = new Map<string, string>();
  for (const m of container(objects, 'install-cni').volumeMounts ?? []) {
    const volume = pod.volumes.find((v) => v.name === m.name);
    if (volume) mounts.set(volume.hostPath.path, m.mountPath);
  }
  return mounts;
}
