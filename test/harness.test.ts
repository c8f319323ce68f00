// Smoke test of the e2e harness itself, WITHOUT the istio-cni plugin:
// netns topology, the libcni driver with Debian's ptp + host-local, traffic + SO_ORIGINAL_DST,
// iptables helpers, and the fake kube-apiserver. Needs root.
//
//   npm test -- test/harness.test.ts
import assert from 'node:assert/strict';
import { chmodSync, existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { afterAll, beforeAll, describe, test } from 'vitest';
import { parse as yamlParse } from 'yaml';
import { buildCnitool, runCni, runPlugin, type RunCniOptions } from './harness/cnitool.ts';
import { DEBIAN_CNI_DIR, makeCniPath, writeConflist, type WrittenConflist } from './harness/conflist.ts';
import {
  injectedPod,
  plainPod,
  startFakeKubeApi,
  SIDECAR_STATUS,
  type FakeKubeApi,
  type KubeconfigOptions,
} from './harness/kube-api.ts';
import {
  createNetns,
  execInNetnsOk,
  ipAddr,
  iptablesIsEmpty,
  iptablesS,
  iptablesSave,
  listNetns,
  listOwnNetns,
  makeTopology,
  normalizeIptablesSave,
  type IptablesBackend,
  type Topology,
} from './harness/netns.ts';
import { makeE2E } from './harness/e2e.ts';
import { cleanupAll, makeTempDir } from './harness/proc.ts';
import { connectFrom, probe, startOrigDstListener } from './harness/traffic.ts';

const SUBNET_PREFIX = '10.200.0.';
const GATEWAY = '10.200.0.1';

afterAll(async () => {
  await cleanupAll();
});

describe('libcni driver + ptp/host-local in a test topology', () => {
  let topo: Topology;
  let conf: WrittenConflist;
  let cniPath: string;
  let cacheDir: string;
  let base: RunCniOptions;
  let podIP = '';

  beforeAll(async () => {
    await buildCnitool();
    topo = await makeTopology({ tag: 'smoke' });
    conf = writeConflist({ withIstio: false, netName: 'smoke-ptp' });
    cniPath = makeCniPath({ withoutIstio: true });
    cacheDir = makeTempDir('icni-cache-');
    base = {
      netName: conf.netName,
      hostNetns: topo.node,
      netnsPath: topo.pod.path,
      confDir: conf.confDir,
      cniPath,
      cacheDir,
      cniArgs: { IgnoreUnknown: '1', K8S_POD_NAMESPACE: 'default', K8S_POD_NAME: 'smoke' },
    };
  });

  test('the written conflist is ptp + host-local with a private dataDir, cniVersion 1.0.0', () => {
    const c = JSON.parse(readFileSync(conf.path, 'utf8'));
    assert.equal(c.cniVersion, '1.0.0');
    assert.deepEqual(c.plugins.map((p: { type: string }) => p.type), ['ptp']);
    assert.equal(c.plugins[0].ipam.dataDir, conf.ipamDataDir);
    assert.ok(conf.ipamDataDir.startsWith('/tmp/'));
  });

  test('version: the driver reports ptp\'s VERSION answer', async () => {
    const r = await runCni('version', { ...base, netName: 'ptp' });
    assert.equal(r.code, 0, r.stderr);
    assert.ok((r.json as { supportedVersions: string[] }).supportedVersions.includes('1.0.0'));
  });

  test('raw VERSION call like podman makes (CNI_NETNS=dummy)', async () => {
    const r = await runPlugin(`${DEBIAN_CNI_DIR}/ptp`, { command: 'VERSION', netns: 'dummy', stdin: { cniVersion: '1.0.0' } });
    assert.equal(r.code, 0, r.stderr);
    assert.ok((r.json as { supportedVersions: string[] }).supportedVersions.includes('1.0.0'));
  });

  test('a plugin error comes back as a CNI error with code and msg', async () => {
    const r = await runCni('add', { ...base, cniArgs: { K8S_POD_NAME: 'smoke' } }); // no IgnoreUnknown
    assert.equal(r.code, 1);
    assert.match(r.stderr, /plugin type="ptp" failed \(add\): ARGS: unknown args/);
    assert.ok(r.error);
    assert.match(r.error.msg, /unknown args/);
    assert.equal(typeof r.error.code, 'number');
    assert.deepEqual(await ipAddr(topo.pod, 'eth0'), []);
  });

  test('add returns a 1.0.0 result with an IP in the subnet; pod has eth0 with it', async () => {
    const r = await runCni('add', base);
    assert.equal(r.code, 0, r.stderr);
    const res = r.json as {
      cniVersion: string;
      interfaces: Array<{ name: string; sandbox?: string }>;
      ips: Array<{ address: string; gateway: string; interface: number }>;
    };
    assert.equal(res.cniVersion, '1.0.0');
    const ip = res.ips[0]!;
    assert.ok(ip.address.startsWith(SUBNET_PREFIX), ip.address);
    assert.equal(ip.gateway, GATEWAY);
    assert.equal(res.interfaces[ip.interface]!.sandbox, topo.pod.path);
    podIP = ip.address.split('/')[0]!;

    const eth0 = await ipAddr(topo.pod, 'eth0');
    assert.equal(eth0.length, 1);
    assert.ok(eth0[0]!.addr_info.some((a) => a.local === podIP && a.prefixlen === 24));
    // The host side of the veth is in the test's node netns, holding the gateway address.
    const nodeLinks = await ipAddr(topo.node);
    assert.ok(nodeLinks.some((l) => l.addr_info.some((a) => a.local === GATEWAY)));
    // libcni cached the result in the test's cache dir, not /var/lib/cni.
    assert.equal(readdirSync(`${cacheDir}/results`).length, 1);
    const cached = await runCni('cached', base);
    assert.deepEqual((cached.json as { ips: unknown }).ips, res.ips);
  });

  test('pod -> gateway (listener in the node netns) connects', async () => {
    const p = await probe({ listenNs: topo.node, listenHost: GATEWAY, connectNs: topo.pod, connectHost: GATEWAY });
    assert.equal(p.connect.connected, true, p.connect.error);
    assert.equal(p.connect.reply, 'origdst-ok\n');
    assert.ok(p.listener);
    assert.equal(p.listener.peer.split(':')[0], podIP);
    assert.equal(p.listener.received, 'hello\n');
  });

  test('node -> pod IP and pod loopback, also as uid 1337', async () => {
    const a = await probe({ listenNs: topo.pod, connectNs: topo.node, connectHost: podIP });
    assert.equal(a.connect.connected, true, a.connect.error);
    const b = await probe({ listenNs: topo.pod, listenHost: '127.0.0.1', connectNs: topo.pod, connectHost: '127.0.0.1', uid: 1337 });
    assert.equal(b.connect.connected, true, b.connect.error);
    assert.equal(b.connect.uid, 1337);
    assert.equal(b.connect.gid, 1337);
  });

  test('a connection to a closed port is refused, not hung', async () => {
    const r = await connectFrom(topo.pod, { host: GATEWAY, port: 9, timeoutMs: 1000 });
    assert.equal(r.connected, false);
    assert.match(r.error ?? '', /ConnectionRefused/);
  });

  test('traffic helpers refuse targets outside the test namespaces', async () => {
    await assert.rejects(connectFrom(topo.pod, { host: '192.0.2.1', port: 80 }), /refusing/);
  });

  for (const backend of ['nft', 'legacy'] as IptablesBackend[]) {
    test(`SO_ORIGINAL_DST through a test-made REDIRECT rule (iptables-${backend})`, async () => {
      const listener = await startOrigDstListener(topo.pod, { host: '127.0.0.1', timeoutMs: 5000 });
      const rule = ['-t', 'nat', 'OUTPUT', '-p', 'tcp', '-d', GATEWAY, '--dport', '9999', '-j', 'REDIRECT', '--to-ports', String(listener.port)];
      const bin = `/usr/sbin/iptables-${backend}`;
      await execInNetnsOk(topo.pod, [bin, rule[0]!, rule[1]!, '-A', ...rule.slice(2)]);
      try {
        const lines = await iptablesS(topo.pod, backend);
        assert.ok(lines.includes(`-A OUTPUT -d ${GATEWAY}/32 -p tcp -m tcp --dport 9999 -j REDIRECT --to-ports ${listener.port}`), lines.join('\n'));
        const save = normalizeIptablesSave(await iptablesSave(topo.pod, backend));
        assert.match(save, /^\*nat$/m);
        assert.match(save, /^COMMIT$/m);
        const c = await connectFrom(topo.pod, { host: GATEWAY, port: 9999, uid: 1337 });
        assert.equal(c.connected, true, c.error);
        const seen = await listener.result;
        assert.ok(seen);
        assert.equal(seen.original_dst, `${GATEWAY}:9999`);
        assert.equal(seen.local, `127.0.0.1:${listener.port}`);
      } finally {
        await listener.stop();
        await execInNetnsOk(topo.pod, [bin, rule[0]!, rule[1]!, '-D', ...rule.slice(2)]);
      }
      assert.equal(await iptablesIsEmpty(topo.pod, backend), true);
    });
  }

  test('check succeeds (cniVersion 1.0.0)', async () => {
    const r = await runCni('check', base);
    assert.equal(r.code, 0, r.stderr);
  });

  test('del removes the veth, the lease and the cache; a second del is fine', async () => {
    const r = await runCni('del', base);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(await ipAddr(topo.pod, 'eth0'), []);
    const nodeLinks = await ipAddr(topo.node);
    assert.deepEqual(nodeLinks.map((l) => l.ifname), ['lo']);
    assert.ok(!existsSync(`${conf.ipamDataDir}/${conf.netName}/${podIP}`));
    assert.equal(readdirSync(`${cacheDir}/results`).length, 0);
    const again = await runCni('del', base);
    assert.equal(again.code, 0, again.stderr);
  });

  test('destroying the topology leaves no icni- netns of this process', async () => {
    await topo.destroy();
    assert.deepEqual(await listOwnNetns(), []);
    const names = await listNetns();
    assert.ok(!names.includes(topo.node.name) && !names.includes(topo.pod.name));
  });
});

describe('what a chained plugin receives from libcni (a dump plugin after ptp)', () => {
  // Records stdin + env of every call into $DUMP_DIR and passes prevResult through on ADD.
  const DUMP_PLUGIN = [
    '#!/usr/bin/python3',
    'import json, os, sys',
    'stdin = sys.stdin.read()',
    'cmd = os.environ.get("CNI_COMMAND", "")',
    'd = os.environ["DUMP_DIR"]',
    'n = len(os.listdir(d))',
    'open(os.path.join(d, "%03d-%s.json" % (n, cmd)), "w").write(json.dumps({"stdin": json.loads(stdin) if stdin else None, "env": dict(os.environ)}))',
    'if cmd == "ADD":',
    '    conf = json.loads(stdin)',
    '    print(json.dumps(conf.get("prevResult") or {"cniVersion": conf["cniVersion"]}))',
    'elif cmd == "VERSION":',
    '    print(json.dumps({"cniVersion": "1.0.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0"]}))',
  ].join('\n');

  test('stdin carries name, cniVersion, prevResult, filtered runtimeConfig; env has the CNI_* vars', async () => {
    const binDir = makeTempDir('icni-dump-');
    writeFileSync(`${binDir}/dump`, DUMP_PLUGIN + '\n');
    chmodSync(`${binDir}/dump`, 0o755);
    const dumpDir = makeTempDir('icni-dumps-');
    const e = await makeE2E({
      tag: 'dump',
      withApi: false,
      conflist: { withIstio: false, extraPlugins: [{ type: 'dump', capabilities: { 'io.kubernetes.cri.pod-annotations': true }, custom: { a: 1 } }] },
    });
    const cniPath = [e.cniPath, binDir];
    const capArgs = { 'io.kubernetes.cri.pod-annotations': { 'sidecar.istio.io/inject': 'true' }, portMappings: [] };
    const ref = { pod: 'dumped', namespace: 'default' };
    const add = await e.run('add', ref, { cniPath, capArgs, env: { DUMP_DIR: dumpDir } });
    assert.equal(add.code, 0, add.stderr);
    const del1 = await e.run('del', ref, { cniPath, env: { DUMP_DIR: dumpDir } }); // no CAP_ARGS this time
    assert.equal(del1.code, 0, del1.stderr);
    const del2 = await e.run('del', ref, { cniPath, env: { DUMP_DIR: dumpDir } });
    assert.equal(del2.code, 0, del2.stderr);

    const files = readdirSync(dumpDir).sort();
    assert.deepEqual(files.map((f) => f.slice(4)), ['ADD.json', 'DEL.json', 'DEL.json']);
    const [addCall, delCall, del2Call] = files.map((f) => JSON.parse(readFileSync(`${dumpDir}/${f}`, 'utf8')));
    // stdin of the chained plugin
    assert.equal(addCall.stdin.name, e.conf.netName);
    assert.equal(addCall.stdin.cniVersion, '1.0.0');
    assert.equal(addCall.stdin.type, 'dump');
    assert.deepEqual(addCall.stdin.custom, { a: 1 });
    assert.deepEqual(addCall.stdin.runtimeConfig, { 'io.kubernetes.cri.pod-annotations': { 'sidecar.istio.io/inject': 'true' } });
    assert.deepEqual(addCall.stdin.prevResult.ips, (add.json as { ips: unknown }).ips);
    assert.equal(addCall.stdin.prevResult.interfaces[1].sandbox, e.topo.pod.path);
    // environment
    const env = addCall.env;
    assert.equal(env.CNI_COMMAND, 'ADD');
    assert.equal(env.CNI_NETNS, e.topo.pod.path);
    assert.equal(env.CNI_IFNAME, 'eth0');
    assert.match(env.CNI_CONTAINERID, /^cnitool-[0-9a-f]{20}$/);
    assert.equal(env.CNI_PATH, cniPath.join(':'));
    assert.match(env.CNI_ARGS, /^IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=dumped;K8S_POD_INFRA_CONTAINER_ID=cnitool-[0-9a-f]{20};K8S_POD_UID=/);
    assert.equal(env.DUMP_DIR, dumpDir, 'the driver\'s environment is inherited');
    for (const k of ['NETCONFPATH', 'CAP_ARGS', 'CNI_CACHE_DIR', 'NODE_EXTRA_CA_CERTS']) assert.equal(env[k], undefined, k);
    // DEL gets the cached ADD result as prevResult; after the cache is gone, none.
    assert.deepEqual(delCall.stdin.prevResult.ips, addCall.stdin.prevResult.ips);
    // ...but libcni 1.1.2 does not restore CAP_ARGS from its cache: runtimeConfig is only what the caller passes.
    assert.equal(delCall.stdin.runtimeConfig, undefined);
    assert.equal(del2Call.stdin.prevResult, undefined);
    assert.equal(del2Call.stdin.runtimeConfig, undefined);
  });
});

describe('fake kube-apiserver', () => {
  let api: FakeKubeApi;

  beforeAll(async () => {
    api = await startFakeKubeApi({ pods: [injectedPod('web-0', 'default'), plainPod('plain-0', 'default')] });
  });

  interface Creds {
    token?: string;
    cert?: string | Buffer;
    key?: string | Buffer;
    ca?: string | Buffer;
    insecure?: boolean;
  }

  function get(path: string, creds: Creds, server = api.url): Promise<{ status: number; body: any }> {
    const u = new URL(path, server);
    return new Promise((resolve, reject) => {
      const headers: Record<string, string> = { Accept: 'application/json' };
      if (creds.token !== undefined) headers.Authorization = `Bearer ${creds.token}`;
      const req = request(
        {
          host: u.hostname,
          port: u.port,
          path: u.pathname,
          method: 'GET',
          headers,
          ca: creds.insecure ? undefined : (creds.ca ?? api.pki.caPem),
          rejectUnauthorized: !creds.insecure,
          cert: creds.cert,
          key: creds.key,
          agent: false,
        },
        (res) => {
          let data = '';
          res.setEncoding('utf8').on('data', (d: string) => (data += d));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(data) }));
        },
      );
      req.on('error', reject);
      req.end();
    });
  }

  test('serves an injected pod with token auth', async () => {
    api.clearRequests();
    const r = await get('/api/v1/namespaces/default/pods/web-0', { token: api.token });
    assert.equal(r.status, 200);
    assert.equal(r.body.kind, 'Pod');
    assert.equal(r.body.apiVersion, 'v1');
    assert.equal(r.body.metadata.name, 'web-0');
    assert.deepEqual(JSON.parse(r.body.metadata.annotations['sidecar.istio.io/status']), SIDECAR_STATUS);
    assert.equal(r.body.metadata.labels['security.istio.io/tlsMode'], 'istio');
    const proxy = r.body.spec.containers.find((c: { name: string }) => c.name === 'istio-proxy');
    assert.equal(proxy.securityContext.runAsUser, 1337);
    assert.equal(proxy.ports[0].containerPort, 15090);
    assert.equal(r.body.spec.initContainers[0].name, 'istio-validation');
    assert.equal(api.podRequests('default', 'web-0').length, 1);
    assert.equal(api.requests[0]!.auth, 'token');
  });

  test('rejects a wrong token and no credentials with a 401 Status', async () => {
    const bad = await get('/api/v1/namespaces/default/pods/web-0', { token: 'nope' });
    assert.equal(bad.status, 401);
    assert.deepEqual(
      { kind: bad.body.kind, status: bad.body.status, reason: bad.body.reason, code: bad.body.code },
      { kind: 'Status', status: 'Failure', reason: 'Unauthorized', code: 401 },
    );
    const none = await get('/api/v1/namespaces/default/pods/web-0', {});
    assert.equal(none.status, 401);
    assert.equal(api.requests.at(-1)!.auth, 'none');
  });

  test('client certificate auth: CA-signed accepted, rogue rejected', async () => {
    const ok = await get('/api/v1/namespaces/default/pods/plain-0', { cert: readFileSync(api.pki.clientCert), key: readFileSync(api.pki.clientKey) });
    assert.equal(ok.status, 200);
    assert.equal(ok.body.metadata.annotations, undefined);
    assert.equal(api.requests.at(-1)!.auth, 'clientCert');
    assert.equal(api.requests.at(-1)!.clientCN, 'system:node:test-node');
    const rogue = await get('/api/v1/namespaces/default/pods/plain-0', { cert: readFileSync(api.pki.rogueClientCert), key: readFileSync(api.pki.rogueClientKey) });
    assert.equal(rogue.status, 401);
    assert.equal(api.requests.at(-1)!.auth, 'badClientCert');
  });

  test('missing pod -> 404 NotFound Status', async () => {
    const r = await get('/api/v1/namespaces/default/pods/ghost', { token: api.token });
    assert.equal(r.status, 404);
    assert.equal(r.body.kind, 'Status');
    assert.equal(r.body.reason, 'NotFound');
    assert.equal(r.body.code, 404);
    assert.equal(r.body.message, 'pods "ghost" not found');
    assert.deepEqual(r.body.details, { name: 'ghost', kind: 'pods' });
  });

  test('forced status and overrides', async () => {
    api.behavior.podStatus = 503;
    const r = await get('/api/v1/namespaces/default/pods/web-0', { token: api.token });
    assert.equal(r.status, 503);
    delete api.behavior.podStatus;
    api.setPod(injectedPod('web-1', 'prod', { metadata: { annotations: { 'sidecar.istio.io/status': null, 'sidecar.istio.io/inject': 'false' } } }));
    const p = await get('/api/v1/namespaces/prod/pods/web-1', { token: api.token });
    assert.equal(p.status, 200);
    assert.equal(p.body.metadata.annotations['sidecar.istio.io/status'], undefined);
    assert.equal(p.body.metadata.annotations['sidecar.istio.io/inject'], 'false');
    assert.equal(p.body.metadata.annotations['istio.io/rev'], 'default');
  });

  test('exposeIn: reachable at the same URL from inside a test netns (and only then)', async () => {
    const ns = await createNetns({ tag: 'api' });
    const py = [
      'import http.client, ssl, sys, json',
      'ctx = ssl.create_default_context(cafile=sys.argv[2])',
      'c = http.client.HTTPSConnection("127.0.0.1", int(sys.argv[1]), context=ctx, timeout=3)',
      'try:',
      '    c.request("GET", "/api/v1/namespaces/default/pods/web-0", headers={"Authorization": "Bearer " + sys.argv[3]})',
      '    r = c.getresponse()',
      '    print(json.dumps({"status": r.status, "name": json.loads(r.read())["metadata"]["name"]}))',
      'except OSError as e:',
      '    print(json.dumps({"error": type(e).__name__}))',
    ].join('\n');
    const argv = ['/usr/bin/python3', '-c', py, String(api.port), api.pki.caCert, api.token];
    const before = JSON.parse((await execInNetnsOk(ns, argv)).stdout);
    assert.deepEqual(before, { error: 'ConnectionRefusedError' });
    await api.exposeIn(ns);
    await api.exposeIn(ns); // idempotent
    api.clearRequests();
    const after = JSON.parse((await execInNetnsOk(ns, argv)).stdout);
    assert.deepEqual(after, { status: 200, name: 'web-0' });
    assert.equal(api.podRequests('default', 'web-0').length, 1);
  });

  const modes: KubeconfigOptions[] = [
    { auth: 'token', caMode: 'data' },
    { auth: 'tokenFile', caMode: 'file' },
    { auth: 'clientCert', caMode: 'data' },
    { auth: 'clientCert', caMode: 'file', clientCertMode: 'file' },
    { auth: 'token', caMode: 'insecure' },
  ];
  for (const m of modes) {
    test(`kubeconfig ${JSON.stringify(m)} is valid YAML whose credentials work`, async () => {
      const dir = makeTempDir('icni-kc-');
      const path = api.writeKubeconfig(dir, { ...m, decoyContext: true });
      const kc = yamlParse(readFileSync(path, 'utf8'));
      assert.equal(kc.kind, 'Config');
      const ctx = kc.contexts.find((c: { name: string }) => c.name === kc['current-context']).context;
      const cluster = kc.clusters.find((c: { name: string }) => c.name === ctx.cluster).cluster;
      const user = kc.users.find((u: { name: string }) => u.name === ctx.user).user;
      assert.equal(cluster.server, api.url);
      const creds: Creds = {};
      if (cluster['certificate-authority-data']) creds.ca = Buffer.from(cluster['certificate-authority-data'], 'base64');
      else if (cluster['certificate-authority']) creds.ca = readFileSync(cluster['certificate-authority']);
      else creds.insecure = cluster['insecure-skip-tls-verify'] === true;
      if (user.token) creds.token = user.token;
      if (user.tokenFile) creds.token = readFileSync(user.tokenFile, 'utf8').trim();
      if (user['client-certificate-data']) {
        creds.cert = Buffer.from(user['client-certificate-data'], 'base64');
        creds.key = Buffer.from(user['client-key-data'], 'base64');
      }
      if (user['client-certificate']) {
        creds.cert = readFileSync(user['client-certificate']);
        creds.key = readFileSync(user['client-key']);
      }
      const r = await get('/api/v1/namespaces/default/pods/web-0', creds, cluster.server);
      assert.equal(r.status, 200);
      const expected = m.auth === 'clientCert' ? 'clientCert' : 'token';
      assert.equal(api.requests.at(-1)!.auth, expected);
    });
  }
});
