/**
 * Test fixtures: small random Llama models built in memory (no files), for graph and slicer
 * tests that need odd shapes (several heads per KV head, head_dim not a multiple of 16).
 */
import { llama } from '../../models/arch/llama/index.js';
import type { LoadedModel, TextTokenizer, WeightTensor } from '../../models/types.js';
import { W } from './llama-names.js';
import { uniformGenerator } from '../../slicer/linalg/random.js';

/** Deterministic PRNG returning floats in [0, 1) (slicer/linalg/random.ts). */
export const rng = uniformGenerator;

/** Standard normal samples (Box-Muller) scaled by `std`. */
export function randn(n: number, std: number, rand: () => number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const u = Math.max(rand(), 1e-12);
    out[i] = std * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rand());
  }
  return out;
}

/** A tokenizer for models that only ever see token ids in tests (encode is not needed). */
export function idsOnlyTokenizer(vocabSize: number): TextTokenizer {
  return {
    vocabSize,
    bosTokenId: 1,
    bosToken: '<s>',
    eosTokenId: 2,
    eosToken: '</s>',
    eosTokenIds: [2],
    encode: () => {
      throw new Error('idsOnlyTokenizer: encode is not available in this fixture');
    },
    decode: (ids) => ids.map((i) => `<${i}>`).join(''),
    toJSON: () => ({}),
  };
}

export interface TinyShape {
  hidden: number;
  layers: number;
  heads: number;
  kvHeads: number;
  intermediate: number;
  vocab: number;
  context: number;
  tied?: boolean;
}

/** A random dense Llama model with norm weights around 1 (so fusion is exercised). */
export function tinyModel(shape: TinyShape, seed = 1): LoadedModel {
  const r = rng(seed);
  const hd = shape.hidden / shape.heads;
  const weights = new Map<string, WeightTensor>();
  const put = (name: string, dims: number[], std: number, mean = 0) => {
    const data = randn(dims.reduce((a, b) => a * b, 1), std, r);
    if (mean) for (let i = 0; i < data.length; i++) data[i] += mean;
    weights.set(name, { shape: dims, data });
  };
  const d = shape.hidden;
  put(W.embed, [shape.vocab, d], 1);
  for (let l = 0; l < shape.layers; l++) {
    put(W.attnNorm(l), [d], 0.1, 1);
    put(W.q(l), [shape.heads * hd, d], 1 / Math.sqrt(d));
    put(W.k(l), [shape.kvHeads * hd, d], 1 / Math.sqrt(d));
    put(W.v(l), [shape.kvHeads * hd, d], 1 / Math.sqrt(d));
    put(W.o(l), [d, shape.heads * hd], 1 / Math.sqrt(d));
    put(W.mlpNorm(l), [d], 0.1, 1);
    put(W.gate(l), [shape.intermediate, d], 1 / Math.sqrt(d));
    put(W.up(l), [shape.intermediate, d], 1 / Math.sqrt(d));
    put(W.down(l), [d, shape.intermediate], 1 / Math.sqrt(shape.intermediate));
  }
  put(W.finalNorm, [d], 0.1, 1);
  if (!shape.tied) put(W.lmHead, [shape.vocab, d], 1 / Math.sqrt(d));
  const config = llama.parseConfig({
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    hidden_size: d,
    intermediate_size: shape.intermediate,
    num_hidden_layers: shape.layers,
    num_attention_heads: shape.heads,
    num_key_value_heads: shape.kvHeads,
    head_dim: hd,
    vocab_size: shape.vocab,
    max_position_embeddings: shape.context,
    rms_norm_eps: 1e-5,
    rope_theta: 10000,
    tie_word_embeddings: !!shape.tied,
    bos_token_id: 1,
    eos_token_id: 2,
  }, 'tiny model');
  return { id: 'tiny', dir: '', format: 'huggingface', config, weights, tokenizer: idsOnlyTokenizer(shape.vocab) };
}
