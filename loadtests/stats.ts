/**
 * Summary statistics of latency samples, as load-test reports give them (vLLM's
 * benchmark_serving, llmperf, genai-perf): mean, median (p50), p90, p99.
 */

/** Mean and percentiles of a list of samples, in the samples' unit (seconds here). */
export interface Summary {
  /** Number of samples. */
  n: number;
  mean: number;
  p50: number;
  p90: number;
  p99: number;
  min: number;
  max: number;
}

/**
 * The `p`-th percentile of `sorted` (ascending), by linear interpolation between closest
 * ranks: with `h = (n - 1) * p / 100`, the result is
 * `sorted[floor(h)] + (h - floor(h)) * (sorted[floor(h) + 1] - sorted[floor(h)])`.
 * This is Hyndman & Fan's definition 7, the default of numpy.percentile and of
 * vLLM's benchmark_serving; p0 is the minimum and p100 the maximum.
 *
 * @param sorted samples sorted ascending (not checked), at least one.
 * @param p percentile in [0, 100].
 * @throws RangeError when `sorted` is empty or `p` is outside [0, 100].
 */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) throw new RangeError('percentile of an empty list');
  if (!(p >= 0 && p <= 100)) throw new RangeError(`percentile ${p} is outside [0, 100]`);
  const h = ((sorted.length - 1) * p) / 100;
  const lo = Math.floor(h);
  const hi = Math.min(lo + 1, sorted.length - 1);
  return sorted[lo] + (h - lo) * (sorted[hi] - sorted[lo]);
}

/** Arithmetic mean; NaN for an empty list. */
export function mean(values: readonly number[]): number {
  if (values.length === 0) return NaN;
  let s = 0;
  for (const v of values) s += v;
  return s / values.length;
}

/**
 * Mean, p50, p90, p99, min and max of `values` (any order), or `null` when there are
 * none. Percentiles follow {@link percentile}.
 */
export function summarize(values: readonly number[]): Summary | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return {
    n: sorted.length,
    mean: mean(sorted),
    p50: percentile(sorted, 50),
    p90: percentile(sorted, 90),
    p99: percentile(sorted, 99),
    min: sorted[0],
    max: sorted[sorted.length - 1],
  };
}
