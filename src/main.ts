import { readFileSync, writeSync } from 'node:fs';
import type { CniArgs } from './cni/args.ts';
import { parseConfig, versionOf, type PluginConfig } from './cni/config.ts';
import { readCommand, readInvocation, type Command, type Invocation } from './cni/env.ts';
import { CniError, ErrorCode, toSpecError } from './cni/errors.ts';
import { addressesOf, passThroughResult, versionResult } from './cni/result.ts';
import { versionAtLeast, type CniVersion } from './cni/versions.ts';
import { monotonicMs } from './clock.ts';
import { probeApi } from './kube/client.ts';
import { loadKubeconfig } from './kube/kubeconfig.ts';
import { decide, type Decided } from './kube/lookup.ts';
import { createLogger, type Logger } from './log.ts';
import { applyCapture, captureDifferences, removeCapture, resolveCaptureBackend } from './netns/capture.ts';
import { stopExecuting } from './netns/exec.ts';
import { openPodNetns, type PodNetns } from './netns/netns.ts';
import { reportOutcome } from './podcache/client.ts';
import { InvalidCaptureValue } from './redirect/errors.ts';
import { captureSettingsFor } from './redirect/profile.ts';
import { DEFAULT_SETTINGS, type RedirectSettings } from './redirect/settings.ts';

/** How many differences CHECK's error names. */
const MAX_DIFFERENCES_NAMED = 50;

/** What one invocation did, written as the verb's single log line. */
type Summary = Record<string, unknown>;

interface VerbContext {
  config: PluginConfig;
  invocation: Invocation;
  summary: Summary;
}

async function cmdAdd({ config, invocation, summary }: VerbContext): Promise<object> {
  const decision = await decide(config, invocation.args);
  noteDecision(summary, decision);
  if (decision.redirect) {
    // Validated before the netns is touched: a bad annotation changes nothing.
    const settings = captureSettings(config, decision);
    summary.rules = await applyCapture(requireNetns(invocation.netns), resolveCaptureBackend(config.iptablesBackend), settings);
  }
  return passThroughResult(config);
}

async function cmdDel({ config, invocation, summary }: VerbContext): Promise<undefined> {
  // The sandbox may be gone already (containerd's second DEL has no netns): nothing left to undo.
  const netns = invocation.netns === '' ? undefined : openPodNetns(invocation.netns);
  if (netns === undefined) {
    summary.rules = 'netns gone';
    return;
  }
  // DEL makes no API call: TPROXY's mark and route table are fixed, so the defaults find them.
  const removed = await removeCapture(netns, resolveCaptureBackend(config.iptablesBackend), DEFAULT_SETTINGS);
  summary.rules = removed ? 'removed' : 'none';
}

async function cmdCheck({ config, invocation, summary }: VerbContext): Promise<undefined> {
  requireVersion(config.cniVersion, '0.4.0', 'CHECK');
  const decision = await decide(config, invocation.args);
  noteDecision(summary, decision);
  const settings = decision.redirect ? captureSettings(config, decision) : undefined;
  const found = await captureDifferences(requireNetns(invocation.netns), resolveCaptureBackend(config.iptablesBackend), settings);
  if (found.length > 0) {
    // A netns may hold any number of rules (a pod with NET_ADMIN owns it): name the first few.
    const more = found.length > MAX_DIFFERENCES_NAMED ? `; and ${found.length - MAX_DIFFERENCES_NAMED} more` : '';
    throw new CniError(ErrorCode.RulesMismatch, 'traffic capture rules differ from what the pod needs', found.slice(0, MAX_DIFFERENCES_NAMED).join('; ') + more);
  }
  summary.rules = 'as expected';
}

/** Ready only when ADD can work: the kubeconfig loads and the API server answers with its credentials. */
async function cmdStatus({ config, summary }: VerbContext): Promise<undefined> {
  requireVersion(config.cniVersion, '1.1.0', 'STATUS');
  let problem: string | undefined;
  try {
    problem = await probeApi(loadKubeconfig(config.kubeconfigPath), config.podLookup.attemptTimeoutMs);
  } catch (err) {
    problem = err instanceof CniError ? `${err.message}: ${err.details}` : String(err);
  }
  if (problem !== undefined) throw new CniError(ErrorCode.PluginNotAvailable, 'istio-cni cannot decide about pods yet', problem);
  summary.api = 'answers';
}

/** The plugin keeps no state outside the pod's netns, which goes away with the pod: nothing to collect. */
async function cmdGc({ config, summary }: VerbContext): Promise<undefined> {
  requireVersion(config.cniVersion, '1.1.0', 'GC');
  summary.collected = 0;
}

const VERBS: Record<Exclude<Command, 'VERSION'>, (context: VerbContext) => Promise<object | undefined>> = {
  ADD: cmdAdd,
  DEL: cmdDel,
  CHECK: cmdCheck,
  STATUS: cmdStatus,
  GC: cmdGc,
};

function requireVersion(version: CniVersion, minimum: CniVersion, verb: string): void {
  if (!versionAtLeast(version, minimum)) {
    throw new CniError(ErrorCode.IncompatibleVersion, 'incompatible CNI version', `${verb} needs cniVersion ${minimum} or later, got ${version}`);
  }
}

function requireNetns(path: string): PodNetns {
  const netns = openPodNetns(path);
  if (netns === undefined) throw new CniError(ErrorCode.InvalidNetns, 'invalid CNI_NETNS', `${path} does not exist`);
  return netns;
}

function captureSettings(config: PluginConfig, decision: Extract<Decided, { redirect: true }>): RedirectSettings {
  return captureSettingsFor(
    { annotations: decision.annotations, proxy: decision.proxy, podIps: addressesOf(config.prevResult), defaults: config.capture },
    config.rulesProfile,
  );
}

/** A capture value the rule core refuses (reading the pod, or building its rules) is the protocol's error 106. */
function protocolError(err: unknown): unknown {
  return err instanceof InvalidCaptureValue ? new CniError(ErrorCode.InvalidAnnotation, err.message, err.details) : err;
}

function noteDecision(summary: Summary, decision: Decided): void {
  summary.decision = decision.redirect ? 'redirect' : 'pass';
  summary.reason = decision.reason;
  summary.apiAttempts = decision.apiAttempts;
  if (decision.podSource !== undefined) summary.podSource = decision.podSource;
  if (decision.cacheMiss !== undefined) summary.cacheMiss = decision.cacheMiss;
}

function podOf(args: CniArgs): string | undefined {
  return args.podName === undefined ? undefined : `${args.podNamespace ?? ''}/${args.podName}`;
}

function readStdin(): string {
  try {
    return readFileSync(0, 'utf8');
  } catch (err) {
    // Closed or absent stdin reads as empty input; the config parser then reports it.
    if ((err as NodeJS.ErrnoException).code === 'EAGAIN' || (err as NodeJS.ErrnoException).code === 'EOF') return '';
    throw err;
  }
}

/**
 * All of `text` to stdout with write(2). Not process.stdout: its stream machinery is the costliest
 * thing a start of the executable would load (~7-14 ms of CPU under Bun, build/README.md).
 */
function writeOut(text: string): void {
  const bytes = Buffer.from(text);
  for (let done = 0; done < bytes.length; ) done += writeSync(1, bytes, done);
}

/** One CNI invocation: environment and stdin in, a result or a SPEC error out, one log line, one report. */
export async function run(env: NodeJS.ProcessEnv = process.env): Promise<void> {
  const started = monotonicMs();
  const summary: Summary = {};
  let log: Logger | undefined;
  let config: PluginConfig | undefined;
  let stdin = '';
  /** The SPEC error code the runtime got (0: success) and how long the verb took, as logged and reported. */
  let code = 0;
  let durationMs = 0;
  // stdout carries one answer: the verb's, or SIGTERM's when that comes first.
  let answered = false;
  const print = (value: object) => {
    if (answered) return;
    answered = true;
    writeOut(`${JSON.stringify(value)}\n`);
  };
  const fail = (thrown: unknown) => {
    const err = protocolError(thrown);
    const specError = toSpecError(err, versionOf(stdin));
    const first = !answered;
    print(specError);
    if (!first) return;
    process.exitCode = 1;
    code = specError.code;
    durationMs = monotonicMs() - started;
    const stack = err instanceof CniError ? undefined : (err as Error)?.stack;
    log?.error({ ...summary, code: specError.code, error: specError.msg, details: specError.details, stack, durationMs: Math.round(durationMs) }, `${String(summary.verb ?? 'invocation')} failed`);
  };
  // A runtime that gives up on us sends SIGTERM: answer at once, but only after a running iptables
  // transaction is over, so the netns is final when we exit (all of the rules or none of them).
  process.once('SIGTERM', () => {
    void stopExecuting().then(() => {
      if (!answered) fail(new CniError(ErrorCode.TryAgainLater, 'interrupted by SIGTERM', 'stopped before the verb finished; an iptables-restore already running was let finish'));
      process.exit();
    });
  });
  try {
    stdin = readStdin();
    const command = readCommand(env);
    summary.verb = command;
    if (command === 'VERSION') {
      print(versionResult(stdin));
      return;
    }
    config = parseConfig(stdin);
    log = createLogger(config);
    const invocation = readInvocation(command, env);
    Object.assign(summary, { containerId: invocation.containerId, netns: invocation.netns, pod: podOf(invocation.args) });
    const result = await VERBS[command]({ config, invocation, summary });
    if (result !== undefined) print(result);
    answered = true;
    durationMs = monotonicMs() - started;
    log.info({ ...summary, durationMs: Math.round(durationMs) }, `${command} ok`);
  } catch (err) {
    fail(err);
  }
  report(config, summary, code, durationMs);
}

/** The outcome to the installer's metrics, over the pod cache's socket when the entry names one (after the answer, never waited on). */
function report(config: PluginConfig | undefined, summary: Summary, code: number, durationMs: number): void {
  const verb = summary.verb;
  if (config?.podCache === undefined || (verb !== 'ADD' && verb !== 'DEL' && verb !== 'CHECK')) return;
  const decision = summary.decision === 'redirect' || summary.decision === 'pass' ? summary.decision : 'none';
  reportOutcome(config.podCache.socketPath, { verb, decision, code, durationMs });
}
