/**
 * `node --import tsx test/helpers/cri-sweep.ts <socket>`: take down every pod sandbox of a CRI
 * runtime. The containerd harness runs it synchronously from an interrupted test's exit handler,
 * where no asynchronous gRPC call can complete.
 */
import { criClient, removeAllSandboxes } from '../harness/cri.ts';

const socket = process.argv[2];
if (!socket) throw new Error('usage: cri-sweep.ts <CRI socket>');
const cri = criClient(socket, 10_000);
removeAllSandboxes(cri)
  .catch((err: Error) => {
    console.error(`cri-sweep: ${err.message}`);
    process.exitCode = 1;
  })
  .finally(() => cri.close());
