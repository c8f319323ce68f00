// Istio's own programs, the oracles the compat tests run beside ours: the cluster kit built from the
// pinned istio.io/istio module (cluster/istio), cached outside the work tree (scripts/setup.sh builds it).
import { join } from 'node:path';
import { kitBins } from './cluster.ts';

export interface IstioPrograms {
  /** `pilot-agent istio-iptables …`: Istio's rule programmer (the istio-init / istio-validation command). */
  pilotAgent: string;
  /** Istio's own CNI plugin (sidecar mode). */
  istioCni: string;
}

let built: Promise<IstioPrograms> | undefined;

export function istioPrograms(): Promise<IstioPrograms> {
  built ??= kitBins('istio').then((binDir) => ({ pilotAgent: join(binDir, 'pilot-agent'), istioCni: join(binDir, 'istio-cni') }));
  return built;
}
