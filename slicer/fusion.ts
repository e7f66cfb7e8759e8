/**
 * Norm fusion, the first step of SliceGPT (Ashkboos et al. 2024, arXiv 2401.15024, §3.1 and
 * Appendix A.1; SLICEGPT.md §2; PROTOCOL.md §5.1; TransformerCompression's `fuse_modules` and
 * `bake_mean_into_linear`), for every family through its layout:
 *
 * 1. LayerNorm families only: make the residual stream zero-mean, so that LayerNorm equals
 *    RMSNorm. Every WRITER of the residual has its output mean removed: embedding rows (tokens
 *    and learned positions) minus their mean; attention and MLP output layers `W <- M W`,
 *    `b <- M b` with `M = I - (1/d) 1 1^T` (W stored [out = d, in], so each column loses its
 *    mean over the d outputs).
 * 2. Fold every norm's scale alpha (and LayerNorm bias beta) into the layers that READ its
 *    output: `W <- W diag(alpha)`, `b <- b + W beta` (original W); the final norm into the head,
 *    which becomes a new untied matrix (the tied embedding is copied). The norms become
 *    weightless, dividing by the original hidden_size.
 * The fused model computes the same function. Per-head q/k norms act inside attention and are
 * left alone.
 *
 * The rewritten matrices are lazy (models/lazy-tensor.ts): each is computed from its source
 * when it is read, so fusing a model that stays on disk holds none of its weights in memory.
 * The folded biases (LayerNorm families) are computed now (one pass over each reader).
 */
import type { LinearNames, NormNames } from '../models/arch/spec.js';
import { attentionReaders, mlpReaders } from '../models/arch/spec.js';
import { layoutOf } from '../models/registry.js';
import { derivedTensor } from '../models/lazy-tensor.js';
import type { LoadedModel, WeightMap, WeightTensor } from '../models/types.js';

/**
 * @returns a new model (the input is not modified) with weightless norms, readers carrying the
 *   folded scales and biases, the mean baked into the writers for LayerNorm families, an untied
 *   head, and `config.fused_norms` true.
 * @throws Error when a tensor of the layout is missing or the model is already fused.
 */
export function fuseNorms(model: LoadedModel): LoadedModel {
  if (model.config.fused_norms || model.config.sliceserve) throw new Error(`${model.id}: the norms are already fused`);
  const layout = layoutOf(model.config);
  const weights: WeightMap = new Map(model.weights);
  const get = (name: string): WeightTensor => {
    const t = weights.get(name);
    if (!t) throw new Error(`missing weight ${name}`);
    return t;
  };
  const lazily = (t: WeightTensor, f: (t: WeightTensor) => WeightTensor) => derivedTensor([...t.shape], () => f(t).data);
  if (model.config.norm === 'layer') {
    weights.set(layout.embedTokens, lazily(get(layout.embedTokens), centreRows));
    if (layout.embedPositions) weights.set(layout.embedPositions, lazily(get(layout.embedPositions), centreRows));
    for (const layer of layout.layers) {
      for (const writer of [layer.o, layer.down]) {
        weights.set(writer.weight, lazily(get(writer.weight), centreColumns));
        if (writer.bias) weights.set(writer.bias, centreVector(get(writer.bias)));
      }
    }
  }
  const fusedConfig = { ...model.config, tie_word_embeddings: false, fused_norms: true };
  const fusedLayout = layoutOf(fusedConfig);
  // The untied head starts as a copy of the tied embedding (mean-baked for LayerNorm families,
  // whose head reads the normed stream and is not a writer: it is the original embedding).
  // (Tensors are never written in place, so the head can share the embedding's tensor.)
  if (!weights.has(layout.lmHead.weight)) weights.set(layout.lmHead.weight, model.weights.get(layout.embedTokens)!);
  const fold = (norm: NormNames, readers: LinearNames[], fusedReaders: LinearNames[]) => {
    const alpha = norm.weight ? get(norm.weight).data : undefined;
    const beta = norm.bias ? get(norm.bias).data : undefined;
    readers.forEach((reader, i) => {
      const w = get(reader.weight);
      const target = fusedReaders[i];
      const bias = reader.bias ? get(reader.bias) : undefined;
      if (target.bias) weights.set(target.bias, beta ? addMatVec(bias, w, beta) : bias ?? { shape: [w.shape[0]], data: new Float32Array(w.shape[0]) });
      else if (beta) throw new Error(`${reader.weight}: the layout gives no bias to fold ${norm.bias} into`);
      if (alpha) weights.set(target.weight, lazily(w, (t) => scaleColumns(t, alpha)));
    });
    if (norm.weight) weights.delete(norm.weight);
    if (norm.bias) weights.delete(norm.bias);
  };
  layout.layers.forEach((layer, l) => {
    const fused = fusedLayout.layers[l];
    if (model.config.block === 'parallel') {
      fold(layer.inputNorm, [...attentionReaders(layer), ...mlpReaders(layer)], [...attentionReaders(fused), ...mlpReaders(fused)]);
    } else {
      fold(layer.inputNorm, attentionReaders(layer), attentionReaders(fused));
      fold(layer.postAttentionNorm!, mlpReaders(layer), mlpReaders(fused));
    }
  });
  fold(layout.finalNorm, [layout.lmHead], [fusedLayout.lmHead]);
  return { ...model, weights, config: fusedConfig };
}

/** W <- W diag(alpha): scales column j of a weight stored [out, in] by alpha[j] (float64 products). */
export function scaleColumns(w: WeightTensor, alpha: Float32Array): WeightTensor {
  const [out, inn] = w.shape;
  const src = w.data;
  const data = new Float32Array(src.length);
  for (let o = 0; o < out; o++) for (let i = 0; i < inn; i++) data[o * inn + i] = src[o * inn + i] * alpha[i];
  return { shape: [out, inn], data };
}

/** b + W beta for W [out, in], beta [in] (b absent = 0), accumulated in float64. */
function addMatVec(b: WeightTensor | undefined, w: WeightTensor, beta: Float32Array): WeightTensor {
  const [out, inn] = w.shape;
  const src = w.data;
  const bias = b?.data;
  const data = new Float32Array(out);
  for (let o = 0; o < out; o++) {
    let s = bias ? bias[o] : 0;
    for (let i = 0; i < inn; i++) s += src[o * inn + i] * beta[i];
    data[o] = s;
  }
  return { shape: [out], data };
}

/** Each row of [rows, d] minus its mean (an embedding table's writers). */
export function centreRows(t: WeightTensor): WeightTensor {
  const [rows, d] = t.shape;
  const src = t.data;
  const data = new Float32Array(src.length);
  for (let r = 0; r < rows; r++) {
    let mean = 0;
    for (let j = 0; j < d; j++) mean += src[r * d + j];
    mean /= d;
    for (let j = 0; j < d; j++) data[r * d + j] = src[r * d + j] - mean;
  }
  return { shape: [rows, d], data };
}

/** M W for W [d, in] (an output layer): each column minus its mean over the d rows. */
export function centreColumns(t: WeightTensor): WeightTensor {
  const [d, inn] = t.shape;
  const src = t.data;
  const mean = new Float64Array(inn);
  for (let o = 0; o < d; o++) for (let i = 0; i < inn; i++) mean[i] += src[o * inn + i];
  for (let i = 0; i < inn; i++) mean[i] /= d;
  const data = new Float32Array(src.length);
  for (let o = 0; o < d; o++) for (let i = 0; i < inn; i++) data[o * inn + i] = src[o * inn + i] - mean[i];
  return { shape: [d, inn], data };
}

/** M b: a bias [d] minus its mean. */
function centreVector(t: WeightTensor): WeightTensor {
  const src = t.data;
  let mean = 0;
  for (const v of src) mean += v;
  mean /= src.length;
  return { shape: [...t.shape], data: src.map((v) => v - mean) };
}
