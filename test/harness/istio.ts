// Istio's own programs, the oracles the compat tests run beside ours: built from the pinned
// istio.io/istio module (cluster/istio) by cluster/build.sh into a cache outside the work tree
// (the first build takes minutes; later calls return at once).
import { join } from 'node:path';
import { REPO_ROOT } from './conflist.ts';
import { runOk } from './proc.ts';

export interface IstioPrograms {
  binDir: string;
  /** `pilot-agent istio-iptables …`: Istio's rule programmer (the istio-init / istio-validation command). */
  pilotAgent: string;
  /** Istio's own CNI plugin (sidecar mode). */
  istioCni: string;
  istioctl: string;
}

let built: Promise<IstioPrograms> | undefined;

export function istioPrograms(): Promise<IstioPrograms> {
  built ??= runOk(['/usr/bin/bash', join(REPO_ROOT, 'cluster', 'build.sh'), 'istio'], { timeoutMs: 60 * 60_000 }).then((r) => {
    const binDir = r.stdout.trim().split('\n').at(-1)!;
    return { binDir, pilotAgent: join(binDir, 'pilot-agent'), istioCni: join(binDir, 'istio-cni'), istioctl: join(binDir, 'istioctl') };
  });
  return built;
}
