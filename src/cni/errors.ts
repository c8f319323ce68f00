/**
 * SPEC error codes. 0-99 are the SPEC's own; 100+ are this plugin's and are listed in docs/configuration.md.
 */
export const ErrorCode = {
  IncompatibleVersion: 1,
  InvalidEnvironment: 4,
  IoFailure: 5,
  DecodeFailure: 6,
  InvalidConfig: 7,
  TryAgainLater: 11,
  PluginNotAvailable: 50,
  Internal: 100,
  PodLookupFailed: 101,
  IptablesFailed: 102,
  RulesMismatch: 103,
  InvalidNetns: 104,
  KubeconfigInvalid: 105,
  InvalidAnnotation: 106,
} as const;

export type ErrorCodeValue = (typeof ErrorCode)[keyof typeof ErrorCode];

/** An error the plugin reports to the runtime as a SPEC error object. */
export class CniError extends Error {
  constructor(
    readonly code: ErrorCodeValue,
    msg: string,
    readonly details = '',
  ) {
    super(msg);
    this.name = 'CniError';
  }
}

export interface SpecError {
  cniVersion: string;
  code: number;
  msg: string;
  details: string;
}

export function toSpecError(err: unknown, cniVersion: string): SpecError {
  if (err instanceof CniError) {
    return { cniVersion, code: err.code, msg: err.message, details: err.details };
  }
  // Unexpected failures keep their message but never their stack: stdout belongs to the runtime.
  const message = err instanceof Error ? err.message : String(err);
  return { cniVersion, code: ErrorCode.Internal, msg: 'internal error', details: message };
}
