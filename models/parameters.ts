/** Parameter counting (PROTOCOL.md §6). */
import type { WeightMap } from './types.js';

/**
 * Every weight the model carries: the sum of the element counts of its tensors. A tied head
 * is not counted twice (it is not in the map); RoPE tables are not weights.
 */
export function countParameters(weights: WeightMap): number {
  let n = 0;
  for (const t of weights.values()) n += t.data.length;
  return n;
}
