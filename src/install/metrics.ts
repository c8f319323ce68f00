import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Report } from '../podcache/protocol.ts';
import type { RepairResult, RepairSettings } from '../repair/controller.ts';

/** Where a round of the installer failed, with the result values Istio's installer counts under. */
export type InstallFailure = 'CREATE_KUBECONFIG_FAILURE' | 'CREATE_CNI_CONFIG_FAILURE';

/**
 * The node agent's Prometheus metrics (prom-client), served on the DaemonSet's HTTP port at
 * /metrics. Istio's names where Istio's installer and repair controller count the same thing; the
 * plugin's verbs are reported by the plugin itself over the pod cache's socket.
 */
export class InstallerMetrics {
  readonly registry = new Registry();
  private readonly installs = new Counter({
    name: 'istio_cni_installs_total',
    help: 'Times the installer wrote our entry into the runtime\'s network config (result SUCCESS: the first time and every re-insert), or a round failed (CREATE_KUBECONFIG_FAILURE, CREATE_CNI_CONFIG_FAILURE)',
    labelNames: ['result'],
    registers: [this.registry],
  });
  private readonly reinserts = new Counter({
    name: 'istio_cni_reinserts_total',
    help: 'Times our entry was put back after it had gone from the runtime\'s network config (the primary plugin rewrote its file, or another file started sorting first)',
    registers: [this.registry],
  });
  private readonly ready = new Gauge({
    name: 'istio_cni_install_ready',
    help: '1 while our entry is in the runtime\'s network config, else 0',
    registers: [this.registry],
  });
  private readonly repaired = new Counter({
    name: 'istio_cni_repair_pods_repaired_total',
    help: 'Pods that started without traffic capture, by repair action (type: label, delete) and how it went (result: success, skip = already gone or replaced, fail)',
    labelNames: ['type', 'result'],
    registers: [this.registry],
  });
  private readonly cacheAnswers = new Counter({
    name: 'istio_cni_pod_cache_answers_total',
    help: 'Pod lookups the node-local pod cache answered, by whether it held the pod (found: true, false)',
    labelNames: ['found'],
    registers: [this.registry],
  });
  private readonly verbs = new Counter({
    name: 'istio_cni_plugin_verbs_total',
    help: 'CNI verbs the plugin ran on this node, as it reported them: verb (ADD, DEL, CHECK), decision (redirect, pass, none) and code (the SPEC error code, 0 for success)',
    labelNames: ['verb', 'decision', 'code'],
    registers: [this.registry],
  });
  private readonly verbSeconds = new Histogram({
    name: 'istio_cni_plugin_verb_duration_seconds',
    help: 'How long a CNI verb took inside the plugin, from its start to its answer, by verb and decision',
    labelNames: ['verb', 'decision'],
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [this.registry],
  });

  constructor() {
    this.ready.set(0);
  }

  /** Our entry was written: `again` when it had been there before and was gone. */
  inserted(again: boolean): void {
    this.installs.inc({ result: 'SUCCESS' });
    if (again) this.reinserts.inc();
  }

  failed(step: InstallFailure): void {
    this.installs.inc({ result: step });
  }

  setReady(ready: boolean): void {
    this.ready.set(ready ? 1 : 0);
  }

  repair(type: RepairSettings['mode'], result: RepairResult): void {
    this.repaired.inc({ type, result });
  }

  cacheAnswered(found: boolean): void {
    this.cacheAnswers.inc({ found: String(found) });
  }

  pluginReported({ verb, decision, code, durationMs }: Report): void {
    this.verbs.inc({ verb, decision, code: String(code) });
    this.verbSeconds.observe({ verb, decision }, durationMs / 1000);
  }
}
