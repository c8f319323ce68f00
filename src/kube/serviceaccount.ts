import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CniError, ErrorCode } from '../cni/errors.ts';
import type { KubeConnection } from './kubeconfig.ts';

export const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

/**
 * The connection a pod has to its own cluster: the API server from KUBERNETES_SERVICE_HOST/PORT,
 * the cluster CA and the (rotating, so re-read per request) token from the service-account mount.
 */
export function inClusterConnection(env: NodeJS.ProcessEnv, dir = SERVICE_ACCOUNT_DIR): KubeConnection {
  const host = env.KUBERNETES_SERVICE_HOST;
  const port = env.KUBERNETES_SERVICE_PORT ?? '443';
  if (host === undefined || host === '') {
    throw new CniError(ErrorCode.KubeconfigInvalid, 'no Kubernetes API to talk to', 'neither a kubeconfig nor KUBERNETES_SERVICE_HOST is set');
  }
  let ca: Buffer;
  try {
    ca = readFileSync(join(dir, 'ca.crt'));
  } catch (err) {
    throw new CniError(ErrorCode.KubeconfigInvalid, 'invalid service account', (err as Error).message);
  }
  const server = new URL(`https://${host.includes(':') ? `[${host}]` : host}:${port}`);
  return { server, ca, insecure: false, tokenFile: join(dir, 'token') };
}
