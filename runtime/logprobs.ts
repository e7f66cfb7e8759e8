/**
 * Log-probabilities of raw logits, used to score prompt tokens (echo + logprobs), where no
 * sampling parameters apply: log p(t) = z_t - log(sum_j exp(z_j)), computed in float64.
 */

/** A token id with its log-probability. */
export interface ScoredToken {
  token: number;
  logprob: number;
}

/**
 * log-softmax normaliser of `logits` [vocab]: max + log(sum exp(z - max)).
 * @throws Error if `logits` is empty.
 */
export function logSumExp(logits: Float32Array | Float64Array): number {
  if (logits.length === 0) throw new Error('logSumExp: empty logits');
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i] > max) max = logits[i];
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i] - max);
  return max + Math.log(sum);
}

/** log-softmax of `logits` at `token`; `lse` is {@link logSumExp} of the same logits. */
export function logprobAt(logits: Float32Array, token: number, lse = logSumExp(logits)): number {
  return logits[token] - lse;
}

/**
 * The k most likely tokens of `logits` [vocab] under log-softmax, most likely first, lowest id
 * first on ties.
 */
export function topLogprobs(logits: Float32Array, k: number, lse = logSumExp(logits)): ScoredToken[] {
  if (k <= 0) return [];
  return topIndices(logits, k).map((token) => ({ token, logprob: logits[token] - lse }));
}

/**
 * Indices of the k largest values, largest first (lowest index on ties): one pass with a
 * sorted buffer of k entries, O(vocab * k) worst case and ~O(vocab) for small k.
 */
export function topIndices(x: ArrayLike<number>, k: number): number[] {
  const n = Math.min(k, x.length);
  const best: number[] = [];
  for (let i = 0; i < x.length; i++) {
    const v = x[i];
    if (best.length === n && !(v > x[best[n - 1]])) continue;
    let j = best.length === n ? n - 1 : best.length;
    while (j > 0 && v > x[best[j - 1]]) j--;
    best.splice(j, 0, i);
    if (best.length > n) best.pop();
  }
  return best;
}
