/**
 * A layer's tensors looked up by its layout (models/arch/spec.ts): what the graph emitters
 * take. Missing required tensors are errors here, optional ones (biases, norm weights of a
 * fused model, shortcuts of a dense model) are undefined.
 */
import type { LayerLayout, LinearNames, NormNames } from '../arch/spec.js';
import type { WeightMap, WeightTensor } from '../types.js';

/** A linear layer: weight [out, in], optional bias [out]. */
export interface Linear {
  weight: WeightTensor;
  bias?: WeightTensor;
}

/** A norm's parameters; both absent for a weightless (fused) norm. */
export interface Norm {
  weight?: WeightTensor;
  bias?: WeightTensor;
}

/** One layer's tensors (names as in LayerLayout). */
export interface LayerTensors {
  inputNorm: Norm;
  q: Linear;
  k: Linear;
  v: Linear;
  o: Linear;
  qNorm?: Norm;
  kNorm?: Norm;
  postAttentionNorm?: Norm;
  gate?: Linear;
  up: Linear;
  down: Linear;
  /** [in, out]; absent = identity residual. */
  attnShortcut?: WeightTensor;
  mlpShortcut?: WeightTensor;
}

/**
 * A tensor that must be present.
 * @throws Error naming it when it is not.
 */
export function requireTensor(weights: WeightMap, name: string): WeightTensor {
  const t = weights.get(name);
  if (!t) throw new Error(`missing weight ${name}`);
  return t;
}

/** The linear layer `names` (weight required, bias if the layout names one). */
export function linearTensors(weights: WeightMap, names: LinearNames): Linear {
  const weight = requireTensor(weights, names.weight);
  return names.bias ? { weight, bias: requireTensor(weights, names.bias) } : { weight };
}

/** A norm's tensors (each present when the layout names it). */
export function normTensors(weights: WeightMap, names: NormNames | undefined): Norm {
  return {
    ...(names?.weight ? { weight: requireTensor(weights, names.weight) } : {}),
    ...(names?.bias ? { bias: requireTensor(weights, names.bias) } : {}),
  };
}

/**
 * Layer tensors from `weights` by `layer`'s names. Shortcuts are taken when present.
 * @throws Error naming the first missing required tensor.
 */
export function layerTensors(weights: WeightMap, layer: LayerLayout): LayerTensors {
  const t: LayerTensors = {
    inputNorm: normTensors(weights, layer.inputNorm),
    q: linearTensors(weights, layer.q),
    k: linearTensors(weights, layer.k),
    v: linearTensors(weights, layer.v),
    o: linearTensors(weights, layer.o),
    up: linearTensors(weights, layer.up),
    down: linearTensors(weights, layer.down),
  };
  if (layer.qNorm) t.qNorm = normTensors(weights, layer.qNorm);
  if (layer.kNorm) t.kNorm = normTensors(weights, layer.kNorm);
  if (layer.postAttentionNorm) t.postAttentionNorm = normTensors(weights, layer.postAttentionNorm);
  if (layer.gate) t.gate = linearTensors(weights, layer.gate);
  const sa = weights.get(layer.attnShortcut);
  if (sa) t.attnShortcut = sa;
  const sm = layer.mlpShortcut ? weights.get(layer.mlpShortcut) : undefined;
  if (sm) t.mlpShortcut = sm;
  return t;
}
