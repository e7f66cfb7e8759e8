/**
 * Perplexity over fixed, non-overlapping windows (PROTOCOL.md §3-4; the official SliceGPT
 * `evaluate_ppl` when all windows have the same length):
 *   for each window w of S tokens and each t in 0..S-2,
 *     nll(w, t) = logsumexp(logits[t]) - logits[t][w[t+1]]        (float64, full vocabulary)
 *   ppl = exp(sum of all nll / (windows * (S - 1)))
 */
import type { DecoderSession } from './decoder-session.js';
import { logprobAt } from './logprobs.js';

export interface PerplexityResult {
  perplexity: number;
  /** Mean negative log-likelihood in nats per predicted token. */
  meanNll: number;
  /** Predicted tokens: windows * (seqLen - 1). */
  tokens: number;
  windows: number;
  seqLen: number;
}

/**
 * Perplexity of `windows` under a session built with `logits: 'all'`.
 * @param windows equal-length token windows, each fed as-is with positions 0..S-1.
 * @param batchSize windows per forward pass.
 * @param onProgress called with (windows done, total).
 */
export async function perplexity(session: DecoderSession, windows: readonly number[][], batchSize = 8, onProgress?: (done: number, total: number) => void): Promise<PerplexityResult> {
  if (session.logitsMode !== 'all') throw new Error('perplexity needs a session built with logits: "all"');
  const seqLen = windows[0].length;
  const V = session.vocabSize;
  let total = 0;
  let count = 0;
  for (let start = 0; start < windows.length; start += batchSize) {
    const batch = windows.slice(start, start + batchSize);
    const out = await session.step(batch.map((w) => ({ cache: session.newCache(), tokens: w })));
    batch.forEach((w, b) => {
      const logits = out[b];
      for (let t = 0; t < seqLen - 1; t++) {
        const row = logits.subarray(t * V, (t + 1) * V);
        total += -logprobAt(row, w[t + 1]);
        count += 1;
      }
    });
    onProgress?.(Math.min(start + batchSize, windows.length), windows.length);
  }
  const meanNll = total / count;
  return { perplexity: Math.exp(meanNll), meanNll, tokens: count, windows: windows.length, seqLen };
}
