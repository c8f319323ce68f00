import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { parseFlags, readCommandLine, UsageError, withUsage } from './flags.ts';
import { decideFromPod } from './kube/decision.ts';
import { Pod } from './kube/pod.ts';
import { InvalidCaptureValue } from './redirect/errors.ts';
import { renderNftScript, toNftables } from './redirect/nftables.ts';
import { renderCreate } from './redirect/restore.ts';
import { captureSettingsFor, ProfileChoice } from './redirect/profile.ts';
import { buildRuleSet, usesTproxyRouting } from './redirect/ruleset.ts';
import { CaptureDefaults } from './redirect/settings.ts';

const USAGE = 'usage: istio-cni explain <pod.yaml|pod.json> [--ipv6] [--backend iptables|nftables] [--profile seed|istio-current|auto]';

const ExplainFlags = z.object({
  /** Show the IPv6 rules even when the manifest has no IPv6 pod IP. */
  ipv6: z.literal(true).optional(),
  /** The restore text of iptables, or the script of native nftables. */
  backend: z.enum(['iptables', 'nftables']).default('iptables'),
  /** Which rules: the seed's, current Istio's, or chosen by the pod's proxy version. */
  profile: ProfileChoice.default('seed'),
});

/** The pod's addresses as `kubectl get pod -o yaml` shows them, once it has run. */
function statusIps(document: unknown): string[] {
  const podIPs = (document as { status?: { podIPs?: { ip?: unknown }[] } } | null)?.status?.podIPs ?? [];
  return podIPs.flatMap((entry) => (typeof entry?.ip === 'string' ? [entry.ip] : []));
}

/**
 * `istio-cni explain`: the iptables-restore input (or, with `--backend nftables`, the `nft -f` script)
 * ADD would apply for a pod manifest, with the plugin's default settings, in the seed profile or the
 * one --profile names. No root, no netns, no API server. IPv6 rules are shown when the manifest's
 * status has an IPv6 pod IP or with --ipv6.
 */
export function explain(args: string[]): Promise<number> {
  return withUsage('explain', () => explainManifest(args), USAGE);
}

async function explainManifest(args: string[]): Promise<number> {
  const { flags: given, operands } = readCommandLine(args, { ipv6: 'switch', backend: 'value', profile: 'value' });
  if (operands.length !== 1) throw new UsageError(operands.length === 0 ? 'which pod manifest?' : `one pod manifest, not ${operands.length}`);
  const [file] = operands as [string];
  const flags = parseFlags(ExplainFlags, given);
  try {
    const document: unknown = parseYaml(readFileSync(file, 'utf8'));
    const pod = Pod.safeParse(document);
    if (!pod.success) throw new Error(`not a pod manifest: ${pod.error.issues[0]?.path.join('.')}: ${pod.error.issues[0]?.message}`);
    const decision = decideFromPod(pod.data);
    if (!decision.redirect) {
      process.stdout.write(`# ${pod.data.metadata.namespace}/${pod.data.metadata.name}: no rules (${decision.reason})\n`);
      return 0;
    }
    const input = { annotations: decision.annotations, proxy: decision.proxy, podIps: statusIps(document), defaults: CaptureDefaults.parse(undefined) };
    const fromPod = captureSettingsFor(input, flags.profile);
    const settings = { ...fromPod, ipv6: fromPod.ipv6 || flags.ipv6 === true };
    let out = `# ${pod.data.metadata.namespace}/${pod.data.metadata.name}: ${decision.reason}\n`;
    const [v4, v6] = [buildRuleSet(settings, 4), buildRuleSet(settings, 6)];
    if (flags.backend === 'nftables') {
      if (v4.length + v6.length > 0) out += `# IPv4${v6.length > 0 ? ' and IPv6' : ''}: nft -f - (one transaction)\n${renderNftScript(toNftables(v4, v6))}`;
    } else {
      for (const [family, ruleSet] of [[4, v4], [6, v6]] as const) {
        if (ruleSet.length > 0) out += `# IPv${family}: ${family === 6 ? 'ip6tables' : 'iptables'}-restore --noflush\n${renderCreate(ruleSet)}`;
      }
    }
    if (usesTproxyRouting(settings)) {
      out += `# and, per family: ip rule add fwmark ${settings.tproxyMark} lookup ${settings.tproxyRouteTable}; ip route replace local default dev lo table ${settings.tproxyRouteTable}\n`;
    }
    process.stdout.write(out);
    return 0;
  } catch (err) {
    const message = err instanceof InvalidCaptureValue ? `${err.message}: ${err.details}` : (err as Error).message;
    process.stderr.write(`istio-cni explain: ${message}\n`);
    return 1;
  }
}
