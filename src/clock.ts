/**
 * Milliseconds on a monotonic clock, for durations and deadlines. Not `performance.now()`: its first
 * use loads perf_hooks (8 modules, none in the start-up snapshot) in every plugin process.
 */
export function monotonicMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}
