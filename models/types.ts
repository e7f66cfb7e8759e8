/**
 * The one model interface that the rest of SliceServe uses: a config, named weight tensors
 * and a tokenizer. Loaders (llama2.c checkpoints, Hugging Face directories, sliced
 * artifacts) produce it; the graph builder, the slicer, `eval` and the server consume it.
 *
 * Conventions (same as Hugging Face transformers / safetensors):
 * - weight names are the Hugging Face Llama names (`model.layers.{i}.self_attn.q_proj.weight`);
 * - linear weights are stored `[out, in]`, so a layer computes `y = x W^T`;
 * - RoPE rotates the first half of each head against the second half (HF layout). llama2.c
 *   checkpoints are permuted into this layout when loaded (see models/llama2c.ts);
 * - every tensor is held as float32 in memory, whatever its on-disk dtype.
 */

/** A dense tensor held in memory, row-major. `data.length` equals the product of `shape`. */
export interface WeightTensor {
  shape: number[];
  data: Float32Array;
}

/** Named weights of a model. Keys are Hugging Face parameter names. */
export type WeightMap = Map<string, WeightTensor>;

/**
 * What SliceGPT changed, recorded in `config.json` of a sliced artifact under `sliceserve`.
 * Source: Ashkboos et al. 2024 (arXiv 2401.15024), sections 3.1-3.4.
 */
export interface SlicingInfo {
  /** Fraction of the embedding width removed, in [0, 1). */
  sparsity: number;
  /** Residual width before slicing (the RMSNorm divisor keeps using it). */
  original_hidden_size: number;
  /** Residual width after slicing, d'. */
  sliced_hidden_size: number;
  round_interval: number;
  /** Whether the head's input was sliced too (else the last layer outputs the full width). */
  slice_head: boolean;
  calibration: {
    file: string;
    sha256: string;
    windows: number;
    seq_len: number;
    tokens: number;
  };
  /** sha256 of the dense model's weights the slice was computed from. */
  source_model_sha256: string;
  /** Id of the dense model the slice was computed from (absent in artifacts of before it was recorded). */
  source_model?: string;
  created: string;
}

/**
 * Llama-family hyperparameters, with the field names of Hugging Face `config.json`.
 * For a sliced model, `hidden_size` is still the ORIGINAL width d (the RMSNorm divisor);
 * the actual residual widths are read from the weight shapes, and `sliceserve` says what
 * was sliced.
 */
export interface LlamaConfig {
  architectures: string[];
  model_type: string;
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  num_key_value_heads: number;
  head_dim: number;
  vocab_size: number;
  max_position_embeddings: number;
  rms_norm_eps: number;
  rope_theta: number;
  tie_word_embeddings: boolean;
  bos_token_id: number;
  /** The end-of-sequence id (the first one where config.json lists several). */
  eos_token_id: number;
  /**
   * Every id that ends a generated sequence, `eos_token_id` first: config.json's
   * `eos_token_id` list (Llama 3 style), or for a llama2.c checkpoint EOS and BOS (llama2.c's
   * run.c ends a sample at BOS, which separates the stories it was trained on). Absent:
   * `[eos_token_id]`.
   */
  eos_token_ids?: number[];
  /** Present only on sliced models. */
  sliceserve?: SlicingInfo;
}

/** Options of {@link TextTokenizer.encode}. */
export interface EncodeOptions {
  /** Prepend the BOS id (default true). */
  addBos?: boolean;
}

/** Text <-> token ids. Backed by `@huggingface/tokenizers` (models/tokenizer/). */
export interface TextTokenizer {
  readonly vocabSize: number;
  readonly bosTokenId: number;
  readonly eosTokenId: number;
  /** Every id that ends a generated sequence, {@link eosTokenId} first (see LlamaConfig.eos_token_ids). */
  readonly eosTokenIds: readonly number[];
  /** Token ids of `text`; see {@link EncodeOptions}. */
  encode(text: string, options?: EncodeOptions): number[];
  /**
   * Text of `ids`. Special tokens (BOS/EOS/UNK) are dropped; byte-fallback tokens are
   * fused into UTF-8. Returns '' for an empty list.
   */
  decode(ids: readonly number[]): string;
  /** The Hugging Face `tokenizer.json` object, for writing a model directory. */
  toJSON(): object;
}

/** Where a model came from. */
export type ModelFormat = 'llama2c' | 'huggingface';

/** A loaded model: what every consumer receives. */
export interface LoadedModel {
  /** A stable, human-friendly id (directory name by default), used as the API model id. */
  id: string;
  /** Absolute path of the directory it was loaded from ('' if built in memory). */
  dir: string;
  format: ModelFormat;
  config: LlamaConfig;
  weights: WeightMap;
  tokenizer: TextTokenizer;
}

/** Weight-name helpers (Hugging Face Llama names). */
export const W = {
  embed: 'model.embed_tokens.weight',
  finalNorm: 'model.norm.weight',
  lmHead: 'lm_head.weight',
  layer: (i: number) => `model.layers.${i}`,
  q: (i: number) => `model.layers.${i}.self_attn.q_proj.weight`,
  k: (i: number) => `model.layers.${i}.self_attn.k_proj.weight`,
  v: (i: number) => `model.layers.${i}.self_attn.v_proj.weight`,
  o: (i: number) => `model.layers.${i}.self_attn.o_proj.weight`,
  gate: (i: number) => `model.layers.${i}.mlp.gate_proj.weight`,
  up: (i: number) => `model.layers.${i}.mlp.up_proj.weight`,
  down: (i: number) => `model.layers.${i}.mlp.down_proj.weight`,
  attnNorm: (i: number) => `model.layers.${i}.input_layernorm.weight`,
  mlpNorm: (i: number) => `model.layers.${i}.post_attention_layernorm.weight`,
  /** SliceGPT attention shortcut, stored `[in, out]`: `h = x @ S_attn + attn(norm(x))`. */
  attnShortcut: (i: number) => `model.layers.${i}.attn_shortcut_Q`,
  /** SliceGPT MLP shortcut, stored `[in, out]`: `out = h @ S_mlp + mlp(norm(h))`. */
  mlpShortcut: (i: number) => `model.layers.${i}.mlp_shortcut_Q`,
} as const;

/** Error for bad model input: names the file and the problem. */
export class ModelLoadError extends Error {
  constructor(
    readonly file: string,
    problem: string,
  ) {
    super(`${file}: ${problem}`);
    this.name = 'ModelLoadError';
  }
}
