import { z } from 'zod';
import { parseFlags, readFlags, withUsage } from '../flags.ts';
import { hostPort, probePlan, runProbe, type ProbeOutcome, type ProbePlan } from './probe.ts';

/** The exit status the repair controller (and Istio's) looks for on a failed istio-validation container. */
export const NOT_CAPTURED_EXIT_CODE = 126;

const ValidateFlags = z.object({
  /** Seconds to keep trying before declaring the pod's traffic not captured. */
  timeout: z.coerce.number().positive().max(3600).default(5),
  /** The pod is IPv6: listen on ::1 and dial ::6. */
  ipv6: z.literal(true).optional(),
});

/**
 * `istio-cni validate`: the istio-validation init container. Exits 0 when this network namespace
 * captures the pod's traffic, 126 when it does not within the timeout.
 */
export function validateCommand(args: readonly string[]): Promise<number> {
  return withUsage('validate', () => validate(args));
}

async function validate(args: readonly string[]): Promise<number> {
  const flags = parseFlags(ValidateFlags, readFlags(args, { timeout: 'value', ipv6: 'switch' }));
  const plan = probePlan(flags.ipv6 === true, flags.timeout * 1000);
  const outcome = await runProbe(plan);
  if (outcome.captured) {
    process.stdout.write(`${capturedMessage(plan, outcome)}\n`);
    return 0;
  }
  process.stderr.write(`${notCapturedMessage(plan, outcome)}\n`);
  return NOT_CAPTURED_EXIT_CODE;
}

function connection(plan: ProbePlan): string {
  const uid = process.getuid?.();
  return `from ${plan.listenHost} to ${hostPort(plan.target.host, plan.target.port)}${uid === undefined ? '' : ` as uid ${uid}`}`;
}

function capturedMessage(plan: ProbePlan, outcome: Extract<ProbeOutcome, { captured: true }>): string {
  return `istio-cni validate: traffic capture works: a connection ${connection(plan)} was redirected to ${hostPort(plan.listenHost, outcome.port)} (attempt ${outcome.attempts}, ${outcome.elapsedMs} ms)`;
}

function notCapturedMessage(plan: ProbePlan, outcome: Extract<ProbeOutcome, { captured: false }>): string {
  const tried = [...outcome.failures].map(([why, count]) => `${count}× ${why}`).join(', ');
  const lines = [
    `istio-cni validate: traffic is NOT captured in this pod's network namespace after ${plan.timeoutMs / 1000} s`,
    `  tried: ${outcome.attempts} connection(s) ${connection(plan)}${tried === '' ? '' : `: ${tried}`}`,
    `  listening on: ${outcome.listening.join(', ') || 'nothing'}${outcome.notListening.length > 0 ? `; could not listen on ${outcome.notListening.join(', ')}` : ''}`,
    `  expected: the istio-cni iptables rules redirect that connection to port ${plan.listenPorts.join(' or ')}; the CNI plugin has not set them up for this pod`,
  ];
  return lines.join('\n');
}
