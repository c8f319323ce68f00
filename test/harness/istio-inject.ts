// Pods as Istio's injector makes them, offline: `istioctl kube-inject` (built from cluster/istio)
// with the injection template, values and mesh config that `istioctl manifest generate` renders
// from our overrides (cluster/inject/overrides.yaml: CNI mode, the stand-in proxy image). Nothing
// of Istio's text is kept in the repository; it is generated into the cluster's work dir.
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { kitBins, kubectl, paths, publishMeshRootCert } from './cluster.ts';
import { REPO_ROOT } from './conflist.ts';
import { minimalEnv, runOk } from './proc.ts';

export const INJECT_OVERRIDES = join(REPO_ROOT, 'cluster', 'inject', 'overrides.yaml');

export interface InjectFiles {
  istioctl: string;
  injectConfig: string;
  values: string;
  mesh: string;
}

interface ConfigMap {
  kind: string;
  metadata: { name: string };
  data?: Record<string, string>;
}

const env = () => minimalEnv({ HOME: paths.work });

/** The inject config, values and mesh config rendered by istioctl from our overrides (once per cluster). */
export async function injectFiles(): Promise<InjectFiles> {
  const dir = join(paths.work, 'istio');
  const istioctl = join(await kitBins('istio'), 'istioctl');
  const files = { istioctl, injectConfig: join(dir, 'inject-config.yaml'), values: join(dir, 'values.json'), mesh: join(dir, 'mesh.yaml') };
  if (existsSync(files.mesh)) return files;
  mkdirSync(dir, { recursive: true });
  const manifest = (await runOk([istioctl, 'manifest', 'generate', '-f', INJECT_OVERRIDES], { env: env(), timeoutMs: 120_000 })).stdout;
  const configMaps = parseAllDocuments(manifest).map((d) => d.toJS() as ConfigMap).filter((o) => o?.kind === 'ConfigMap');
  const data = (name: string, key: string) => {
    const value = configMaps.find((o) => o.metadata.name === name)?.data?.[key];
    if (value === undefined) throw new Error(`istioctl manifest generate: no ConfigMap ${name} with ${key}`);
    return value;
  };
  writeFileSync(files.injectConfig, data('istio-sidecar-injector', 'config'));
  writeFileSync(files.values, data('istio-sidecar-injector', 'values'));
  writeFileSync(files.mesh, data('istio', 'mesh'));
  return files;
}

/** Manifests (Deployments, Pods, ...) as `istioctl kube-inject` returns them, injected in CNI mode. */
export async function kubeInject(manifests: string): Promise<string> {
  const f = await injectFiles();
  // An explicit revision: without one, istioctl waits (forever, offline) for a cluster's default revision.
  const r = await runOk([f.istioctl, 'kube-inject', '--revision', 'default', '--injectConfigFile', f.injectConfig,
    '--valuesFile', f.values, '--meshConfigFile', f.mesh, '-f', '-'], {
    env: env(),
    input: manifests,
    timeoutMs: 120_000,
  });
  return r.stdout;
}

/** A namespace for injected pods, with the ConfigMap istiod would publish there (see publishMeshRootCert). */
export async function makeMeshNamespace(namespace: string): Promise<void> {
  await kubectl(['create', 'namespace', namespace]);
  await publishMeshRootCert(namespace);
}
