// A fake kube-apiserver for the e2e tests: HTTPS on 127.0.0.1:<random>, its own CA made with
// /usr/bin/openssl, bearer-token and client-certificate auth, Pod GETs from an in-memory map,
// real apiserver Status objects for errors, and a log of every request.
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer as createNetServer, type Socket } from 'node:net';
import { createServer, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { stringify as yamlStringify } from 'yaml';
import { deepMerge, REPO_ROOT, type JsonObject } from './conflist.ts';
import { netnsName, nsenterArgv, type NetnsRef } from './netns.ts';
import { makeTempDir, registerCleanup, runOk, startDaemon, type Daemon } from './proc.ts';

export const FWD_PY = join(REPO_ROOT, 'test', 'helpers', 'fwd.py');

export const OPENSSL = '/usr/bin/openssl';
const PYTHON = '/usr/bin/python3';

// ---------------------------------------------------------------------------------------
// PKI

export interface Pki {
  dir: string;
  caCert: string;
  caKey: string;
  serverCert: string;
  serverKey: string;
  /** Signed by the CA (CN=system:node:test-node, O=system:nodes): accepted. */
  clientCert: string;
  clientKey: string;
  /** Self-signed, NOT from the CA: rejected with 401. */
  rogueClientCert: string;
  rogueClientKey: string;
  caPem: string;
}

let pkiPromise: Promise<Pki> | undefined;

async function genKey(path: string): Promise<void> {
  await runOk([OPENSSL, 'genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', path]);
}

async function signed(dir: string, name: string, subj: string, ext: string, caCert: string, caKey: string): Promise<void> {
  const key = join(dir, `${name}.key`);
  const csr = join(dir, `${name}.csr`);
  const extFile = join(dir, `${name}.ext`);
  await genKey(key);
  writeFileSync(extFile, ext);
  await runOk([OPENSSL, 'req', '-new', '-key', key, '-subj', subj, '-out', csr]);
  await runOk([
    OPENSSL, 'x509', '-req', '-in', csr, '-CA', caCert, '-CAkey', caKey,
    '-set_serial', `0x${randomBytes(8).toString('hex')}`, '-days', '2', '-sha256',
    '-extfile', extFile, '-out', join(dir, `${name}.crt`),
  ]);
}

/** CA, server cert (SAN IP:127.0.0.1, DNS:localhost), client cert, rogue client cert. Once per process. */
export function makePki(): Promise<Pki> {
  pkiPromise ??= (async () => {
    const dir = makeTempDir('icni-pki-');
    const caCert = join(dir, 'ca.crt');
    const caKey = join(dir, 'ca.key');
    await genKey(caKey);
    await runOk([
      OPENSSL, 'req', '-x509', '-new', '-key', caKey, '-sha256', '-days', '2',
      '-subj', '/CN=icni-test-kubernetes-ca',
      '-addext', 'basicConstraints=critical,CA:TRUE',
      '-addext', 'keyUsage=critical,keyCertSign,cRLSign,digitalSignature',
      '-out', caCert,
    ]);
    await signed(
      dir, 'server', '/CN=kube-apiserver',
      'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n' +
        'extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n',
      caCert, caKey,
    );
    await signed(
      dir, 'client', '/O=system:nodes/CN=system:node:test-node',
      'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n',
      caCert, caKey,
    );
    const rogueKey = join(dir, 'rogue-client.key');
    await genKey(rogueKey);
    await runOk([
      OPENSSL, 'req', '-x509', '-new', '-key', rogueKey, '-sha256', '-days', '2',
      '-subj', '/O=system:masters/CN=rogue', '-addext', 'extendedKeyUsage=clientAuth',
      '-out', join(dir, 'rogue-client.crt'),
    ]);
    return {
      dir,
      caCert,
      caKey,
      serverCert: join(dir, 'server.crt'),
      serverKey: join(dir, 'server.key'),
      clientCert: join(dir, 'client.crt'),
      clientKey: join(dir, 'client.key'),
      rogueClientCert: join(dir, 'rogue-client.crt'),
      rogueClientKey: join(dir, 'rogue-client.key'),
      caPem: readFileSync(caCert, 'utf8'),
    };
  })();
  pkiPromise.catch(() => {
    pkiPromise = undefined;
  });
  return pkiPromise;
}

// ---------------------------------------------------------------------------------------
// Kubernetes objects

export type Pod = JsonObject & {
  apiVersion: 'v1';
  kind: 'Pod';
  metadata: JsonObject & { name: string; namespace: string; uid: string };
  spec: JsonObject;
  status: JsonObject;
};

export function statusObject(code: number, reason: string, message: string, details?: JsonObject): JsonObject {
  const s: JsonObject = { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason };
  if (details) s.details = details;
  s.code = code;
  return s;
}

let resourceVersion = 1000;

function baseMetadata(name: string, ns: string): Pod['metadata'] {
  resourceVersion += 1;
  return {
    name,
    namespace: ns,
    uid: randomUUID(),
    resourceVersion: String(resourceVersion),
    creationTimestamp: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
  };
}

function pendingStatus(): JsonObject {
  const now = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
  // What the apiserver has while the CNI ADD runs: scheduled, sandbox being created, no podIP yet.
  return {
    phase: 'Pending',
    conditions: [
      { type: 'PodReadyToStartContainers', status: 'False', lastProbeTime: null, lastTransitionTime: now },
      { type: 'Initialized', status: 'False', lastProbeTime: null, lastTransitionTime: now, reason: 'ContainersNotInitialized', message: 'containers with incomplete status: [istio-validation]' },
      { type: 'PodScheduled', status: 'True', lastProbeTime: null, lastTransitionTime: now },
    ],
    qosClass: 'Burstable',
    startTime: now,
  };
}

function appContainer(): JsonObject {
  return {
    name: 'app',
    image: 'docker.io/library/nginx:1.25',
    imagePullPolicy: 'IfNotPresent',
    ports: [{ containerPort: 8080, name: 'http', protocol: 'TCP' }],
    resources: { requests: { cpu: '50m', memory: '64Mi' } },
    terminationMessagePath: '/dev/termination-log',
    terminationMessagePolicy: 'File',
    volumeMounts: [{ name: 'kube-api-access-abcde', mountPath: '/var/run/secrets/kubernetes.io/serviceaccount', readOnly: true }],
  };
}

const ISTIO_PROXY_IMAGE = 'docker.io/istio/proxyv2:1.22.3';
const ISTIO_SECURITY_CONTEXT = {
  allowPrivilegeEscalation: false,
  capabilities: { drop: ['ALL'] },
  privileged: false,
  readOnlyRootFilesystem: true,
  runAsGroup: 1337,
  runAsNonRoot: true,
  runAsUser: 1337,
};

export const SIDECAR_STATUS = {
  initContainers: ['istio-validation'],
  containers: ['istio-proxy'],
  volumes: ['workload-socket', 'credential-socket', 'workload-certs', 'istio-envoy', 'istio-data', 'istio-podinfo', 'istio-token', 'istiod-ca-cert'],
  imagePullSecrets: null,
  revision: 'default',
};

function fieldRef(path: string): JsonObject {
  return { valueFrom: { fieldRef: { apiVersion: 'v1', fieldPath: path } } };
}

/**
 * A Pod as Istio's sidecar injector (CNI mode: istio-validation instead of istio-init) leaves
 * it, as read by the CNI plugin during ADD (phase Pending, no podIP). `overrides` is
 * deep-merged into the whole object (objects merge, arrays replace, null deletes), e.g.
 * `{metadata: {annotations: {'traffic.sidecar.istio.io/excludeOutboundPorts': '9000'}}}`.
 */
export function injectedPod(name: string, ns: string, overrides: JsonObject = {}): Pod {
  const pod = {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      ...baseMetadata(name, ns),
      labels: {
        app: name,
        'security.istio.io/tlsMode': 'istio',
        'service.istio.io/canonical-name': name,
        'service.istio.io/canonical-revision': 'latest',
      },
      annotations: {
        'istio.io/rev': 'default',
        'kubectl.kubernetes.io/default-container': 'app',
        'kubectl.kubernetes.io/default-logs-container': 'app',
        'prometheus.io/path': '/stats/prometheus',
        'prometheus.io/port': '15020',
        'prometheus.io/scrape': 'true',
        'sidecar.istio.io/status': JSON.stringify(SIDECAR_STATUS),
      },
    },
    spec: {
      containers: [
        appContainer(),
        {
          name: 'istio-proxy',
          image: ISTIO_PROXY_IMAGE,
          imagePullPolicy: 'IfNotPresent',
          args: [
            'proxy', 'sidecar', '--domain', '$(POD_NAMESPACE).svc.cluster.local',
            '--proxyLogLevel=warning', '--proxyComponentLogLevel=misc:error', '--log_output_level=default:info',
          ],
          env: [
            { name: 'PILOT_CERT_PROVIDER', value: 'istiod' },
            { name: 'CA_ADDR', value: 'istiod.istio-system.svc:15012' },
            { name: 'POD_NAME', ...fieldRef('metadata.name') },
            { name: 'POD_NAMESPACE', ...fieldRef('metadata.namespace') },
            { name: 'INSTANCE_IP', ...fieldRef('status.podIP') },
            { name: 'SERVICE_ACCOUNT', ...fieldRef('spec.serviceAccountName') },
            { name: 'HOST_IP', ...fieldRef('status.hostIP') },
            { name: 'ISTIO_CPU_LIMIT', valueFrom: { resourceFieldRef: { divisor: '0', resource: 'limits.cpu' } } },
            { name: 'PROXY_CONFIG', value: '{}\n' },
            { name: 'ISTIO_META_POD_PORTS', value: '[\n    {"name":"http","containerPort":8080,"protocol":"TCP"}\n]' },
            { name: 'ISTIO_META_APP_CONTAINERS', value: 'app' },
            { name: 'GOMEMLIMIT', valueFrom: { resourceFieldRef: { divisor: '0', resource: 'limits.memory' } } },
            { name: 'GOMAXPROCS', valueFrom: { resourceFieldRef: { divisor: '0', resource: 'limits.cpu' } } },
            { name: 'ISTIO_META_CLUSTER_ID', value: 'Kubernetes' },
            { name: 'ISTIO_META_NODE_NAME', ...fieldRef('spec.nodeName') },
            { name: 'ISTIO_META_INTERCEPTION_MODE', value: 'REDIRECT' },
            { name: 'ISTIO_META_WORKLOAD_NAME', value: name },
            { name: 'ISTIO_META_OWNER', value: `kubernetes://apis/v1/namespaces/${ns}/pods/${name}` },
            { name: 'ISTIO_META_MESH_ID', value: 'cluster.local' },
            { name: 'TRUST_DOMAIN', value: 'cluster.local' },
          ],
          ports: [{ containerPort: 15090, name: 'http-envoy-prom', protocol: 'TCP' }],
          readinessProbe: {
            failureThreshold: 4,
            httpGet: { path: '/healthz/ready', port: 15021, scheme: 'HTTP' },
            periodSeconds: 15,
            successThreshold: 1,
            timeoutSeconds: 3,
          },
          resources: { limits: { cpu: '2', memory: '1Gi' }, requests: { cpu: '100m', memory: '128Mi' } },
          securityContext: ISTIO_SECURITY_CONTEXT,
          terminationMessagePath: '/dev/termination-log',
          terminationMessagePolicy: 'File',
          volumeMounts: [
            { mountPath: '/var/run/secrets/workload-spiffe-uds', name: 'workload-socket' },
            { mountPath: '/var/run/secrets/credential-uds', name: 'credential-socket' },
            { mountPath: '/var/run/secrets/workload-spiffe-credentials', name: 'workload-certs' },
            { mountPath: '/var/run/secrets/istio', name: 'istiod-ca-cert' },
            { mountPath: '/var/lib/istio/data', name: 'istio-data' },
            { mountPath: '/etc/istio/proxy', name: 'istio-envoy' },
            { mountPath: '/var/run/secrets/tokens', name: 'istio-token' },
            { mountPath: '/etc/istio/pod', name: 'istio-podinfo' },
          ],
        },
      ],
      initContainers: [
        {
          name: 'istio-validation',
          image: ISTIO_PROXY_IMAGE,
          imagePullPolicy: 'IfNotPresent',
          args: [
            'istio-iptables', '-p', '15001', '-z', '15006', '-u', '1337', '-m', 'REDIRECT', '-i', '*', '-x', '',
            '-b', '*', '-d', '15090,15021,15020', '--log_output_level=default:info', '--run-validation', '--skip-rule-apply',
          ],
          resources: { limits: { cpu: '2', memory: '1Gi' }, requests: { cpu: '100m', memory: '128Mi' } },
          securityContext: ISTIO_SECURITY_CONTEXT,
          terminationMessagePath: '/dev/termination-log',
          terminationMessagePolicy: 'File',
        },
      ],
      dnsPolicy: 'ClusterFirst',
      enableServiceLinks: true,
      nodeName: 'test-node',
      preemptionPolicy: 'PreemptLowerPriority',
      priority: 0,
      restartPolicy: 'Always',
      schedulerName: 'default-scheduler',
      securityContext: {},
      serviceAccount: 'default',
      serviceAccountName: 'default',
      terminationGracePeriodSeconds: 30,
      volumes: [
        { name: 'workload-socket', emptyDir: {} },
        { name: 'credential-socket', emptyDir: {} },
        { name: 'workload-certs', emptyDir: {} },
        { name: 'istio-envoy', emptyDir: { medium: 'Memory' } },
        { name: 'istio-data', emptyDir: {} },
        {
          name: 'istio-podinfo',
          downwardAPI: {
            defaultMode: 420,
            items: [
              { fieldRef: { apiVersion: 'v1', fieldPath: 'metadata.labels' }, path: 'labels' },
              { fieldRef: { apiVersion: 'v1', fieldPath: 'metadata.annotations' }, path: 'annotations' },
            ],
          },
        },
        {
          name: 'istio-token',
          projected: { defaultMode: 420, sources: [{ serviceAccountToken: { audience: 'istio-ca', expirationSeconds: 43200, path: 'istio-token' } }] },
        },
        { name: 'istiod-ca-cert', configMap: { defaultMode: 420, name: 'istio-ca-root-cert' } },
        { name: 'kube-api-access-abcde', projected: { defaultMode: 420, sources: [{ serviceAccountToken: { expirationSeconds: 3607, path: 'token' } }] } },
      ],
    },
    status: pendingStatus(),
  } as Pod;
  return deepMerge(pod, overrides);
}

/** A Pod with no sidecar (no Istio annotations/labels/containers). Same override rules as injectedPod. */
export function plainPod(name: string, ns: string, overrides: JsonObject = {}): Pod {
  const pod = {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { ...baseMetadata(name, ns), labels: { app: name } },
    spec: {
      containers: [appContainer()],
      dnsPolicy: 'ClusterFirst',
      enableServiceLinks: true,
      nodeName: 'test-node',
      restartPolicy: 'Always',
      schedulerName: 'default-scheduler',
      securityContext: {},
      serviceAccount: 'default',
      serviceAccountName: 'default',
      terminationGracePeriodSeconds: 30,
      volumes: [{ name: 'kube-api-access-abcde', projected: { defaultMode: 420, sources: [{ serviceAccountToken: { expirationSeconds: 3607, path: 'token' } }] } }],
    },
    status: { ...pendingStatus(), conditions: [{ type: 'PodScheduled', status: 'True', lastProbeTime: null, lastTransitionTime: new Date().toISOString().replace(/\.\d+Z$/, 'Z') }] },
  } as Pod;
  return deepMerge(pod, overrides);
}

// ---------------------------------------------------------------------------------------
// Server

export type AuthMethod = 'token' | 'clientCert' | 'badToken' | 'badClientCert' | 'none';

export interface RecordedRequest {
  method: string;
  /** Path without the query string. */
  path: string;
  query: string;
  /** How the request authenticated (or tried to). */
  auth: AuthMethod;
  /** The client certificate's subject CN when one was presented. */
  clientCN?: string;
  userAgent?: string;
  accept?: string;
  status: number;
  at: number;
}

export interface FakeKubeApiBehavior {
  /** Wait this long before answering any request. */
  delayMs?: number;
  /** Answer pod GETs with this status code (and a matching Status object) instead of the pod. */
  podStatus?: number;
  /** Never answer (the connection stays open until the client gives up or close()). */
  hang?: boolean;
  /** A fault for every request (every connection, for `reset`), on any path, while faultTimes lasts. */
  fault?: Fault;
  /** How many requests (connections, for `reset`) still get `fault`; unset: all of them. */
  faultTimes?: number;
}

/**
 * What the fake apiserver can do wrong. `reset` is a TCP RST as the client's TLS hello arrives (a real
 * RST only on the TCP listener; through exposeIn's forwarder it reads as a closed connection).
 */
export type Fault =
  | { kind: 'delay'; ms: number }
  | { kind: 'hang' }
  | { kind: 'drop' }
  | { kind: 'reset' }
  | { kind: 'status'; status: number; retryAfter?: string };

/** The certificate the server presents: its own CA's (SAN 127.0.0.1, localhost), the same CA's for
 * DNS:kubernetes.default.svc only (for tls-server-name), or one from a CA the kubeconfig does not know. */
export type ServerCertificate = 'own' | 'named' | 'foreign';

export interface FakeKubeApi {
  /** https://127.0.0.1:<port> */
  url: string;
  port: number;
  pki: Pki;
  /** The valid bearer token; also in tokenFile. */
  token: string;
  tokenFile: string;
  /** Temp dir holding the token file (and kubeconfigs written without a dir). */
  dir: string;
  /** Every request, in order. */
  requests: RecordedRequest[];
  /** Connections accepted (TCP and Unix socket), including ones reset before any request. */
  readonly connections: number;
  /** Switch the certificate the server presents from the next connection on. */
  presentCertificate(which: ServerCertificate): Promise<void>;
  pods: Map<string, Pod>;
  behavior: FakeKubeApiBehavior;
  setPod(pod: Pod): void;
  deletePod(ns: string, name: string): void;
  /** Requests whose path is the pod GET for ns/name (any pod when omitted). */
  podRequests(ns?: string, name?: string): RecordedRequest[];
  clearRequests(): void;
  writeKubeconfig(dir: string | undefined, opts: KubeconfigOptions): string;
  /**
   * Make the server reachable at the same https://127.0.0.1:<port> from inside a netns (the
   * plugin runs in the test's node netns, where the machine's 127.0.0.1 is not reachable): a
   * forwarder (test/helpers/fwd.py) listens there and pipes connections to the server's Unix
   * socket. TLS and client certs pass through. Idempotent per netns.
   */
  exposeIn(ns: NetnsRef): Promise<void>;
  /** Unix socket the server also accepts connections on. */
  socketPath: string;
  close(): Promise<void>;
  /** Serve more of the API (e.g. servePodWatch in kube-watch.ts); routes run in order after authentication. */
  addRoute(route: FakeKubeApiRoute): void;
}

/**
 * An extra handler for authenticated requests, tried before the built-in ones: returns true when
 * it answers the request (and then sets record.status to the HTTP status it sent).
 */
export type FakeKubeApiRoute = (call: { req: IncomingMessage; res: ServerResponse; url: URL; record: RecordedRequest }) => boolean;

export interface FakeKubeApiOptions {
  token?: string;
  pods?: Pod[];
}

const POD_PATH = /^\/api\/v1\/namespaces\/([^/]+)\/pods\/([^/]+)$/;

function podKey(ns: string, name: string): string {
  return `${ns}/${name}`;
}

export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const data = JSON.stringify(body);
  res.writeHead(status, {
    'Content-Type': 'application/json',
    'Content-Length': Buffer.byteLength(data),
    'Cache-Control': 'no-cache, private',
    'Audit-Id': randomUUID(),
  });
  res.end(data);
}

const STATUS_REASONS: Record<number, string> = {
  400: 'BadRequest',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'NotFound',
  429: 'TooManyRequests',
  500: 'InternalError',
  503: 'ServiceUnavailable',
  504: 'Timeout',
};

function replyStatus(reply: (status: number, body: unknown) => void, status: number): void {
  reply(status, statusObject(status, STATUS_REASONS[status] ?? 'InternalError', `fake apiserver forced status ${status}`));
}

let extraCertsPromise: Promise<{ named: { key: string; cert: string }; foreign: { key: string; cert: string } }> | undefined;

/** The server certificates besides the default one, made on first use (EC keys: quick). */
async function serverCertificate(pki: Pki, which: ServerCertificate): Promise<{ key: string; cert: string }> {
  if (which === 'own') return { key: pki.serverKey, cert: pki.serverCert };
  extraCertsPromise ??= (async () => {
    const dir = join(pki.dir, 'extra');
    mkdirSync(dir, { recursive: true });
    const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
    const serverExt = 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n';
    const leaf = async (name: string, san: string, caCert: string, caKey: string) => {
      const key = join(dir, `${name}.key`);
      const csr = join(dir, `${name}.csr`);
      const ext = join(dir, `${name}.ext`);
      const cert = join(dir, `${name}.crt`);
      writeFileSync(ext, `${serverExt}subjectAltName=${san}\n`);
      await runOk([OPENSSL, 'req', '-new', ...ec, '-keyout', key, '-subj', '/CN=kube-apiserver', '-out', csr]);
      await runOk([OPENSSL, 'x509', '-req', '-in', csr, '-CA', caCert, '-CAkey', caKey, '-set_serial', `0x${randomBytes(8).toString('hex')}`, '-days', '2', '-sha256', '-extfile', ext, '-out', cert]);
      return { key, cert };
    };
    const foreignCaKey = join(dir, 'foreign-ca.key');
    const foreignCa = join(dir, 'foreign-ca.crt');
    await runOk([
      OPENSSL, 'req', '-x509', ...ec, '-keyout', foreignCaKey, '-sha256', '-days', '2', '-subj', '/CN=some-other-ca',
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign,digitalSignature', '-out', foreignCa,
    ]);
    return {
      named: await leaf('named', 'DNS:kubernetes.default.svc', pki.caCert, pki.caKey),
      foreign: await leaf('foreign', 'IP:127.0.0.1,DNS:localhost', foreignCa, foreignCaKey),
    };
  })();
  return (await extraCertsPromise)[which];
}

export async function startFakeKubeApi(opts: FakeKubeApiOptions = {}): Promise<FakeKubeApi> {
  const pki = await makePki();
  const dir = makeTempDir('icni-kube-');
  const token = opts.token ?? `icni-${randomBytes(16).toString('hex')}`;
  const tokenFile = join(dir, 'token');
  writeFileSync(tokenFile, token);
  const requests: RecordedRequest[] = [];
  const pods = new Map<string, Pod>();
  for (const p of opts.pods ?? []) pods.set(podKey(p.metadata.namespace, p.metadata.name), p);
  const behavior: FakeKubeApiBehavior = {};
  const routes: FakeKubeApiRoute[] = [];

  const authenticate = (req: IncomingMessage): { auth: AuthMethod; ok: boolean; clientCN?: string } => {
    const sock = req.socket as TLSSocket;
    const peer = sock.getPeerCertificate?.();
    const hasCert = peer !== undefined && peer !== null && Object.keys(peer).length > 0;
    const cn = hasCert ? String((peer.subject as unknown as Record<string, unknown> | undefined)?.CN ?? '') : undefined;
    const withCN = <T extends object>(o: T) => (cn !== undefined ? { ...o, clientCN: cn } : o);
    if (hasCert && sock.authorized) return withCN({ auth: 'clientCert' as const, ok: true });
    const authz = req.headers.authorization;
    if (authz !== undefined) {
      const m = /^Bearer\s+(.+)$/i.exec(authz);
      if (m && m[1]!.trim() === token) return withCN({ auth: 'token' as const, ok: true });
      return withCN({ auth: 'badToken' as const, ok: false });
    }
    if (hasCert) return withCN({ auth: 'badClientCert' as const, ok: false });
    return { auth: 'none', ok: false };
  };

  const takeFault = (): Fault | undefined => {
    if (behavior.fault === undefined) return undefined;
    if (behavior.faultTimes !== undefined) {
      if (behavior.faultTimes <= 0) return undefined;
      behavior.faultTimes -= 1;
    }
    return behavior.fault;
  };

  /** Logged on arrival, before any fault or delay, so that a request never answered is still counted. */
  const record = (req: IncomingMessage): { rec: RecordedRequest; ok: boolean } => {
    const url = new URL(req.url ?? '/', 'https://127.0.0.1');
    const a = authenticate(req);
    const rec: RecordedRequest = {
      method: req.method ?? 'GET',
      path: url.pathname,
      query: url.search,
      auth: a.auth,
      status: 0,
      at: Date.now(),
    };
    if (a.clientCN !== undefined) rec.clientCN = a.clientCN;
    if (req.headers['user-agent'] !== undefined) rec.userAgent = req.headers['user-agent'];
    if (req.headers.accept !== undefined) rec.accept = req.headers.accept;
    requests.push(rec);
    return { rec, ok: a.ok };
  };

  const handle = (req: IncomingMessage, res: ServerResponse, rec: RecordedRequest, ok: boolean, fault: Fault | undefined): void => {
    const url = new URL(req.url ?? '/', 'https://127.0.0.1');
    const reply = (status: number, body: unknown) => {
      rec.status = status;
      sendJson(res, status, body);
    };

    if (fault?.kind === 'drop') {
      req.socket.destroy();
      return;
    }
    if (fault?.kind === 'status') {
      if (fault.retryAfter !== undefined) res.setHeader('Retry-After', fault.retryAfter);
      return replyStatus(reply, fault.status);
    }
    if (!ok) return reply(401, statusObject(401, 'Unauthorized', 'Unauthorized'));
    if (routes.some((route) => route({ req, res, url, record: rec }))) return;
    const m = POD_PATH.exec(url.pathname);
    if (m) {
      const ns = decodeURIComponent(m[1]!);
      const name = decodeURIComponent(m[2]!);
      if (req.method !== 'GET') {
        return reply(405, statusObject(405, 'MethodNotAllowed', `the server does not allow this method on the requested resource`));
      }
      if (behavior.podStatus !== undefined) return replyStatus(reply, behavior.podStatus);
      const pod = pods.get(podKey(ns, name));
      if (!pod) return reply(404, statusObject(404, 'NotFound', `pods "${name}" not found`, { name, kind: 'pods' }));
      return reply(200, pod);
    }
    if (url.pathname === '/version') {
      return reply(200, { major: '1', minor: '29', gitVersion: 'v1.29.0', goVersion: 'go1.21.5', platform: 'linux/amd64' });
    }
    if (url.pathname === '/api') {
      return reply(200, { kind: 'APIVersions', versions: ['v1'], serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress: '127.0.0.1:6443' }] });
    }
    return reply(404, statusObject(404, 'NotFound', 'the server could not find the requested resource', {}));
  };

  const server: Server = createServer(
    {
      key: readFileSync(pki.serverKey),
      cert: readFileSync(pki.serverCert),
      ca: pki.caPem,
      requestCert: true,
      rejectUnauthorized: false,
    },
    (req, res) => {
      const { rec, ok } = record(req);
      const fault = behavior.fault?.kind === 'reset' ? undefined : takeFault();
      if (behavior.hang || fault?.kind === 'hang') return;
      const delayMs = fault?.kind === 'delay' ? fault.ms : behavior.delayMs;
      if (delayMs) setTimeout(() => handle(req, res, rec, ok, fault), delayMs);
      else handle(req, res, rec, ok, fault);
    },
  );
  let connections = 0;
  const resetIfAsked = (sock: Socket): boolean => {
    connections += 1;
    if (behavior.fault?.kind !== 'reset' || takeFault() === undefined) return false;
    if (sock.remoteAddress !== undefined) sock.resetAndDestroy();
    else sock.destroy();
    return true;
  };
  // Ahead of the TLS layer's own listener, so the reset happens before any handshake.
  server.prependListener('connection', (sock: Socket) => {
    resetIfAsked(sock);
  });
  server.on('tlsClientError', () => {});
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const url = `https://127.0.0.1:${port}`;

  // The same TLS server behind a Unix socket, for the per-netns forwarders.
  const socketPath = join(dir, 'apiserver.sock');
  const rawSockets = new Set<Socket>();
  const unixServer = createNetServer((sock) => {
    rawSockets.add(sock);
    sock.once('close', () => rawSockets.delete(sock));
    server.emit('connection', sock);
  });
  await new Promise<void>((resolve, reject) => {
    unixServer.once('error', reject);
    unixServer.listen(socketPath, () => resolve());
  });
  const forwarders = new Map<string, Promise<Daemon>>();

  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    for (const f of forwarders.values()) await (await f.catch(() => undefined))?.stop();
    for (const s of rawSockets) s.destroy();
    server.closeAllConnections();
    await Promise.all([
      new Promise<void>((resolve) => server.close(() => resolve())),
      new Promise<void>((resolve) => unixServer.close(() => resolve())),
    ]);
  };
  const unregister = registerCleanup(`fake kube-apiserver ${url}`, () => {
    for (const s of rawSockets) s.destroy();
    server.closeAllConnections();
    server.close();
    unixServer.close();
  }, close);

  const api: FakeKubeApi = {
    url,
    port,
    pki,
    token,
    tokenFile,
    dir,
    requests,
    get connections() {
      return connections;
    },
    async presentCertificate(which) {
      const { key, cert } = await serverCertificate(pki, which);
      server.setSecureContext({ key: readFileSync(key), cert: readFileSync(cert), ca: pki.caPem });
    },
    pods,
    behavior,
    setPod(pod) {
      pods.set(podKey(pod.metadata.namespace, pod.metadata.name), pod);
    },
    deletePod(ns, name) {
      pods.delete(podKey(ns, name));
    },
    podRequests(ns, name) {
      return requests.filter((r) => {
        const m = POD_PATH.exec(r.path);
        if (!m) return false;
        return (ns === undefined || m[1] === ns) && (name === undefined || m[2] === name);
      });
    },
    clearRequests() {
      requests.length = 0;
    },
    writeKubeconfig(kdir, kopts) {
      return writeKubeconfig(api, kdir ?? dir, kopts);
    },
    exposeIn(ns) {
      const name = netnsName(ns);
      let f = forwarders.get(name);
      if (!f) {
        f = startDaemon(nsenterArgv(ns, [PYTHON, '-c', readFileSync(FWD_PY, 'utf8'), '127.0.0.1', String(port), socketPath]), {
          ready: /^LISTENING /m,
          label: `apiserver forwarder in ${name}`,
        });
        forwarders.set(name, f);
        f.catch(() => forwarders.delete(name));
      }
      return f.then(() => undefined);
    },
    socketPath,
    close: () => unregister(),
    addRoute(route) {
      routes.push(route);
    },
  };
  return api;
}

// ---------------------------------------------------------------------------------------
// kubeconfig

export interface KubeconfigOptions {
  /** token: inline `token`; tokenFile: `tokenFile` path; clientCert: client-certificate/-key; none: no credentials. */
  auth: 'token' | 'tokenFile' | 'clientCert' | 'none';
  /** file: certificate-authority path; data: certificate-authority-data; insecure: insecure-skip-tls-verify. */
  caMode: 'file' | 'data' | 'insecure';
  /** Client cert as files (client-certificate/client-key) or inline -data (default data). */
  clientCertMode?: 'file' | 'data';
  /** Use the rogue (not CA-signed) client cert, or a wrong token. */
  badCredentials?: boolean;
  /** Override the server URL (e.g. a closed port). */
  server?: string;
  /** File name inside dir (default `kubeconfig-<n>`). */
  fileName?: string;
  /** Put a non-current decoy context/cluster/user first (pointing at https://127.0.0.1:1). */
  decoyContext?: boolean;
  /** cluster.tls-server-name */
  tlsServerName?: string;
  /** Merged into the user entry (e.g. an `exec` or `auth-provider` credential plugin). */
  user?: JsonObject;
}

let kubeconfigCounter = 0;

/** Write a real kubeconfig YAML for the fake apiserver; returns its path. */
export function writeKubeconfig(api: FakeKubeApi, dir: string, opts: KubeconfigOptions): string {
  mkdirSync(dir, { recursive: true });
  const cluster: JsonObject = { server: opts.server ?? api.url };
  if (opts.caMode === 'file') cluster['certificate-authority'] = api.pki.caCert;
  else if (opts.caMode === 'data') cluster['certificate-authority-data'] = Buffer.from(api.pki.caPem).toString('base64');
  else cluster['insecure-skip-tls-verify'] = true;
  if (opts.tlsServerName !== undefined) cluster['tls-server-name'] = opts.tlsServerName;

  const user: JsonObject = { ...opts.user };
  const bad = opts.badCredentials ?? false;
  if (opts.auth === 'token') user.token = bad ? 'wrong-token' : api.token;
  else if (opts.auth === 'tokenFile') {
    if (bad) {
      const f = join(dir, `bad-token-${++kubeconfigCounter}`);
      writeFileSync(f, 'wrong-token');
      user.tokenFile = f;
    } else user.tokenFile = api.tokenFile;
  } else if (opts.auth === 'clientCert') {
    const cert = bad ? api.pki.rogueClientCert : api.pki.clientCert;
    const key = bad ? api.pki.rogueClientKey : api.pki.clientKey;
    if ((opts.clientCertMode ?? 'data') === 'file') {
      user['client-certificate'] = cert;
      user['client-key'] = key;
    } else {
      user['client-certificate-data'] = readFileSync(cert).toString('base64');
      user['client-key-data'] = readFileSync(key).toString('base64');
    }
  }

  const clusters: JsonObject[] = [];
  const users: JsonObject[] = [];
  const contexts: JsonObject[] = [];
  if (opts.decoyContext) {
    clusters.push({ name: 'decoy', cluster: { server: 'https://127.0.0.1:1', 'insecure-skip-tls-verify': true } });
    users.push({ name: 'decoy', user: { token: 'decoy-token' } });
    contexts.push({ name: 'decoy', context: { cluster: 'decoy', user: 'decoy' } });
  }
  clusters.push({ name: 'local', cluster });
  users.push({ name: 'istio-cni', user });
  contexts.push({ name: 'istio-cni-context', context: { cluster: 'local', user: 'istio-cni' } });
  const doc = {
    apiVersion: 'v1',
    kind: 'Config',
    clusters,
    contexts,
    'current-context': 'istio-cni-context',
    preferences: {},
    users,
  };
  const path = join(dir, opts.fileName ?? `kubeconfig-${++kubeconfigCounter}`);
  writeFileSync(path, yamlStringify(doc), { mode: 0o600 });
  return path;
}
