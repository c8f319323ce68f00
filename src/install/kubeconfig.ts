import { stringify } from 'yaml';

export interface ServiceAccount {
  token: string;
  ca: Buffer;
}

/**
 * The kubeconfig the plugin uses on the node: the API server's service address and this
 * DaemonSet's service-account credentials, inline, because the plugin runs on the host where the
 * container's service-account volume is not mounted.
 */
export function renderKubeconfig(api: { server: string; skipTlsVerify: boolean }, account: ServiceAccount): string {
  const cluster: Record<string, unknown> = { server: api.server };
  if (api.skipTlsVerify) cluster['insecure-skip-tls-verify'] = true;
  else cluster['certificate-authority-data'] = account.ca.toString('base64');
  return stringify({
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: 'local', cluster }],
    users: [{ name: 'istio-cni', user: { token: account.token } }],
    contexts: [{ name: 'istio-cni-context', context: { cluster: 'local', user: 'istio-cni' } }],
    'current-context': 'istio-cni-context',
  });
}
