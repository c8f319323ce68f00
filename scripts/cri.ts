/**
 * A kubelet stand-in for trying the plugin under containerd by hand (Debian has no crictl): the
 * pod sandbox calls over a CRI socket, and the local pause image for `ctr images import`.
 *
 *   node --import tsx scripts/cri.ts pause-image <dir>                 -> <dir>/pause-oci.tar
 *   node --import tsx scripts/cri.ts <socket> run <namespace>/<name> [<uid>] [key=value ...]
 *   node --import tsx scripts/cri.ts <socket> status|stop|rm <sandbox id>
 *   node --import tsx scripts/cri.ts <socket> ls
 */
import { randomUUID } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { criClient } from '../test/harness/cri.ts';
import { SANDBOX_IMAGE } from '../test/harness/containerd.ts';
import { buildPauseImageArchive } from '../test/harness/oci-image.ts';

const USAGE = 'usage: cri.ts pause-image <dir> | cri.ts <socket> run <namespace>/<name> [<uid>] [key=value ...] | cri.ts <socket> status|stop|rm <id> | cri.ts <socket> ls';

async function main(argv: string[]): Promise<void> {
  if (argv[0] === 'pause-image' && argv[1]) {
    mkdirSync(argv[1], { recursive: true });
    console.log(`${await buildPauseImageArchive(argv[1], SANDBOX_IMAGE)} (image ${SANDBOX_IMAGE})`);
    return;
  }
  const [socket, verb, arg, ...rest] = argv;
  if (!socket || !verb) throw new Error(USAGE);
  const cri = criClient(socket);
  try {
    if (verb === 'run' && arg?.includes('/')) {
      const [namespace, name] = arg.split('/') as [string, string];
      const uid = rest[0] && !rest[0].includes('=') ? rest.shift()! : randomUUID();
      const annotations = Object.fromEntries(rest.map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
      const id = await cri.runPodSandbox({ metadata: { name, namespace, uid }, hostname: name, annotations, linux: {} });
      const status = await cri.podSandboxStatus(id, true);
      const spec = JSON.parse(status.info.info ?? '{}').runtimeSpec;
      const netns = spec?.linux?.namespaces?.find((n: { type: string }) => n.type === 'network')?.path;
      console.log(JSON.stringify({ id, ip: status.status.network?.ip, netns }));
    } else if (verb === 'status' && arg) {
      console.log(JSON.stringify((await cri.podSandboxStatus(arg)).status, null, 2));
    } else if (verb === 'stop' && arg) {
      await cri.stopPodSandbox(arg);
    } else if (verb === 'rm' && arg) {
      await cri.removePodSandbox(arg);
    } else if (verb === 'ls') {
      for (const s of await cri.listPodSandbox()) console.log(`${s.id}  ${s.metadata.namespace}/${s.metadata.name}  ${s.state}`);
    } else {
      throw new Error(USAGE);
    }
  } finally {
    cri.close();
  }
}

main(process.argv.slice(2)).catch((err: Error) => {
  console.error(err.message);
  process.exitCode = 1;
});
