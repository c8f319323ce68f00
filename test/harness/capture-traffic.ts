// A captured pod and the connections that tell what its rules do: whether a connection from the pod
// lands on a listener of the proxy (with its original destination) or reaches its real target, a UDP
// query's path, and a transparent (TPROXY) listener. Used by the e2e tests of every backend.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { REPO_ROOT } from './conflist.ts';
import { makeE2E, type E2E } from './e2e.ts';
import { injectedPod, type Pod } from './kube-api.ts';
import { netnsPath, NSENTER, nsenterArgv, type NetnsRef } from './netns.ts';
import type { CaptureBackend } from './nftables.ts';
import { runOk, trackChild } from './proc.ts';
import { connectFrom, probe, PYTHON, startOrigDstListener } from './traffic.ts';

export const WEB = { pod: 'web-0', namespace: 'default' };
/** The node side of the default pod subnet (10.200.0.0/24): a destination outside the pod. */
export const GATEWAY = '10.200.0.1';
const TPROXY_LISTEN = join(REPO_ROOT, 'test', 'helpers', 'tproxy-listen.py');
const UDP_PY = join(REPO_ROOT, 'test', 'helpers', 'udp.py');

type Container = Record<string, unknown> & { name: string };

/** The injected pod WEB with these annotations; `proxy` edits its istio-proxy container. */
export function annotatedPod(annotations: Record<string, string>, proxy: (c: Container) => void = () => {}): Pod {
  const pod = injectedPod(WEB.pod, WEB.namespace, { metadata: { annotations } });
  const containers = (pod.spec as { containers: Container[] }).containers;
  proxy(containers.find((c) => c.name === 'istio-proxy')!);
  return pod;
}

/** libcni ADD (and a passing CHECK) of `pod` as WEB on `backend` (`istio`: more of our entry's config); the pod's addresses. */
export async function addCaptured(pod: Pod, opts: { backend: CaptureBackend; tag: string; subnet6?: string; istio?: Record<string, unknown> }) {
  const e = await makeE2E({ tag: opts.tag, pods: [pod], conflist: { iptablesBackend: opts.backend, ...(opts.subnet6 ? { subnet6: opts.subnet6 } : {}), ...(opts.istio ? { istio: opts.istio } : {}) } });
  const add = await e.run('add', WEB);
  assert.equal(add.code, 0, `${add.stdout}\n${add.stderr}`);
  const entries = (add.json as { ips: { address: string; gateway?: string }[] }).ips;
  const check = await e.run('check', WEB);
  assert.equal(check.code, 0, `CHECK after ADD: ${check.stdout}`);
  const v6 = entries.find((i) => i.address.includes(':'));
  return { e, add, podIp: entries.find((i) => !i.address.includes(':'))!.address.split('/')[0]!, podIp6: v6?.address.split('/')[0], gateway6: v6?.gateway };
}

/** Did a connection from the pod land on a listener at `port` in the pod (redirected), or reach its real target? */
export async function redirectedTo(e: E2E, port: number, target: { ns?: NetnsRef; host: string; port: number; uid?: number; gid?: number }) {
  const listener = await startOrigDstListener(e.topo.pod, { host: target.host.includes(':') ? '::' : '0.0.0.0', port, timeoutMs: 4_000 });
  try {
    const direct = await probe({
      listenNs: target.ns ?? e.topo.node,
      listenHost: target.host.includes(':') ? '::' : '0.0.0.0',
      listenPort: target.port,
      connectNs: e.topo.pod,
      connectHost: target.host,
      ...(target.uid !== undefined ? { uid: target.uid, gid: target.gid ?? target.uid } : {}),
    });
    await listener.stop();
    const captured = await listener.result;
    return { captured: captured?.original_dst ?? null, reachedTarget: direct.listener !== null };
  } catch (err) {
    await listener.stop();
    throw err;
  }
}

/** Sends one UDP datagram from `from` to GATEWAY:53 and returns what a listener at `listenNs`:`port` got. */
export async function udpQueryLandsIn(listenNs: NetnsRef, port: number, from: NetnsRef, payload: string, uid?: number): Promise<string | null> {
  const listener = spawn(NSENTER, [`--net=${netnsPath(listenNs)}`, PYTHON, UDP_PY, 'listen', String(port), '3'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const stop = trackChild(listener, 'udp listener');
  let received = '';
  listener.stdout.setEncoding('utf8').on('data', (d: string) => (received += d));
  const exited = new Promise((resolve) => listener.once('close', resolve));
  await new Promise<void>((resolve) => listener.stderr.once('data', () => resolve()));
  const ids = uid === undefined ? {} : { uid, gid: uid };
  await runOk(nsenterArgv(from, [PYTHON, UDP_PY, 'send', GATEWAY, '53', payload], ids), { cwd: '/' });
  await exited;
  await stop();
  return received.trim() || null;
}

/**
 * A transparent listener on `port` in the pod (as Envoy's TPROXY inbound listener) and one connection
 * from the node to `host:connectPort`: the local address the listener saw, which under TPROXY is the
 * connection's original destination, and what the client read.
 */
export async function tproxyConnection(e: E2E, port: number, host: string, connectPort: number): Promise<{ local: string | undefined; reply: string | undefined }> {
  const bind = host.includes(':') ? '::' : '0.0.0.0';
  const listener = spawn(NSENTER, [`--net=${netnsPath(e.topo.pod)}`, PYTHON, TPROXY_LISTEN, String(port), '5', bind], { stdio: ['ignore', 'pipe', 'pipe'] });
  const stop = trackChild(listener, 'tproxy listener');
  let output = '';
  listener.stdout.setEncoding('utf8').on('data', (d: string) => (output += d));
  await new Promise<void>((resolve) => listener.stderr.once('data', () => resolve()));
  const exited = new Promise((resolve) => listener.once('close', resolve));
  const client = await connectFrom(e.topo.node, { host, port: connectPort });
  if (client.connected) await exited;
  await stop();
  const line = output.split('\n').find((l) => l.startsWith('{"local"'));
  return { local: line ? (JSON.parse(line) as { local: string }).local : undefined, reply: client.reply };
}
