import type * as Tls from 'node:tls';

/**
 * The CAs a connection to the API server trusts: the kubeconfig's, else Node's default set (its
 * bundled Mozilla roots and NODE_EXTRA_CA_CERTS). The executable runs with --use-openssl-ca, which
 * keeps Node from parsing its ~120 bundled roots on a thread in every process that loads node:tls
 * (about 8 ms of CPU per ADD, wasted when the kubeconfig names its CA) but would make OpenSSL's
 * directory the default; so the default is spelled out. Node before 22.15 has no getCACertificates
 * (tests and `tsx` on Node 20, never with that flag): its own default is then the same set.
 */
export function trustedCas(tls: typeof Tls, ca: Buffer | undefined): Buffer | string[] | undefined {
  if (ca !== undefined || typeof tls.getCACertificates !== 'function') return ca;
  return [...tls.getCACertificates('bundled'), ...tls.getCACertificates('extra')];
}
