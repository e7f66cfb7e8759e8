/** Parameter counting (PROTOCOL.md §6). */
import { tensorLength } from './lazy-tensor.js';
import type { WeightMap } from './types.js';

/**
 * Every weight the model carries: the sum of the element counts of its tensors. A tied head
 * is not counted twice (it is not in the map); RoPE tables are not weights. Reads no lazy tensor.
 */
export function countParameters(weights: WeightMap): number {
  let n = 0;
  for (const t of weights.values()) n += tensorLength(t);
  return n;
}
