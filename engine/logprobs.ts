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
export function logSumExp(logits: Float32Array): number {
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
  const best: number[] = [];
  if (k <= 0) return [];
  for (let i = 0; i < logits.length; i++) {
    if (best.length === k && logits[i] <= logits[best[k - 1]]) continue;
    let at = best.length;
    while (at > 0 && logits[best[at - 1]] < logits[i]) at--;
    best.splice(at, 0, i);
    if (best.length > k) best.pop();
  }
  return best.map((token) => ({ token, logprob: logits[token] - lse }));
}
