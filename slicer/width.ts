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
