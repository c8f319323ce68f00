// The real cluster's PKI, made with openssl: one CA signing every serving and client certificate,
// and the service-account signing key. Client identities follow kubeadm's names, so the apiserver's
// default RBAC (system:kube-controller-manager, system:kube-scheduler, system:node:<name>) applies.
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { OPENSSL } from './kube-api.ts';
import { runOk } from './proc.ts';

export interface ClusterPki {
  dir: string;
  caCert: string;
  caKey: string;
  /** RSA key pair that signs (private) and verifies (public) service-account tokens. */
  saKey: string;
  saPub: string;
  cert(name: CertName): { cert: string; key: string };
}

export type CertName = 'apiserver' | 'apiserver-kubelet-client' | 'admin' | 'controller-manager' | 'scheduler' | 'kubelet' | 'kubelet-serving';

export interface PkiSubjects {
  nodeName: string;
  nodeIp: string;
  apiServiceIp: string;
}

const DAYS = '365';

async function ecKey(path: string): Promise<void> {
  await runOk([OPENSSL, 'genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', path]);
}

/** Make the PKI in dir (once: an existing complete PKI is kept, so `up` twice keeps its certificates). */
export async function makeClusterPki(dir: string, s: PkiSubjects): Promise<ClusterPki> {
  const pki: ClusterPki = {
    dir,
    caCert: join(dir, 'ca.crt'),
    caKey: join(dir, 'ca.key'),
    saKey: join(dir, 'sa.key'),
    saPub: join(dir, 'sa.pub'),
    cert: (name) => ({ cert: join(dir, `${name}.crt`), key: join(dir, `${name}.key`) }),
  };
  const complete = join(dir, '.complete');
  if (existsSync(complete)) return pki;
  mkdirSync(dir, { recursive: true, mode: 0o700 });

  await ecKey(pki.caKey);
  await runOk([OPENSSL, 'req', '-x509', '-new', '-key', pki.caKey, '-subj', '/CN=icni-cluster-ca', '-days', DAYS, '-sha256',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign', '-out', pki.caCert]);
  await runOk([OPENSSL, 'genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', pki.saKey]);
  await runOk([OPENSSL, 'pkey', '-in', pki.saKey, '-pubout', '-out', pki.saPub]);

  const server = 'extendedKeyUsage=serverAuth';
  const client = 'extendedKeyUsage=clientAuth';
  const apiNames = ['DNS:kubernetes', 'DNS:kubernetes.default', 'DNS:kubernetes.default.svc', 'DNS:kubernetes.default.svc.cluster.local',
    'DNS:localhost', 'IP:127.0.0.1', `IP:${s.nodeIp}`, `IP:${s.apiServiceIp}`];
  const certs: Array<[CertName, string, string[]]> = [
    ['apiserver', '/CN=kube-apiserver', [server, `subjectAltName=${apiNames.join(',')}`]],
    ['apiserver-kubelet-client', '/O=system:masters/CN=kube-apiserver-kubelet-client', [client]],
    ['admin', '/O=system:masters/CN=kubernetes-admin', [client]],
    ['controller-manager', '/CN=system:kube-controller-manager', [client]],
    ['scheduler', '/CN=system:kube-scheduler', [client]],
    ['kubelet', `/O=system:nodes/CN=system:node:${s.nodeName}`, [client]],
    ['kubelet-serving', `/CN=${s.nodeName}`, [server, `subjectAltName=DNS:${s.nodeName},IP:${s.nodeIp}`]],
  ];
  for (const [name, subject, extensions] of certs) {
    const { cert, key } = pki.cert(name);
    const csr = join(dir, `${name}.csr`);
    const ext = join(dir, `${name}.ext`);
    await ecKey(key);
    writeFileSync(ext, ['basicConstraints=CA:FALSE', 'keyUsage=critical,digitalSignature,keyEncipherment', ...extensions, ''].join('\n'));
    await runOk([OPENSSL, 'req', '-new', '-key', key, '-subj', subject, '-out', csr]);
    await runOk([OPENSSL, 'x509', '-req', '-in', csr, '-CA', pki.caCert, '-CAkey', pki.caKey, '-set_serial', `0x${randomBytes(8).toString('hex')}`,
      '-days', DAYS, '-sha256', '-extfile', ext, '-out', cert]);
  }
  writeFileSync(complete, '');
  return pki;
}
