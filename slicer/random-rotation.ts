/**
 * A seeded random orthogonal change of basis of a SLICED model's residual stream, applied after
 * slicing and before quantizing (QuaRot's incoherence processing, Ashkboos et al. 2024, arXiv
 * 2404.00456 §3-4, on top of SliceGPT's PCA basis).
 *
 * Why: SliceGPT's PCA basis sorts the residual energy into the first coordinates, so a block of
 * a reader's input features mixes a few large columns with many small ones and one block scale
 * serves both; a random rotation spreads every direction over all coordinates again
 * (docs/quantization.md measures it). The function is unchanged: with one orthogonal H_w per
 * residual width w, every residual signal x becomes x H_w, and
 *   readers (q, k, v, gate/up or fc1, head)  W <- W H_in          ([out, in])
 *   writers (o, down or fc2)                 W <- H_out^T W, b <- b H_out
 *   shortcuts S [in, out]                    S <- H_in^T S H_out
 *   embeddings (tokens, learned positions)   E <- E H
 * The sliced model's norms are weightless RMS norms (fused, SliceGPT §3.1), and
 * ||x H|| = ||x||, so they commute with it. A dense model's norms carry weights, so only sliced
 * models (config.sliceserve) can be rotated here.
 */
import { layoutOf } from '../models/registry.js';
import type { LoadedModel, WeightMap, WeightTensor } from '../models/types.js';
import { modelWidths } from '../models/widths.js';
import { seededNormals } from './linalg/index.js';
import { rotateReader, rotateWriter, rotateWriterBias } from './rotate.js';

/**
 * A seeded n x n orthogonal matrix, row-major: modified Gram-Schmidt on the rows of a Gaussian
 * matrix (seededNormals), in float64. O(n^3): ~0.5 s at n = 768, ~10 s at 2048 on one core.
 * @throws RangeError for n < 1.
 */
export function randomOrthogonal(n: number, seed: number): Float64Array {
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`randomOrthogonal: n must be a positive integer, got ${n}`);
  const q = seededNormals(n * n, seed);
  for (let i = 0; i < n; i++) {
    const ri = i * n;
    for (let j = 0; j < i; j++) {
      const rj = j * n;
      let dot = 0;
      for (let k = 0; k < n; k++) dot += q[ri + k] * q[rj + k];
      for (let k = 0; k < n; k++) q[ri + k] -= dot * q[rj + k];
    }
    let norm = 0;
    for (let k = 0; k < n; k++) norm += q[ri + k] * q[ri + k];
    norm = Math.sqrt(norm);
    for (let k = 0; k < n; k++) q[ri + k] /= norm;
  }
  return q;
}

/** Options of {@link randomResidualRotation}. */
export interface RandomRotationOptions {
  /** Seed of the rotations; width w uses randomOrthogonal(w, seed + w). */
  seed: number;
  /** Take each tensor out of the source map once rotated (frees the float copy tensor by tensor). */
  consume?: boolean;
}

/** A deferred rotation of one weight tensor: reads the source tensor and returns the rotated one. */
export type TensorRotation = () => Promise<WeightTensor>;

/**
 * The rotation of every weight tensor that the random residual basis changes (see the module
 * comment), each deferred, so that a caller can rotate one tensor, use it and let it go (the
 * quantizer does: slicer/quantize.ts). Tensors not in the map (norms) are unchanged. The bases
 * are made once per width, on first use.
 * @returns tensor name -> its rotation.
 * @throws Error for a model that is not sliced (its norms are not fused) or already quantized,
 *   or a sliced model without an untied head.
 */
export function randomRotationPlan(model: LoadedModel, seed: number): Map<string, TensorRotation> {
  if (!model.config.sliceserve) throw new Error(`${model.id} is not sliced: a random residual rotation needs fused (weightless) norms; slice it first`);
  if (model.quantization) throw new Error(`${model.id} is quantized: rotate its float weights before quantizing`);
  const layout = layoutOf(model.config);
  modelWidths(model, layout); // throws when the widths do not chain
  const bases = new Map<number, Float64Array>();
  const H = (n: number): Float64Array => {
    let h = bases.get(n);
    if (!h) bases.set(n, (h = randomOrthogonal(n, seed + n)));
    return h;
  };
  const src = model.weights;
  const take = (name: string): WeightTensor => {
    const t = src.get(name);
    if (!t) throw new Error(`missing weight ${name}`);
    return t;
  };
  const plan = new Map<string, TensorRotation>();
  const reader = (name: string) =>
    plan.set(name, () => {
      const w = take(name);
      const n = w.shape[1];
      return rotateReader(w, H(n), n, n);
    });
  const writer = (weight: string, bias: string | undefined) => {
    plan.set(weight, () => {
      const w = take(weight);
      return rotateWriter(w, H(w.shape[0]), w.shape[0], w.shape[0]);
    });
    if (bias) {
      plan.set(bias, () => {
        const b = take(bias);
        return rotateWriterBias(b, H(b.shape[0]), b.shape[0], b.shape[0]);
      });
    }
  };
  const shortcut = (name: string | undefined) => {
    if (!name || !src.has(name)) return;
    plan.set(name, async () => {
      const s = take(name);
      const [i, o] = s.shape;
      return rotateReader(await rotateWriter(s, H(i), i, i), H(o), o, o);
    });
  };
  for (const name of [layout.embedTokens, ...(layout.embedPositions ? [layout.embedPositions] : [])]) reader(name);
  for (const layer of layout.layers) {
    for (const r of [layer.q, layer.k, layer.v, ...(layer.gate ? [layer.gate] : []), layer.up]) reader(r.weight);
    for (const w of [layer.o, layer.down]) writer(w.weight, w.bias);
    shortcut(layer.attnShortcut);
    shortcut(layer.mlpShortcut);
  }
  if (!src.has(layout.lmHead.weight)) throw new Error(`${model.id}: a sliced model has an untied head (${layout.lmHead.weight} is missing)`);
  reader(layout.lmHead.weight);
  return plan;
}

/**
 * The model in a seeded random orthogonal residual basis (see the module comment), every
 * tensor rotated now (in memory). Same id, config and function; new weight tensors (float64
 * products stored in float32, as the slicer's rotations, PROTOCOL.md §5).
 * @throws Error as {@link randomRotationPlan}.
 */
export async function randomResidualRotation(model: LoadedModel, options: RandomRotationOptions): Promise<LoadedModel> {
  const plan = randomRotationPlan(model, options.seed);
  const out: WeightMap = new Map(model.weights);
  for (const [name, rotate] of plan) {
    out.set(name, await rotate());
    if (options.consume) model.weights.delete(name);
  }
  return { ...model, weights: out };
}
