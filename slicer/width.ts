/**
 * The sliced width d' (SLICEGPT.md §4; PROTOCOL.md §5.4; official `run_slicegpt.py`):
 *   d' = floor((1 - sparsity) * d / round_interval) * round_interval
 * Sparsity is the fraction of the embedding width removed, not of the parameters.
 * @throws RangeError for sparsity outside [0, 1), a round interval < 1, or a d' of 0.
 */
export function slicedWidth(sparsity: number, hiddenSize: number, roundInterval = 8): number {
  if (!(Number.isFinite(sparsity) && sparsity >= 0 && sparsity < 1)) {
    throw new RangeError(`sparsity must be in [0, 1), got ${sparsity}`);
  }
  if (!Number.isInteger(roundInterval) || roundInterval < 1) throw new RangeError(`round interval must be an integer >= 1, got ${roundInterval}`);
  // int((1 - s) * d) first, as the official code does, then round down to the interval.
  const width = Math.floor(Math.floor((1 - sparsity) * hiddenSize) / roundInterval) * roundInterval;
  if (width < 1) throw new RangeError(`sparsity ${sparsity} with round interval ${roundInterval} leaves no columns of ${hiddenSize}`);
  return width;
}

/**
 * The largest sparsity, to three decimals (rounded down), whose sliced width d' is > 0 for
 * `hiddenSize` and `roundInterval`: about 1 - roundInterval / hiddenSize, checked against
 * {@link slicedWidth}'s rounding.
 * @returns null when no sparsity > 0 leaves a column (a hidden size below the round interval)
 */
export function largestUsableSparsity(hiddenSize: number, roundInterval = 8): number | null {
  const fits = (s: number) => {
    try {
      return slicedWidth(s, hiddenSize, roundInterval) > 0;
    } catch {
      return false;
    }
  };
  let s = Math.floor((1 - roundInterval / hiddenSize) * 1000) / 1000;
  while (s > 0 && !fits(s)) s = Math.round((s - 0.001) * 1000) / 1000;
  return s > 0 ? s : null;
}
