/** Parameter counting (PROTOCOL.md §6). */
import { tensorLength } from './lazy-tensor.js';
import type { LoadedModel, WeightMap } from './types.js';

/**
 * Every weight the model carries: the sum of the element counts of its tensors. A tied head
 * is not counted twice (it is not in the map); RoPE tables are not weights. Reads no lazy tensor.
 */
export function countParameters(weights: WeightMap): number {
  let n = 0;
  for (const t of weights.values()) n += tensorLength(t);
  return n;
}

/**
 * {@link countParameters} of a whole model: its float tensors plus the elements its quantized
 * tensors stand for (models/quant/model.ts), so that quantizing does not change the count.
 */
export function countModelParameters(model: Pick<LoadedModel, 'weights' | 'quantization'>): number {
  let n = countParameters(model.weights);
  for (const t of model.quantization?.tensors.values() ?? []) n += t.shape.reduce((a, b) => a * b, 1);
  return n;
}
