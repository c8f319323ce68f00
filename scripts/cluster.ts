/**
 * The real cluster's command line (scripts/cluster.sh runs it after setup and build):
 *   up | down | status | inject FILE | rules NAMESPACE/POD
 */
import { readFileSync } from 'node:fs';
import * as c from '../test/harness/cluster.ts';
import { kubeInject } from '../test/harness/istio-inject.ts';
import { execInNetnsOk } from '../test/harness/netns.ts';

const USAGE = 'usage: cluster.sh up | down | status | inject FILE | rules NAMESPACE/POD';

async function main([verb, arg]: string[]): Promise<void> {
  switch (verb) {
    case 'up':
      await c.clusterUp();
      return;
    case 'down':
      await c.clusterDown();
      return;
    case 'status': {
      const s = await c.clusterStatus();
      for (const p of s.components) console.log(`${p.component.padEnd(24)} ${p.running ? `running, PID ${p.pid}` : 'not running'}`);
      if (s.up) {
        console.log((await c.kubectl(['get', 'nodes', '-o', 'wide'])).stdout);
        console.log((await c.kubectl(['-n', 'kube-system', 'get', 'daemonset', 'istio-cni-node'])).stdout);
      }
      console.log(s.up ? `up: export KUBECONFIG=${s.kubeconfig}` : 'down');
      if (!s.up) process.exitCode = 3;
      return;
    }
    case 'inject':
      if (!arg) break;
      process.stdout.write(await kubeInject(readFileSync(arg, 'utf8')));
      return;
    case 'rules': {
      const [namespace, name] = arg?.split('/') ?? [];
      if (!namespace || !name) break;
      const uid = (await c.kubectl(['-n', namespace, 'get', 'pod', name, '-o', 'jsonpath={.metadata.uid}'])).stdout;
      const sandbox = await c.podSandbox(uid);
      console.log(`# ${namespace}/${name}: sandbox ${sandbox.id.slice(0, 13)}, netns ${sandbox.netns}`);
      process.stdout.write((await execInNetnsOk(sandbox.netns, ['/usr/sbin/iptables-save', '-t', 'nat'])).stdout);
      return;
    }
  }
  throw new Error(USAGE);
}

main(process.argv.slice(2)).catch((err: Error) => {
  console.error(err.message);
  process.exitCode = 1;
});
