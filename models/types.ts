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
 * - every tensor is held as float32 in memory, whatever its on-disk dtype.
 */

/** A dense tensor held in memory, row-major. `data.length` equals the product of `shape`. */
export interface WeightTensor {
  shape: number[];
  data: Float32Array;
}

/** Named weights of a model. Keys are Hugging Face parameter names. */
export type WeightMap = Map<string, WeightTensor>;

export type { DecoderConfig, SlicingInfo } from './config.js';
import type { DecoderConfig } from './config.js';

/** Options of {@link TextTokenizer.encode}. */
export interface EncodeOptions {
  /** Prepend the BOS id (default true). */
  addBos?: boolean;
}

/** Text <-> token ids. Backed by `@huggingface/tokenizers` (models/tokenizer/). */
export interface TextTokenizer {
  readonly vocabSize: number;
  /** null when the model has no BOS token (Qwen). */
  readonly bosTokenId: number | null;
  readonly eosTokenId: number;
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
