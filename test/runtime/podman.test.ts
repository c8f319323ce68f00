/**
 * The plugin under podman 4.3's CNI backend: `podman run --network <our network>` runs the conflist
 * ptp + host-local → istio-cni from the machine's root netns. podman names the container in
 * K8S_POD_NAME but sends no namespace, so the plugin must pass it through: an IP, no rules, no
 * API call.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, it } from 'vitest';
import * as h from '../harness/index.ts';
import { freeHostSubnet, hostLocalLeases, hostRoutesIn, restoreIpForwardAtCleanup } from '../harness/host-net.ts';
import { makePodman, type Podman } from '../harness/podman.ts';

afterAll(h.cleanupAll);

const IMAGE = 'localhost/icni-busybox:test';

interface LogLine {
  verb: string;
  containerId?: string;
  pod?: string;
  decision?: string;
  reason?: string;
  msg: string;
}

interface Inspect {
  Id: string;
  Name: string;
  NetworkSettings: { SandboxKey: string; Networks: Record<string, { IPAddress: string }> };
}

describe('under podman 4.3 (CNI backend)', () => {
  let api: h.FakeKubeApi;
  let conf: h.WrittenConflist;
  let subnet: string;
  let podman: Podman;

  const pluginLog = (containerId: string): LogLine[] =>
    readFileSync(conf.logFile!, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as LogLine)
      .filter((l) => l.containerId === containerId);

  beforeAll(async () => {
    api = await h.startFakeKubeApi();
    subnet = await freeHostSubnet();
    restoreIpForwardAtCleanup();
    conf = h.writeConflist({
      netName: 'icni-podman',
      subnet,
      kubeconfig: api.writeKubeconfig(undefined, { auth: 'token', caMode: 'data' }),
      iptablesBackend: 'nft',
    });
    podman = makePodman({ cniBinDir: h.makeCniPath(), cniConfDir: conf.confDir });
    await podman.importBusybox(IMAGE);
  });

  it('runs a container on our network: it gets its IP, no rules, and the plugin passes it through', async () => {
    // No --name: podman's own names (adjective_surname) are not Kubernetes names.
    const id = (await podman.runOk(['run', '--detach', '--network', conf.netName, '--cgroup-parent', podman.cgroupParent, IMAGE, '/bin/busybox', 'sleep', '300'])).trim();
    const [inspect] = JSON.parse(await podman.runOk(['inspect', '--format', 'json', id])) as Inspect[];
    assert.match(inspect!.Name, /_/, 'podman named it adjective_surname');
    const ip = inspect!.NetworkSettings.Networks[conf.netName]!.IPAddress;
    const netns = h.adoptNetns(inspect!.NetworkSettings.SandboxKey);
    assert.ok(ip.startsWith(subnet.replace(/0\/24$/, '')), `container IP ${ip} in ${subnet}`);
    assert.match(await podman.runOk(['exec', id, '/bin/busybox', 'ip', '-4', 'addr', 'show', 'eth0']), new RegExp(`inet ${ip.replaceAll('.', '\\.')}/24`));

    assert.deepEqual((await h.iptablesS(netns, 'nft')).filter((l) => l.includes('ISTIO_')), []);
    assert.deepEqual((await h.iptablesS(netns, 'legacy')).filter((l) => l.includes('ISTIO_')), []);
    const [add] = pluginLog(inspect!.Id);
    assert.deepEqual({ verb: add?.verb, pod: add?.pod, decision: add?.decision }, { verb: 'ADD', pod: `/${inspect!.Name}`, decision: 'pass' });
    assert.match(add!.reason!, /K8S_POD_NAMESPACE/);
    assert.equal(api.requests.length, 0, 'a pod without a namespace is decided without the API');

    await podman.runOk(['rm', '--force', '--time', '0', id]);
    assert.equal(existsSync(netns.path), false, 'podman removed the container netns');
    assert.deepEqual(await hostRoutesIn(subnet), []);
    assert.deepEqual(hostLocalLeases(conf.ipamDataDir, conf.netName), []);
    assert.deepEqual(pluginLog(inspect!.Id).map((l) => l.msg), ['ADD ok', 'DEL ok']);
  });
});
