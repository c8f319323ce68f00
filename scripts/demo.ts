/**
 * The main job, once, for a person to watch: a pod network namespace, the real chain (ptp +
 * host-local, then the built dist/istio-cni) run by libcni, an API server that knows the pod as
 * sidecar-injected, and the rules the plugin programmed. Everything it creates is removed at the end.
 */
import { readFileSync } from 'node:fs';
import * as h from '../test/harness/index.ts';

const pod = { pod: 'productpage-v1-6b746f74dc-9stvs', namespace: 'bookinfo' };

try {
  const e = await h.makeE2E({ tag: 'demo', pods: [h.injectedPod(pod.pod, pod.namespace)] });
  console.log(`conflist ${e.conf.path}:\n${readFileSync(e.conf.path, 'utf8')}`);
  console.log(`ADD ${pod.namespace}/${pod.pod} into ${e.topo.pod.path} (CNI_ARGS ${h.formatCniArgs(e.cniArgsFor(pod))})`);
  const add = await e.run('add', pod);
  if (add.code !== 0) throw new Error(`ADD failed: ${add.stderr}`);
  console.log(`result (ptp's, passed through): ${JSON.stringify(add.json)}\n`);
  console.log(`iptables -t nat -S in the pod's netns:\n${(await h.iptablesS(e.topo.pod, 'nft')).join('\n')}\n`);
  console.log(`log line:\n${readFileSync(e.conf.logFile!, 'utf8')}`);
  const check = await e.run('check', pod);
  console.log(`CHECK: ${check.code === 0 ? 'ok' : check.stderr}`);
  const del = await e.run('del', pod);
  console.log(`DEL: ${del.code === 0 ? 'ok' : del.stderr}; ISTIO chains left: ${(await h.iptablesS(e.topo.pod, 'nft')).filter((l) => l.includes('ISTIO_')).length}`);
} finally {
  await h.cleanupAll();
}
