/**
 * The installer against local processes that share the host's net.d and CNI bin dir (issue 18), the
 * built executable as a child process: a racer planting links at its temp names, links, FIFOs and
 * devices where configs are, umask 000, a write cut short, and a reader that must never see a
 * missing or partial conflist.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, lstatSync, readdirSync, readFileSync, readlinkSync, renameSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import * as h from '../harness/index.ts';
import { CALICO, entryIsLast, KUBECONFIG_NAME, makeFakeNode, readConflist, startInstaller, stopInstaller, types, waitFor, type FakeNode } from './node.ts';

after(h.cleanupAll);

const BIN = h.DEFAULT_ISTIO_CNI_BIN;
const RACER = join(h.REPO_ROOT, 'test', 'helpers', 'racer.py');
const mode = (path: string) => statSync(path).mode & 0o777;

/** A file standing in for /etc/shadow: the installer must never write or chmod it. */
function makeVictim(node: FakeNode): { path: string; unchanged(): boolean } {
  const path = join(node.root, 'shadow');
  writeFileSync(path, 'root:$6$secret:19000:0:99999:7:::\n', { mode: 0o640 });
  chmodSync(path, 0o640);
  return { path, unchanged: () => readFileSync(path, 'utf8') === 'root:$6$secret:19000:0:99999:7:::\n' && mode(path) === 0o640 };
}

/** A small stand-in for the executable, so that each install is quick. */
function smallSource(node: FakeNode): { path: string; content: string } {
  const path = join(node.root, 'istio-cni-source');
  const content = '#!/bin/true\nthe istio-cni executable\n';
  writeFileSync(path, content, { mode: 0o755 });
  return { path, content };
}

describe('the executable copy into the CNI bin dir', () => {
  it('never writes through a link planted at its temp name, however a local process races it', async () => {
    const node = makeFakeNode();
    const source = smallSource(node);
    node.env.CNI_BINARY_SOURCE = source.path;
    writeFileSync(join(node.netDir, '10-calico.conflist'), CALICO);
    const victim = makeVictim(node);
    // It keeps the old predictable temp name a link to the victim, and turns any other dot-file
    // (a temp file being written) into one.
    const racer = await h.startDaemon([h.PYTHON, RACER, 'plant', node.binDir, '.istio-cni.istio-cni.tmp', victim.path], { ready: /racing/, label: 'racer plant' });
    const outcomes: number[] = [];
    try {
      for (let i = 0; i < 40; i++) {
        const once = await h.run([BIN, 'install', '--once'], { env: node.env, timeoutMs: 20_000 });
        outcomes.push(once.code ?? -1);
        assert.ok(victim.unchanged(), `install ${i + 1} (exit ${once.code}) wrote through the link: ${readFileSync(victim.path, 'utf8').slice(0, 60)} mode ${mode(victim.path).toString(8)}`);
        if (once.code === 0) {
          const installed = join(node.binDir, 'istio-cni');
          assert.ok(lstatSync(installed).isFile(), `a successful install leaves a regular file, not ${lstatSync(installed).isSymbolicLink() ? `a link to ${readlinkSync(installed)}` : 'this'}: ${once.stderr}`);
          assert.equal(readFileSync(installed, 'utf8'), source.content);
        } else {
          assert.match(once.stderr, /replaced by another process|EEXIST|ENOENT/, once.stderr);
        }
      }
    } finally {
      await racer.stop();
    }
    console.log(`exit codes under the racer: ${outcomes.join(' ')}`);
  });
});

describe('net.d entries that are not regular files', () => {
  it('a config link to a FIFO that sorts first: nothing read or written, SIGTERM still honoured', async () => {
    const node = makeFakeNode();
    const calico = join(node.netDir, '10-calico.conflist');
    writeFileSync(calico, CALICO);
    const fifo = join(node.root, 'fifo');
    await h.runOk(['/usr/bin/mkfifo', fifo]);
    symlinkSync(fifo, join(node.netDir, '05-fifo.conflist'));
    const installer = await startInstaller(node);
    await waitFor('the refusal', () => /05-fifo.conflist is a symbolic link.*not a regular file: not touching it/.test(installer.output().stderr));
    assert.equal(readFileSync(calico, 'utf8'), CALICO, 'the runtime may use the link: calico\'s file is not ours to change');

    // Once it is a regular config again, our entry goes there.
    const fifoLink = join(node.netDir, '05-fifo.conflist');
    writeFileSync(`${fifoLink}.new`, CALICO);
    renameSync(`${fifoLink}.new`, fifoLink);
    await waitFor('our entry in the file that sorts first', () => entryIsLast(fifoLink));
    const started = performance.now();
    assert.equal(await stopInstaller(installer, 'SIGTERM'), 0);
    assert.ok(performance.now() - started < 3000);
    assert.deepEqual(types(readConflist(fifoLink)), ['calico', 'portmap', 'bandwidth']);
  });

  it('a config link to /dev/zero is not read (the installer runs under a 256 MiB ceiling)', async () => {
    const node = makeFakeNode();
    writeFileSync(join(node.netDir, '10-calico.conflist'), CALICO);
    symlinkSync('/dev/zero', join(node.netDir, '00-zero.conf'));
    const cgroup = h.makeMemoryCgroup(256 * 1024 * 1024);
    const once = await h.run(cgroup.argv([BIN, 'install', '--once']), { env: node.env, timeoutMs: 30_000 });
    assert.equal(once.signal, null, `killed by ${once.signal} after ${Math.round(cgroup.peakBytes() / 1048576)} MiB`);
    assert.equal(once.code, 1, once.stderr);
    assert.match(once.stderr, /00-zero.conf is a symbolic link/);
    assert.equal(readFileSync(join(node.netDir, '10-calico.conflist'), 'utf8'), CALICO);
  });

  it('never rewrites a primary config that is a link, nor gives its target\'s owner to a new file', async () => {
    const node = makeFakeNode();
    const target = join(node.root, 'calico-owned-by-4321.conflist');
    writeFileSync(target, CALICO);
    chownSync(target, 4321, 4321);
    const link = join(node.netDir, '10-calico.conflist');
    symlinkSync(target, link);
    const once = await h.run([BIN, 'install', '--once'], { env: node.env, timeoutMs: 20_000 });
    assert.equal(once.code, 1, once.stderr);
    assert.ok(lstatSync(link).isSymbolicLink(), 'the link is still a link');
    assert.equal(readFileSync(target, 'utf8'), CALICO);
    assert.deepEqual(readdirSync(node.netDir).filter((n) => lstatSync(join(node.netDir, n)).uid === 4321), [], 'no file of net.d belongs to the link target\'s owner');
  });

  it('replaces a FIFO or a link at the kubeconfig\'s name instead of reading or following it', async () => {
    for (const plant of ['fifo', 'link'] as const) {
      const node = makeFakeNode({ token: 'sa-token' });
      writeFileSync(join(node.netDir, '10-calico.conflist'), CALICO);
      const victim = makeVictim(node);
      const kubeconfig = join(node.netDir, KUBECONFIG_NAME);
      if (plant === 'fifo') await h.runOk(['/usr/bin/mkfifo', kubeconfig]);
      else symlinkSync(victim.path, kubeconfig);
      const once = await h.run([BIN, 'install', '--once'], { env: node.env, timeoutMs: 10_000 });
      assert.equal(once.code, 0, `${plant}: ${once.stderr}`);
      assert.ok(lstatSync(kubeconfig).isFile(), plant);
      assert.equal(mode(kubeconfig), 0o600);
      assert.match(readFileSync(kubeconfig, 'utf8'), /token: sa-token/);
      assert.ok(victim.unchanged(), plant);
    }
  });
});

describe('directories the installer makes', () => {
  it('are 0755 under umask 000, parents included; the kubeconfig stays 0600', async () => {
    const node = makeFakeNode({ token: 't' });
    const binDir = join(node.root, 'missing', 'opt', 'cni', 'bin');
    const netDir = join(node.root, 'missing2', 'etc', 'cni', 'net.d');
    node.env.MOUNTED_CNI_BIN_DIRS = binDir;
    node.env.MOUNTED_CNI_NET_DIR = netDir;
    node.env.CNI_BINARY_SOURCE = smallSource(node).path;
    const umask = process.umask(0);
    let once;
    try {
      once = await h.run([BIN, 'install', '--once'], { env: node.env, timeoutMs: 20_000 });
    } finally {
      process.umask(umask);
    }
    // No config in the new net.d: the entry is not placed, but everything else is.
    assert.equal(once.code, 1, once.stderr);
    for (const dir of [join(node.root, 'missing'), join(node.root, 'missing', 'opt'), binDir, join(node.root, 'missing2'), netDir]) {
      assert.equal(mode(dir).toString(8), '755', dir);
    }
    assert.equal(mode(join(binDir, 'istio-cni')).toString(8), '755');
    assert.equal(mode(join(netDir, KUBECONFIG_NAME)).toString(8), '600');
  });
});

describe('atomic replacement of configs', () => {
  it('a write cut short (the file size limit: EFBIG mid-write) leaves the old conflist byte for byte and no temp file', async () => {
    const node = makeFakeNode();
    delete node.env.KUBERNETES_SERVICE_HOST;
    node.env.CNI_BINARY_SOURCE = smallSource(node).path;
    const calico = join(node.netDir, '10-calico.conflist');
    writeFileSync(calico, CALICO);
    // Above the stand-in executable, below the conflist with our entry.
    const once = await h.run(['/usr/bin/prlimit', '--fsize=600', BIN, 'install', '--once'], { env: node.env, timeoutMs: 20_000 });
    assert.equal(once.code, 1, once.stderr);
    assert.match(once.stderr, /EFBIG/);
    assert.equal(readFileSync(calico, 'utf8'), CALICO);
    assert.deepEqual(readdirSync(node.netDir), ['10-calico.conflist'], 'no temp file left');
  });

  it('a failed write (no space left) leaves the old conflist and no temp file', async () => {
    const node = makeFakeNode();
    delete node.env.KUBERNETES_SERVICE_HOST;
    node.env.CNI_BINARY_SOURCE = smallSource(node).path;
    await h.runOk(['/usr/bin/mount', '-t', 'tmpfs', '-o', 'size=32k', 'tmpfs', node.netDir]);
    h.registerCleanup(`umount ${node.netDir}`, () => void spawnSync('/usr/bin/umount', ['-l', node.netDir], { stdio: 'ignore' }));
    const calico = join(node.netDir, '10-calico.conflist');
    writeFileSync(calico, CALICO);
    // Fill what is left, page by page.
    for (let i = 0; ; i++) {
      try {
        writeFileSync(join(node.netDir, `filler-${i}`), Buffer.alloc(4096));
      } catch {
        break;
      }
    }
    const before = readdirSync(node.netDir).sort();
    const once = await h.run([BIN, 'install', '--once'], { env: node.env, timeoutMs: 20_000 });
    assert.equal(once.code, 1, once.stderr);
    assert.match(once.stderr, /ENOSPC/);
    assert.equal(readFileSync(calico, 'utf8'), CALICO);
    assert.deepEqual(readdirSync(node.netDir).sort(), before, 'no temp file left');
    await h.runOk(['/usr/bin/umount', node.netDir]);
  });

  it('a reader never sees a missing or partial conflist while the installer keeps rewriting it', async () => {
    const node = makeFakeNode();
    const calico = join(node.netDir, '10-calico.conflist');
    writeFileSync(calico, CALICO);
    const installer = await startInstaller(node);
    const reader = h.run([h.PYTHON, '-c', READER, calico, '6'], { timeoutMs: 20_000 });
    // calico's own atomic rewrites (without our entry), each answered by the installer's rewrite.
    let rounds = 0;
    const until = performance.now() + 5000;
    while (performance.now() < until) {
      writeFileSync(`${calico}.calico`, CALICO);
      renameSync(`${calico}.calico`, calico);
      await waitFor('our entry back', () => entryIsLast(calico));
      rounds += 1;
    }
    const counts = JSON.parse((await reader).stdout) as { ok: number; missing: number; partial: number };
    assert.equal(await stopInstaller(installer), 0);
    assert.ok(rounds >= 10, `${rounds} rewrites`);
    assert.ok(counts.ok > 1000, JSON.stringify(counts));
    assert.deepEqual({ missing: counts.missing, partial: counts.partial }, { missing: 0, partial: 0 }, `${rounds} rewrites: ${JSON.stringify(counts)}`);
    assert.ok(!existsSync(`${calico}.calico`));
  });
});

/** Reads a file over and over for N seconds and counts whole JSON documents, missing files and partial reads. */
const READER = `
import json, sys, time
path, seconds = sys.argv[1], float(sys.argv[2])
counts = {'ok': 0, 'missing': 0, 'partial': 0}
end = time.monotonic() + seconds
while time.monotonic() < end:
    try:
        with open(path) as f:
            json.loads(f.read())
        counts['ok'] += 1
    except FileNotFoundError:
        counts['missing'] += 1
    except ValueError:
        counts['partial'] += 1
print(json.dumps(counts))
`;
