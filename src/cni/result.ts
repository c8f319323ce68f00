import type { PluginConfig } from './config.ts';
import { LATEST_VERSION, SUPPORTED_VERSIONS } from './versions.ts';

/**
 * A chained plugin that changes no interface passes the previous plugin's result through untouched;
 * with no previous result it answers an empty result of the configured version.
 */
export function passThroughResult(config: PluginConfig): Record<string, unknown> {
  return { cniVersion: config.cniVersion, ...config.prevResult };
}

/** VERSION echoes the requested version (SPEC), whatever it is, and lists what we speak. */
export function versionResult(stdin: string) {
  let requested: unknown;
  try {
    requested = (JSON.parse(stdin) as { cniVersion?: unknown } | null)?.cniVersion;
  } catch {
    requested = undefined;
  }
  const cniVersion = typeof requested === 'string' && /^\d+\.\d+\.\d+$/.test(requested) ? requested : LATEST_VERSION;
  return { cniVersion, supportedVersions: [...SUPPORTED_VERSIONS] };
}

/** The addresses in a previous result (`10.0.0.5/24`, `fd00::5/64`); none when there is no result. */
export function addressesOf(prevResult: Record<string, unknown> | undefined): string[] {
  const ips = prevResult?.ips;
  if (!Array.isArray(ips)) return [];
  return ips.flatMap((entry: unknown) => {
    const address = (entry as { address?: unknown } | null)?.address;
    return typeof address === 'string' ? [address] : [];
  });
}
