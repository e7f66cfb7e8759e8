/**
 * The one model interface that the rest of SliceServe uses: a config, named weight tensors
 * and a tokenizer. Loaders (llama2.c checkpoints, Hugging Face directories, sliced
 * artifacts) produce it; the graph builder, the slicer, `eval` and the server consume it.
 *
 * Conventions (same as Hugging Face transformers / safetensors):
 * - weight names are the checkpoint's own Hugging Face names; the family's layout
 *   (models/arch/, found through models/registry.ts) says what each tensor is;
 * - linear weights are stored `[out, in]`, so a layer computes `y = x W^T`;
 * - RoPE rotates the first half of each head against the second half (HF layout). llama2.c
 *   checkpoints are permuted into this layout when loaded (see models/llama2c.ts);
 * - a tensor's values are float32 wherever they are used, whatever its on-disk dtype; a
 *   model loaded from safetensors keeps its tensors on disk in their own dtype and reads one
 *   when it is used (models/lazy-tensor.ts).
 */

/** How a tensor's values are stored: torch dtype names. */
export type WeightDtype = 'float32' | 'float16' | 'bfloat16' | 'float64';

/**
 * A dense tensor, row-major. `data.length` equals the product of `shape`. A plain object holds
 * its values in memory; a {@link LazyTensor} (models/lazy-tensor.ts) produces them on each read
 * of `data` (read `data` once into a local), and `tensorLength` counts elements without reading.
 */
export interface WeightTensor {
  shape: number[];
  /** The values as float32. */
  readonly data: Float32Array;
  /** The dtype the values are stored in; absent: a float32 array in memory. */
  readonly dtype?: WeightDtype;
}

/** Named weights of a model. Keys are Hugging Face parameter names. */
export type WeightMap = Map<string, WeightTensor>;

export type { DecoderConfig, SliceQuality, SlicingInfo } from './config.js';
import type { DecoderConfig } from './config.js';
import type { ModelQuantization } from './quant/model.js';

/** Options of {@link TextTokenizer.encode}. */
export interface EncodeOptions {
  /**
   * Add the special tokens that transformers' `tokenizer(text)` adds (its `add_special_tokens`,
   * default true): the family's BOS (Llama, Mistral, llama2.c), `</s>` (OPT), nothing (Qwen,
   * Phi-2), as tokenizer.json / tokenizer_config.json say. false: the text's own ids only.
   */
  addSpecialTokens?: boolean;
}

/** Text <-> token ids. Backed by `@huggingface/tokenizers` (models/tokenizer/). */
export interface TextTokenizer {
  readonly vocabSize: number;
  /**
   * The BOS token's id (transformers' `tokenizer.bos_token_id`); null when the tokenizer has
   * no BOS token (Qwen2/Qwen3). It says nothing about whether `encode` adds it.
   */
  readonly bosTokenId: number | null;
  /** The BOS token's string (`<s>`, `<|begin_of_text|>`, ...; a chat template's `bos_token`), or null. */
  readonly bosToken: string | null;
  readonly eosTokenId: number;
  /** The EOS token's string (a chat template's `eos_token`), or null. */
  readonly eosToken: string | null;
  /** Every id that ends a generated sequence, {@link eosTokenId} first (see DecoderConfig.eos_token_ids). */
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
  config: DecoderConfig;
  weights: WeightMap;
  tokenizer: TextTokenizer;
  /**
   * Quantized weights (models/quant/model.ts): the tensors named there are absent from
   * `weights` and the graph multiplies them with MatMulNBits. Undefined for a float model.
   */
  quantization?: ModelQuantization;
}

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
