import { z } from 'zod';

export const SUPPORTED_VERSIONS = ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] as const;

export const CniVersion = z.enum(SUPPORTED_VERSIONS, {
  error: (issue) => `unsupported cniVersion ${JSON.stringify(issue.input)}; supported: ${SUPPORTED_VERSIONS.join(', ')}`,
});
export type CniVersion = z.infer<typeof CniVersion>;

/** The version used for answers before the request's own version is known. */
export const LATEST_VERSION: CniVersion = '1.1.0';

/** STATUS and GC exist from 1.1.0 on; CHECK from 0.4.0 on. */
export function versionAtLeast(version: CniVersion, minimum: CniVersion): boolean {
  return SUPPORTED_VERSIONS.indexOf(version) >= SUPPORTED_VERSIONS.indexOf(minimum);
}
