/**
 * Faults around the plugin, each through the built executable: iptables failing or missing, the
 * xtables lock held, the netns vanishing mid-ADD, API errors, an unwritable log, stdin cut short,
 * SIGTERM mid-ADD. Each ends in a result or one SPEC error, with all or nothing of our rules.
 * Faults that need another file system run the plugin in a private mount namespace (mountns.ts).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, describe, it } from 'vitest';
import * as h from '../harness/index.ts';
import { makeMountNs, replaceXtables, type MountNs } from '../hostile/mountns.ts';
import { classify, NOTHING, ourState, processProblems, specErrorProblems } from '../hostile/oracle.ts';

afterAll(h.cleanupAll);

const BIN = h.DEFAULT_ISTIO_CNI_BIN;
const WEB = { pod: 'web-0', namespace: 'default' };

async function env(tag: string, conflist: h.ConflistOptions = {}) {
  return h.makeE2E({ tag, pods: [h.injectedPod(WEB.pod, WEB.namespace)], conflist: { iptablesBackend: 'nft', ...conflist } });
}

function stdinOf(e: h.E2E, patch: Record<string, unknown> = {}): string {
  return JSON.stringify({ ...e.conf.conflist.plugins[1], name: e.conf.netName, cniVersion: '1.0.0', ...patch });
}

function varsOf(e: h.E2E, command = 'ADD'): Record<string, string> {
  return { CNI_COMMAND: command, CNI_CONTAINERID: 'c1', CNI_NETNS: e.topo.pod.path, CNI_IFNAME: 'eth0', CNI_ARGS: h.formatCniArgs(e.cniArgsFor(WEB)) };
}

/** ADD run in the node netns, inside `mnt` when given. */
async function add(e: h.E2E, opts: { mnt?: MountNs; stdin?: string } = {}) {
  const argv = opts.mnt ? opts.mnt.argv([BIN], e.topo.node) : h.nsenterArgv(e.topo.node, [BIN]);
  const t0 = performance.now();
  const result = await h.run(argv, { env: varsOf(e), input: opts.stdin ?? stdinOf(e), timeoutMs: 40_000 });
  return { ...result, ms: performance.now() - t0 };
}

function assertSpecError(result: h.RunResult, code: number, details?: RegExp) {
  assert.deepEqual(processProblems(result), []);
  const { problems, error } = specErrorProblems(result);
  assert.deepEqual(problems, [], result.stdout);
  assert.equal(error?.code, code, result.stdout);
  if (details) assert.match(error!.details, details);
  return error!;
}

describe('iptables failing', () => {
  it('reports missing iptables binaries as error 102 and leaves the netns untouched', async () => {
    const e = await env('nobin');
    const mnt = await makeMountNs();
    await mnt.mount(['-t', 'tmpfs', 'tmpfs', '/usr/sbin']);
    const result = await add(e, { mnt });
    assertSpecError(result, 102, /No such file/);
    assert.deepEqual(await ourState(e.topo.pod), NOTHING);
  });

  it('passes on iptables-restore\'s own words when the kernel lacks the nat table', async () => {
    // Unloading a kernel module would hit every test on this machine: a stand-in restore fails the way
    // iptables does without iptable_nat / nft_chain_nat, while iptables-save still works.
    const e = await env('nomod');
    const mnt = await makeMountNs();
    const words = "iptables-restore v1.8.9 (nf_tables): Couldn't load match `tcp':No such file or directory\nError occurred at line: 6\nTry `iptables-restore -h' or 'iptables-restore --help' for more information.\n";
    await replaceXtables(mnt, 'nft', { failWith: words });
    const result = await add(e, { mnt });
    assertSpecError(result, 102, /Couldn't load match `tcp'.*line: 6/s);
    assert.deepEqual(await ourState(e.topo.pod), NOTHING);
  });

  it('waits for the legacy xtables lock, then fails with a clear error within its bound', async () => {
    const e = await env('lock', { iptablesBackend: 'legacy' });
    const mnt = await makeMountNs();
    // A lock of this test's own: holding the machine's /run/xtables.lock would stall every other test.
    const lock = join(mnt.dir, 'xtables.lock');
    await h.runOk(['/usr/bin/touch', lock, '/run/xtables.lock']);
    await mnt.mount(['--bind', lock, '/run/xtables.lock']);
    const holder = await h.startDaemon(['/usr/bin/flock', '--no-fork', lock, '/usr/bin/python3', '-c', 'import sys, time; sys.stderr.write("LOCKED\\n"); sys.stderr.flush(); time.sleep(60)'], { ready: /LOCKED/, label: 'xtables lock holder' });
    const held = await add(e, { mnt });
    await holder.stop();
    assertSpecError(held, 102, /xtables lock/);
    assert.ok(held.ms >= 10_000 && held.ms < 20_000, `failed after ${Math.round(held.ms)} ms; the bound is 10 s of waiting`);
    assert.deepEqual(await ourState(e.topo.pod), NOTHING);

    // A lock released while the plugin waits is taken: the ADD succeeds.
    const briefly = await h.startDaemon(['/usr/bin/flock', '--no-fork', lock, '/usr/bin/python3', '-c', 'import sys, time; sys.stderr.write("LOCKED\\n"); sys.stderr.flush(); time.sleep(1.5)'], { ready: /LOCKED/, label: 'brief lock holder' });
    const waited = await add(e, { mnt });
    await briefly.exited;
    assert.equal(waited.code, 0, waited.stdout);
    assert.ok(waited.ms >= 1000, `took ${Math.round(waited.ms)} ms: it did wait`);
    assert.equal(classify((await ourState(e.topo.pod)).legacy), 'full');
  });
});

describe('the world changing under an ADD', () => {
  it('fails cleanly when the netns disappears while the pod is looked up', async () => {
    const e = await env('vanish');
    e.api!.behavior.delayMs = 1500;
    const running = add(e);
    await sleep(500);
    await h.deleteNetns(e.topo.pod);
    const result = await running;
    assertSpecError(result, 104, /does not exist/);
    assert.deepEqual(await ourState(e.topo.node), NOTHING);
  });

  const apiFaults: { name: string; set: (b: h.FakeKubeApiBehavior) => void; code: number }[] = [
    { name: '401', set: (b) => void (b.podStatus = 401), code: 101 },
    { name: '403', set: (b) => void (b.podStatus = 403), code: 101 },
    { name: '429', set: (b) => void (b.podStatus = 429), code: 11 },
    { name: '500', set: (b) => void (b.podStatus = 500), code: 11 },
    { name: '503', set: (b) => void (b.podStatus = 503), code: 11 },
    { name: 'no answer', set: (b) => void (b.hang = true), code: 11 },
  ];
  for (const fault of apiFaults) {
    it(`answers an API ${fault.name} with error ${fault.code}, no rules and no token anywhere`, async () => {
      const e = await env(`api${fault.name.replace(/\D/g, '')}`);
      fault.set(e.api!.behavior);
      const result = await add(e);
      assertSpecError(result, fault.code);
      assert.deepEqual(await ourState(e.topo.pod), NOTHING);
      const log = readFileSync(e.conf.logFile!, 'utf8');
      assert.match(log, /ADD failed/);
      for (const text of [result.stdout, result.stderr, log]) assert.ok(!text.includes(e.api!.token), 'the token leaked');
    });
  }
});

describe('the log file', () => {
  it('never fails a verb when the log directory is a read-only file system', async () => {
    const e = await env('rolog');
    const mnt = await makeMountNs();
    const dir = join(e.conf.confDir, 'ro-logs');
    mkdirSync(dir);
    await mnt.mount(['--bind', dir, dir]);
    await mnt.mount(['-o', 'remount,bind,ro', dir]);
    const result = await add(e, { mnt, stdin: stdinOf(e, { log_file: join(dir, 'istio-cni.log') }) });
    assert.equal(result.code, 0, result.stdout);
    assert.match(result.stderr, /^istio-cni: cannot open log file .*read-only file system.*logging disabled\n$/i);
    assert.equal(classify((await ourState(e.topo.pod)).nft), 'full');
  });

  it('never fails a verb when the log file is a directory', async () => {
    const e = await env('dirlog');
    const result = await add(e, { stdin: stdinOf(e, { log_file: e.conf.confDir }) });
    assert.equal(result.code, 0, result.stdout);
    assert.match(result.stderr, /cannot open log file/);
    assert.equal(classify((await ourState(e.topo.pod)).nft), 'full');
  });
});

describe('stdin', () => {
  it('answers a document cut short by a closed stdin with error 6 and no rules', async () => {
    const e = await env('cut');
    const whole = stdinOf(e);
    const result = await add(e, { stdin: whole.slice(0, whole.length >> 1) });
    assertSpecError(result, 6);
    assert.deepEqual(await ourState(e.topo.pod), NOTHING);
  });

  it('answers a closed stdin descriptor with error 6', async () => {
    const e = await env('nofd');
    const result = await h.run(h.nsenterArgv(e.topo.node, ['/usr/bin/python3', '-c', 'import os, sys; os.close(0); os.execv(sys.argv[1], sys.argv[1:])', BIN]), { env: varsOf(e) });
    assertSpecError(result, 6);
    assert.deepEqual(await ourState(e.topo.pod), NOTHING);
  });

  it('waits for a runtime that writes stdin slowly', async () => {
    const e = await env('slowin');
    const whole = stdinOf(e);
    const child = spawn(h.NSENTER, [`--net=${e.topo.node.path}`, BIN], { env: varsOf(e), stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stdin.write(whole.slice(0, 20));
    await sleep(400);
    child.stdin.end(whole.slice(20));
    const code = await new Promise((resolve) => child.on('close', resolve));
    assert.equal(code, 0, stdout);
    assert.equal(classify((await ourState(e.topo.pod)).nft), 'full');
  });
});

function openSocket(pid: number): boolean {
  try {
    // 0-2 are the runtime's pipes (socketpairs when the parent is libuv): a socket beyond them is the API's.
    return readdirSync(`/proc/${pid}/fd`).some((fd) => Number(fd) > 2 && readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith('socket:'));
  } catch {
    return false;
  }
}

describe('SIGTERM mid-ADD', () => {
  /** Starts an ADD, sends SIGTERM once `when` resolves; returns the run and the netns state at exit. */
  async function terminate(e: h.E2E, mnt: MountNs | undefined, when: (pid: number) => Promise<void>) {
    const argv = mnt ? mnt.argv([BIN], e.topo.node) : h.nsenterArgv(e.topo.node, [BIN]);
    const child = spawn(argv[0]!, argv.slice(1), { env: varsOf(e), stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.stdin.end(stdinOf(e));
    const closed = new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.on('close', (c, s) => resolve([c, s])));
    await when(child.pid!);
    const sentAt = performance.now();
    child.kill('SIGTERM'); // nsenter passes it on to the plugin it became (exec)
    const [code, signal] = await closed;
    const ms = performance.now() - sentAt;
    const atExit = await ourState(e.topo.pod);
    return { result: { code: code ?? -1, signal, stdout, stderr, timedOut: false }, ms, atExit };
  }

  it('during the pod lookup: stops at once with a SPEC error and nothing programmed', async () => {
    const e = await env('termapi');
    e.api!.behavior.delayMs = 15_000;
    // The API answers only after 15 s; the plugin is in the lookup once it holds a socket.
    const { result, ms, atExit } = await terminate(e, undefined, async (pid) => {
      while (!openSocket(pid)) await sleep(20);
    });
    assert.match(assertSpecError(result, 11).msg, /SIGTERM/);
    assert.ok(ms < 5000, `took ${Math.round(ms)} ms to stop: it waited for the API`);
    assert.deepEqual(atExit, NOTHING);
  });

  it('during iptables-restore: exits only once the transaction is over, all or nothing', async () => {
    const e = await env('termipt');
    const mnt = await makeMountNs();
    await replaceXtables(mnt, 'nft', { sleepS: 2 });
    const { result, atExit } = await terminate(e, mnt, async () => {
      while (!existsSync(join(mnt.dir, 'restore-started'))) await sleep(20);
    });
    assert.deepEqual(processProblems(result), []);
    assert.equal(result.code, 1, result.stdout);
    assert.match(assertSpecError(result, 11).msg, /SIGTERM/);
    // The restore under way was let finish before the answer, and nothing runs on after it.
    assert.equal(classify(atExit.nft), 'full');
    await sleep(3000);
    assert.deepEqual(await ourState(e.topo.pod), atExit);
  });
});
