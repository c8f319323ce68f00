// A CRI client for the pod sandbox calls kubelet makes (runtime.v1.RuntimeService over a unix
// socket), from test/harness/cri-runtime-v1.proto with @grpc/grpc-js + @grpc/proto-loader.
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { join } from 'node:path';
import { REPO_ROOT } from './conflist.ts';
import { sleep } from './proc.ts';

export const CRI_PROTO = join(REPO_ROOT, 'test', 'harness', 'cri-runtime-v1.proto');

export interface PodSandboxMetadata {
  name: string;
  uid: string;
  namespace: string;
  attempt?: number;
}

export interface PodSandboxConfig {
  metadata: PodSandboxMetadata;
  hostname?: string;
  logDirectory?: string;
  dnsConfig?: { servers?: string[]; searches?: string[]; options?: string[] };
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  linux?: { cgroupParent?: string; securityContext?: { namespaceOptions?: { network?: 'POD' | 'NODE' } } };
}

export interface PodSandboxStatus {
  id: string;
  metadata: PodSandboxMetadata;
  state: 'SANDBOX_READY' | 'SANDBOX_NOTREADY';
  network: { ip: string; additionalIps: Array<{ ip: string }> } | null;
  labels: Record<string, string>;
  annotations: Record<string, string>;
}

export interface PodSandboxStatusResponse {
  status: PodSandboxStatus;
  info: Record<string, string>;
}

export interface RuntimeCondition {
  type: string;
  status: boolean;
  reason: string;
  message: string;
}

export interface CriClient {
  version(): Promise<{ runtimeName: string; runtimeVersion: string; runtimeApiVersion: string }>;
  status(): Promise<RuntimeCondition[]>;
  runPodSandbox(config: PodSandboxConfig, timeoutMs?: number): Promise<string>;
  podSandboxStatus(id: string, verbose?: boolean): Promise<PodSandboxStatusResponse>;
  stopPodSandbox(id: string): Promise<void>;
  removePodSandbox(id: string): Promise<void>;
  listPodSandbox(): Promise<Array<{ id: string; metadata: PodSandboxMetadata; state: string }>>;
  close(): void;
}

type Callback = (err: grpc.ServiceError | null, res: unknown) => void;
type RawClient = grpc.Client & Record<string, (req: unknown, opts: grpc.CallOptions, cb: Callback) => void>;

let definition: grpc.GrpcObject | undefined;

function loadDefinition(): grpc.GrpcObject {
  definition ??= grpc.loadPackageDefinition(
    protoLoader.loadSync(CRI_PROTO, { keepCase: false, longs: String, enums: String, defaults: true, oneofs: true }),
  );
  return definition;
}

/** Connect to a CRI runtime service at a unix socket path. */
export function criClient(socketPath: string, defaultTimeoutMs = 60_000): CriClient {
  const v1 = (loadDefinition().runtime as grpc.GrpcObject).v1 as grpc.GrpcObject;
  const Service = v1.RuntimeService as grpc.ServiceClientConstructor;
  const raw = new Service(`unix://${socketPath}`, grpc.credentials.createInsecure()) as unknown as RawClient;

  const call = <T>(method: string, req: unknown, timeoutMs = defaultTimeoutMs): Promise<T> =>
    new Promise((resolve, reject) => {
      raw[method]!.call(raw, req, { deadline: Date.now() + timeoutMs }, (err, res) => {
        if (err) reject(new Error(`CRI ${method}: ${err.details || err.message}`, { cause: err }));
        else resolve(res as T);
      });
    });

  return {
    version: () => call('Version', { version: 'v1' }),
    status: async () => (await call<{ status: { conditions: RuntimeCondition[] } }>('Status', {})).status.conditions,
    runPodSandbox: async (config, timeoutMs) =>
      (await call<{ podSandboxId: string }>('RunPodSandbox', { config }, timeoutMs)).podSandboxId,
    podSandboxStatus: (id, verbose = false) => call('PodSandboxStatus', { podSandboxId: id, verbose }),
    stopPodSandbox: async (id) => void (await call('StopPodSandbox', { podSandboxId: id })),
    removePodSandbox: async (id) => void (await call('RemovePodSandbox', { podSandboxId: id })),
    listPodSandbox: async () => (await call<{ items: Array<{ id: string; metadata: PodSandboxMetadata; state: string }> }>('ListPodSandbox', {})).items,
    close: () => raw.close(),
  };
}

/**
 * Stop and remove every sandbox, the way kubelet takes pods down, until the runtime has listed
 * none for `quietMs`: a RunPodSandbox still in flight (its caller gone) completes and is listed
 * only later, and must go too.
 */
export async function removeAllSandboxes(cri: CriClient, quietMs = 1_500, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let quietSince = Date.now();
  for (;;) {
    const sandboxes = await cri.listPodSandbox();
    if (sandboxes.length > 0) quietSince = Date.now();
    await Promise.all(sandboxes.map(async (s) => {
      await cri.stopPodSandbox(s.id).catch(() => undefined);
      await cri.removePodSandbox(s.id).catch(() => undefined);
    }));
    if (Date.now() - quietSince >= quietMs || Date.now() > deadline) return;
    await sleep(250);
  }
}
