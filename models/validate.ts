/**
 * Checks that a model's tensors are exactly what its config and family layout call for
 * (names and shapes), for dense models and for SliceGPT-sliced ones (SLICEGPT.md sections 2-6;
 * Ashkboos et al. 2024, arXiv 2401.15024, sections 3.2-3.4), and that the tokenizer fits the
 * embedding.
 */
import type { DecoderConfig } from './config.js';
import type { DecoderLayout, LinearNames, NormNames } from './arch/spec.js';
import { tensorLength } from './lazy-tensor.js';
import { layoutOf } from './registry.js';
import { ModelLoadError, type TextTokenizer, type WeightMap } from './types.js';

/**
 * Shape of every tensor a model with `config` must have, by name.
 *
 * Dense (H heads, KV key/value heads, hd head_dim, d hidden_size, I intermediate_size, V vocab,
 * P max_position_embeddings + the position offset): embed [V, d]; learned positions [P, d]; per
 * layer q [H*hd, d], k/v [KV*hd, d], o [d, H*hd], gate/up (fc1) [I, d], down (fc2) [d, I], each
 * bias [out]; norms [d] (weight, and bias for LayerNorm); q/k norms [hd]; final norm [d];
 * lm_head [V, d] unless tied.
 *
 * Sliced (config.sliceserve, d' = sliced_hidden_size): no norm weights (fused, paper Sec. 3.2);
 * embed (and positions) [*, d']; layer l reads din_l (d' for l = 0, else dout_{l-1}) and writes
 * dout_l (d', except the last layer writes d unless slice_head). Sequential blocks: q/k/v
 * [*, din], o [d', H*hd], attn_shortcut_Q [din, d'], gate/up [I, d'], down [dout, I],
 * mlp_shortcut_Q [d', dout]. Parallel blocks: q/k/v/fc1 read din, o/fc2 write dout,
 * attn_shortcut_Q [din, dout]. lm_head [V, dout_last] (always present, untied).
 */
export function expectedWeightShapes(config: DecoderConfig, layout: DecoderLayout = layoutOf(config)): Map<string, number[]> {
  const { hidden_size: d, intermediate_size: I, vocab_size: V, num_hidden_layers: L } = config;
  const qDim = config.num_attention_heads * config.head_dim;
  const kvDim = config.num_key_value_heads * config.head_dim;
  const shapes = new Map<string, number[]>();
  const s = config.sliceserve;
  const ds = s ? s.sliced_hidden_size : d;
  const linear = (names: LinearNames, out: number, inn: number) => {
    shapes.set(names.weight, [out, inn]);
    if (names.bias) shapes.set(names.bias, [out]);
  };
  const norm = (names: NormNames | undefined, width: number) => {
    if (names?.weight) shapes.set(names.weight, [width]);
    if (names?.bias) shapes.set(names.bias, [width]);
  };
  shapes.set(layout.embedTokens, [V, ds]);
  if (layout.embedPositions) {
    const offset = config.positions.kind === 'learned' ? config.positions.offset : 0;
    shapes.set(layout.embedPositions, [config.max_position_embeddings + offset, ds]);
  }
  let din = ds;
  layout.layers.forEach((layer, l) => {
    const dout = !s || l < L - 1 || s.slice_head ? ds : d;
    const mid = config.block === 'parallel' ? din : ds;
    norm(layer.inputNorm, d);
    linear(layer.q, qDim, din);
    linear(layer.k, kvDim, din);
    linear(layer.v, kvDim, din);
    linear(layer.o, config.block === 'parallel' ? dout : ds, qDim);
    norm(layer.qNorm, config.head_dim);
    norm(layer.kNorm, config.head_dim);
    norm(layer.postAttentionNorm, d);
    if (layer.gate) linear(layer.gate, I, mid);
    linear(layer.up, I, mid);
    linear(layer.down, dout, I);
    if (s) {
      shapes.set(layer.attnShortcut, config.block === 'parallel' ? [din, dout] : [din, ds]);
      if (layer.mlpShortcut) shapes.set(layer.mlpShortcut, [ds, dout]);
    }
    din = dout;
  });
  norm(layout.finalNorm, d);
  if (s || !config.tie_word_embeddings) linear(layout.lmHead, V, din);
  else if (layout.lmHead.bias) shapes.set(layout.lmHead.bias, [V]);
  return shapes;
}

const describe = (shape: readonly number[]) => `[${shape.join(', ')}]`;

/**
 * Checks that `weights` holds exactly the tensors of {@link expectedWeightShapes}, with those
 * shapes and matching data lengths (lazy tensors are not read: their length is their shape's).
 * @param fileOf the file a tensor came from (for the error message).
 * @param configFile the config the shapes follow (named in shape errors).
 * @throws ModelLoadError naming the tensor's file and the tensor: missing, wrong shape (both
 *   shapes given), data length not matching the shape, or a tensor the model does not use.
 */
export function validateWeights(config: DecoderConfig, weights: WeightMap, fileOf: (name: string) => string, configFile = 'config.json'): void {
  const expected = expectedWeightShapes(config);
  const kind = config.sliceserve ? `sliced model (sliced_hidden_size ${config.sliceserve.sliced_hidden_size})` : 'model';
  for (const [name, shape] of expected) {
    const t = weights.get(name);
    if (!t) throw new ModelLoadError(fileOf(name), `missing tensor ${name} (expected shape ${describe(shape)})`);
    if (t.shape.length !== shape.length || t.shape.some((n, i) => n !== shape[i])) {
      throw new ModelLoadError(fileOf(name), `tensor ${name} has shape ${describe(t.shape)}, but ${configFile} ` +
        `(hidden_size ${config.hidden_size}, ${config.num_attention_heads}/${config.num_key_value_heads} heads of ${config.head_dim}, ` +
        `intermediate_size ${config.intermediate_size}, vocab_size ${config.vocab_size}) implies ${describe(shape)} for this ${kind}`);
    }
    const count = shape.reduce((a, b) => a * b, 1);
    if (tensorLength(t) !== count) {
      throw new ModelLoadError(fileOf(name), `tensor ${name} has ${tensorLength(t)} values for shape ${describe(shape)}`);
    }
  }
  const lmHead = layoutOf(config).lmHead.weight;
  for (const name of weights.keys()) {
    if (!expected.has(name)) {
      throw new ModelLoadError(fileOf(name), `unexpected tensor ${name}` +
        (name === lmHead ? ' (tie_word_embeddings is true)' : ` (not part of a ${config.sliceserve ? 'sliced' : 'dense'} ${config.architectures[0]} with ${config.num_hidden_layers} layers)`));
    }
  }
}

/**
 * Checks that the tokenizer fits the embedding: every id it can produce must be below
 * `config.vocab_size` (a smaller tokenizer is fine; models often pad the embedding).
 * @throws ModelLoadError naming the tokenizer file, the config file and both sizes.
 */
export function validateTokenizerSize(tokenizer: TextTokenizer, config: DecoderConfig, tokenizerFile: string, configFile: string): void {
  if (tokenizer.vocabSize > config.vocab_size) {
    throw new ModelLoadError(tokenizerFile, `the tokenizer has ${tokenizer.vocabSize} tokens but ${configFile} has vocab_size ${config.vocab_size}`);
  }
}
