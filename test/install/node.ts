// A fake node for the installer tests: the host's net.d and CNI bin dir and the container's
// service-account volume, in temp dirs, and the built installer running against them.
import { mkdirSync, readFileSync, renameSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as h from '../harness/index.ts';

export const FIXTURES = join(h.REPO_ROOT, 'test', 'fixtures', 'netconf');
export const CALICO = readFileSync(join(FIXTURES, '10-calico.conflist'), 'utf8');
export const BRIDGE = readFileSync(join(FIXTURES, '10-bridge.conf'), 'utf8');
/** The host path of net.d as written into our entry; the installer itself sees `netDir`. */
export const HOST_NET_DIR = '/etc/cni/net.d';
export const KUBECONFIG_NAME = 'ZZZ-istio-cni-kubeconfig';

export interface FakeNode {
  root: string;
  netDir: string;
  binDir: string;
  saDir: string;
  /** The installer's environment, as the DaemonSet gives it. */
  env: NodeJS.ProcessEnv;
  /** Puts a new token (and CA) in place the way kubelet updates a projected volume: one symlink swap. */
  rotateToken(token: string, ca?: string): void;
}

let generation = 0;

export function makeFakeNode(opts: { token?: string; ca?: string; apiHost?: string; apiPort?: number; env?: NodeJS.ProcessEnv } = {}): FakeNode {
  const root = h.makeTempDir('icni-node-');
  const netDir = join(root, 'host', 'etc', 'cni', 'net.d');
  const binDir = join(root, 'host', 'opt', 'cni', 'bin');
  const saDir = join(root, 'serviceaccount');
  for (const d of [netDir, binDir, saDir]) mkdirSync(d, { recursive: true });

  let ca = opts.ca ?? '-----BEGIN CERTIFICATE-----\nfake-ca\n-----END CERTIFICATE-----\n';
  const rotateToken = (token: string, newCa?: string) => {
    if (newCa !== undefined) ca = newCa;
    const data = join(saDir, `..${Date.now()}_${++generation}`);
    mkdirSync(data);
    writeFileSync(join(data, 'token'), token);
    writeFileSync(join(data, 'ca.crt'), ca);
    writeFileSync(join(data, 'namespace'), 'kube-system');
    symlinkSync(data.slice(saDir.length + 1), join(saDir, '..data_tmp'));
    renameSync(join(saDir, '..data_tmp'), join(saDir, '..data'));
  };
  rotateToken(opts.token ?? 'token-1');
  for (const f of ['token', 'ca.crt', 'namespace']) symlinkSync(`..data/${f}`, join(saDir, f));

  const env = h.minimalEnv({
    CNI_NET_DIR: HOST_NET_DIR,
    MOUNTED_CNI_NET_DIR: netDir,
    MOUNTED_CNI_BIN_DIRS: binDir,
    SERVICE_ACCOUNT_PATH: saDir,
    KUBERNETES_SERVICE_HOST: opts.apiHost ?? '10.96.0.1',
    KUBERNETES_SERVICE_PORT: String(opts.apiPort ?? 443),
    // Metrics on any free port: installers of concurrent tests (and a cluster's DaemonSet on this host's network) never fight over 15014.
    MONITORING_PORT: '0',
    // The probes' HTTP server on any free port (the log says which): tests run side by side.
    HTTP_ADDRESS: '127.0.0.1',
    HTTP_PORT: '0',
    ...opts.env,
  });
  return { root, netDir, binDir, saDir, env, rotateToken };
}

export function startInstaller(node: FakeNode, bin = h.DEFAULT_ISTIO_CNI_BIN): Promise<h.Daemon> {
  return h.startDaemon([bin, 'install'], { ready: /"msg":"watching for changes"/, label: 'istio-cni install', env: node.env, timeoutMs: 10_000 });
}

/** Sends the signal and resolves with the exit code. */
export async function stopInstaller(d: h.Daemon, signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
  d.child.kill(signal);
  return d.exited;
}

/** Polls until `check` returns true; resolves with the time it took, rejects after `timeoutMs`. */
export async function waitFor(what: string, check: () => boolean, timeoutMs = 3000): Promise<number> {
  const start = performance.now();
  for (;;) {
    let ok = false;
    try {
      ok = check();
    } catch {
      ok = false;
    }
    if (ok) return performance.now() - start;
    if (performance.now() - start > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await h.sleep(10);
  }
}

export type Conflist = { name: string; cniVersion?: string; plugins: Array<Record<string, unknown>> };

export function readConflist(path: string): Conflist {
  return JSON.parse(readFileSync(path, 'utf8')) as Conflist;
}

export const types = (list: Conflist) => list.plugins.map((p) => p.type);

/** Our entry last and nowhere else in the list. */
export function entryIsLast(path: string): boolean {
  const t = types(readConflist(path));
  return t.at(-1) === 'istio-cni' && t.indexOf('istio-cni') === t.length - 1;
}
