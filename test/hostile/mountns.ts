/**
 * A private mount namespace for faults that need the plugin to see a different file system: a failing
 * or missing iptables binary, a private xtables lock, a read-only log directory. Made with
 * `unshare --mount=<file>` (persistent, argv only, no shell); changes inside never reach the machine.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as h from '../harness/index.ts';

const UNSHARE = '/usr/bin/unshare';
const MOUNT = '/usr/bin/mount';
const UMOUNT = '/usr/bin/umount';

export interface MountNs {
  /** The persistent namespace file (nsenter --mount=<file>). */
  file: string;
  dir: string;
  /** Runs argv inside the mount namespace, and inside `net` when given. */
  argv(argv: readonly string[], net?: h.NetnsRef): string[];
  mount(args: readonly string[]): Promise<void>;
}

export async function makeMountNs(): Promise<MountNs> {
  const dir = h.makeTempDir('icni-mnt-');
  // The file that pins the namespace must sit on a private mount, as /run/netns does for netns.
  await h.runOk([MOUNT, '--bind', dir, dir]);
  await h.runOk([MOUNT, '--make-private', dir]);
  const file = join(dir, 'mnt');
  writeFileSync(file, '');
  await h.runOk([UNSHARE, `--mount=${file}`, '--propagation', 'private', '/bin/true']);
  h.registerCleanup(`mount ns ${file}`, () => {
    // Synchronous: cleanups also run at exit.
    for (const target of [file, dir]) spawnSync(UMOUNT, ['-l', target], { stdio: 'ignore' });
  });
  const argv = (inner: readonly string[], net?: h.NetnsRef) => [h.NSENTER, `--mount=${file}`, ...(net ? [`--net=${h.netnsPath(net)}`] : []), '--', ...inner];
  return {
    file,
    dir,
    argv,
    async mount(args) {
      await h.runOk(argv([MOUNT, ...args]));
    },
  };
}


/**
 * A stand-in for xtables-<backend>-multi (what iptables-<backend>-restore/-save link to): for the
 * restore it waits `sleepS`, then fails with `failWith` on stderr or runs the real one; every other
 * tool runs the real binary, copied aside before the stand-in is mounted over it. A started restore
 * leaves the file <dir>/restore-started; with `record`, each restore's input is appended to
 * <dir>/restore-input (see restoreInputs).
 */
export async function replaceXtables(ns: MountNs, backend: 'nft' | 'legacy', restore: { sleepS?: number; failWith?: string; record?: boolean }): Promise<void> {
  const multi = `/usr/sbin/xtables-${backend}-multi`;
  const real = join(ns.dir, `real-xtables-${backend}-multi`);
  await h.runOk(['/usr/bin/cp', multi, real]);
  const stub = join(ns.dir, `fake-xtables-${backend}-multi`);
  mkdirSync(ns.dir, { recursive: true });
  writeFileSync(stub, [
    '#!/usr/bin/python3',
    'import os, subprocess, sys, time',
    `if sys.argv[0].endswith('-restore'):`,
    `    open(${JSON.stringify(join(ns.dir, 'restore-started'))}, 'w').close()`,
    `    time.sleep(${restore.sleepS ?? 0})`,
    ...(restore.failWith !== undefined ? [`    sys.stderr.write(${JSON.stringify(restore.failWith)})`, '    sys.exit(1)'] : []),
    ...(restore.record
      ? [
          '    data = sys.stdin.buffer.read()',
          `    with open(${JSON.stringify(join(ns.dir, 'restore-input'))}, 'ab') as f: f.write(data + ${JSON.stringify(RECORD_SEPARATOR)}.encode())`,
          `    sys.exit(subprocess.run(sys.argv, executable=${JSON.stringify(real)}, input=data).returncode)`,
        ]
      : []),
    `os.execv(${JSON.stringify(real)}, sys.argv)`,
    '',
  ].join('\n'));
  chmodSync(stub, 0o755);
  await ns.mount(['--bind', stub, multi]);
}

/** One run of the nft stand-in: its arguments and, for `-f -`, the script it was given. */
export interface NftCall {
  args: string[];
  script?: string;
}

/**
 * A stand-in for /usr/sbin/nft that records every call in <dir>/nft-calls.jsonl and runs a copy of the
 * real nft, except that the first `failTransactions` `nft -f` calls fail with `failWith` on stderr
 * (nothing applied). `calls()` reads the record.
 */
export async function recordNft(ns: MountNs, opts: { failTransactions?: number; failWith?: string } = {}): Promise<() => NftCall[]> {
  const real = join(ns.dir, 'real-nft');
  await h.runOk(['/usr/bin/cp', '/usr/sbin/nft', real]);
  const record = join(ns.dir, 'nft-calls.jsonl');
  const stub = join(ns.dir, 'fake-nft');
  writeFileSync(stub, [
    '#!/usr/bin/python3',
    'import json, subprocess, sys',
    'args = sys.argv[1:]',
    "script = sys.stdin.read() if args[:2] == ['-f', '-'] else None",
    `with open(${JSON.stringify(record)}, 'a') as f: f.write(json.dumps({'args': args, **({'script': script} if script is not None else {})}) + '\\n')`,
    `with open(${JSON.stringify(record)}) as f: transactions = sum(1 for line in f if '"script"' in line)`,
    `if script is not None and transactions <= ${opts.failTransactions ?? 0}:`,
    `    sys.stderr.write(${JSON.stringify(opts.failWith ?? 'Error: stand-in failure\n')})`,
    '    sys.exit(1)',
    `done = subprocess.run([${JSON.stringify(real)}, *args], input=(script or '').encode())`,
    'sys.exit(done.returncode)',
    '',
  ].join('\n'));
  chmodSync(stub, 0o755);
  await ns.mount(['--bind', stub, '/usr/sbin/nft']);
  return () => (existsSync(record) ? readFileSync(record, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as NftCall) : []);
}

/** Makes every iptables program (both xtables backends) fail and leave <dir>/xtables-ran: a test can tell none ran. */
export async function forbidXtables(ns: MountNs): Promise<string> {
  const marker = join(ns.dir, 'xtables-ran');
  const stub = join(ns.dir, 'no-xtables');
  writeFileSync(stub, ['#!/usr/bin/python3', 'import sys', `open(${JSON.stringify(marker)}, 'a').write(' '.join(sys.argv) + '\\n')`, 'sys.exit(1)', ''].join('\n'));
  chmodSync(stub, 0o755);
  for (const backend of ['nft', 'legacy']) await ns.mount(['--bind', stub, `/usr/sbin/xtables-${backend}-multi`]);
  return marker;
}

const RECORD_SEPARATOR = '\n#-- end of one restore --\n';

/** Each restore's input, as recorded by replaceXtables(..., { record: true }). */
export function restoreInputs(ns: MountNs): string[] {
  const file = join(ns.dir, 'restore-input');
  return existsSync(file) ? readFileSync(file, 'utf8').split(RECORD_SEPARATOR).slice(0, -1) : [];
}
