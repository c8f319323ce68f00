import assert from 'node:assert/strict';
import { describe, it } from 'vitest';
import { parseCniArgs } from '../../src/cni/args.ts';
import { parseConfig } from '../../src/cni/config.ts';
import { readCommand, readInvocation } from '../../src/cni/env.ts';
import { CniError } from '../../src/cni/errors.ts';
import { passThroughResult, versionResult } from '../../src/cni/result.ts';

function codeOf(fn: () => unknown): number | undefined {
  try {
    fn();
  } catch (err) {
    return err instanceof CniError ? err.code : -1;
  }
  return undefined;
}

describe('CNI_ARGS', () => {
  it('reads the Kubernetes keys', () => {
    assert.deepEqual(parseCniArgs('IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc123;K8S_POD_UID=1-2-3'), {
      ignoreUnknown: true,
      podName: 'web-0',
      podNamespace: 'default',
      infraContainerId: 'abc123',
      podUid: '1-2-3',
    });
  });
  it('rejects unknown keys unless IgnoreUnknown is true', () => {
    assert.equal(codeOf(() => parseCniArgs('FOO=bar')), 4);
    assert.equal(codeOf(() => parseCniArgs('IgnoreUnknown=false;FOO=bar')), 4);
    assert.equal(codeOf(() => parseCniArgs('IgnoreUnknown=True;FOO=bar')), undefined);
  });
  it('rejects malformed pairs and names that are not Kubernetes names', () => {
    assert.equal(codeOf(() => parseCniArgs('K8S_POD_NAME')), 4);
    assert.equal(codeOf(() => parseCniArgs('K8S_POD_NAME=../../secrets')), 4);
    assert.equal(codeOf(() => parseCniArgs('K8S_POD_NAMESPACE=Default')), 4);
    assert.equal(codeOf(() => parseCniArgs('IgnoreUnknown=maybe')), 4);
    assert.equal(codeOf(() => parseCniArgs('K8S_POD_NAMESPACE=default;K8S_POD_NAME=quirky_hopper')), 4);
  });
  it('accepts a container name without a namespace (podman), which is never looked up', () => {
    assert.equal(parseCniArgs('IgnoreUnknown=1;K8S_POD_NAME=quirky_hopper').podName, 'quirky_hopper');
  });
});

describe('environment', () => {
  it('names every missing variable for ADD', () => {
    try {
      readInvocation('ADD', { CNI_COMMAND: 'ADD' });
      assert.fail('expected an error');
    } catch (err) {
      assert.ok(err instanceof CniError);
      assert.equal(err.code, 4);
      assert.equal(err.details, 'missing or invalid: CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME');
    }
  });
  it('lets DEL go without a netns', () => {
    assert.equal(readInvocation('DEL', { CNI_CONTAINERID: 'c1', CNI_IFNAME: 'eth0' }).netns, '');
  });
  it('rejects an unknown verb', () => {
    assert.equal(codeOf(() => readCommand({ CNI_COMMAND: 'EXPLODE' })), 4);
    assert.equal(codeOf(() => readCommand({})), 4);
  });
});

describe('config', () => {
  it('reads the istio-cni drop-in and ignores unknown fields', () => {
    const config = parseConfig(
      JSON.stringify({
        cniVersion: '1.0.0',
        type: 'istio-cni',
        log_level: 'info',
        something_new: true,
        kubernetes: { kubeconfig: '/etc/cni/net.d/ZZZ-istio-cni-kubeconfig', cni_bin_dir: '/opt/cni/bin', exclude_namespaces: ['kube-system', 'istio-system'] },
      }),
    );
    assert.equal(config.kubeconfigPath, '/etc/cni/net.d/ZZZ-istio-cni-kubeconfig');
    assert.deepEqual([...config.excludeNamespaces], ['kube-system', 'istio-system']);
    assert.equal(config.logLevel, 'info');
  });
  it('reads the current Istio names', () => {
    const config = parseConfig(
      JSON.stringify({ cniVersion: '1.1.0', type: 'istio-cni', plugin_log_level: 'none', exclude_namespaces: ['a'], cni_agent_run_dir: '/var/run/istio-cni' }),
    );
    assert.equal(config.kubeconfigPath, '/var/run/istio-cni/istio-cni-kubeconfig');
    assert.deepEqual([...config.excludeNamespaces], ['a']);
    assert.equal(config.logLevel, 'silent');
    const nftables = (doc: object) => parseConfig(JSON.stringify({ cniVersion: '1.0.0', ...doc })).iptablesBackend;
    assert.equal(nftables({ native_nftables: true }), 'nftables');
    assert.equal(nftables({ native_nftables: true, iptables_backend: 'legacy' }), 'nftables');
    assert.equal(nftables({ native_nftables: false, iptables_backend: 'legacy' }), 'legacy');
    assert.equal(nftables({ iptables_backend: 'nftables' }), 'nftables');
    assert.equal(nftables({}), 'auto');
  });
  it('maps each kind of bad input to its SPEC code', () => {
    assert.equal(codeOf(() => parseConfig('{"cniVersion":')), 6);
    assert.equal(codeOf(() => parseConfig('[]')), 6);
    assert.equal(codeOf(() => parseConfig('{"cniVersion":"0.2.0"}')), 1);
    assert.equal(codeOf(() => parseConfig('{}')), 1);
    assert.equal(codeOf(() => parseConfig('{"cniVersion":"1.0.0","log_file":"relative.log"}')), 7);
    assert.equal(codeOf(() => parseConfig('{"cniVersion":"1.0.0","iptables_backend":"ebpf"}')), 7);
    assert.equal(codeOf(() => parseConfig('{"cniVersion":"1.0.0","native_nftables":"yes"}')), 7);
  });
});

describe('results', () => {
  it('passes prevResult through unchanged', () => {
    const prevResult = { cniVersion: '1.0.0', interfaces: [{ name: 'eth0' }], ips: [{ address: '10.0.0.2/24', interface: 0 }], dns: {} };
    const config = parseConfig(JSON.stringify({ cniVersion: '1.0.0', prevResult }));
    assert.deepEqual(passThroughResult(config), prevResult);
  });
  it('answers an empty result of the configured version without prevResult', () => {
    assert.deepEqual(passThroughResult(parseConfig('{"cniVersion":"0.3.1"}')), { cniVersion: '0.3.1' });
  });
  it('echoes the requested version in VERSION', () => {
    assert.equal(versionResult('{"cniVersion":"0.4.0"}').cniVersion, '0.4.0');
    assert.equal(versionResult('garbage').cniVersion, '1.1.0');
    assert.deepEqual(versionResult('').supportedVersions, ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0']);
  });
});
