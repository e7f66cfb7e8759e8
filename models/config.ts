/**
 * The family-neutral description of a decoder-only transformer, with the field names of
 * Hugging Face `config.json` where one exists. Every family's config parser
 * (models/arch/<family>/) produces it; the graph builder, the slicer, the runtime and the
 * reference checks read only this, never a family name.
 *
 * For a sliced model, `hidden_size` is still the ORIGINAL width d (the norm divisor, SLICEGPT.md
 * §3); the residual widths are read from the weight shapes, and `sliceserve` says what was
 * sliced. A sliced model's norms are weightless RMSNorms whatever `norm` says (LayerNorm
 * families had their mean baked into the residual writers: SliceGPT §3.1, Appendix A.1).
 */

/** RMSNorm (`x / rms(x) * w`) or LayerNorm (`(x - mean) / std * w + b`). */
export type NormKind = 'rms' | 'layer';

/**
 * MLP activation: silu (SwiGLU when gated), relu, gelu (erf form), gelu_tanh (the tanh
 * approximation: transformers' `gelu_new`, `gelu_pytorch_tanh`, `gelu_fast`).
 */
export type Activation = 'silu' | 'relu' | 'gelu' | 'gelu_tanh';

/**
 * 'sequential': `h = x + attn(norm1(x)); out = h + mlp(norm2(h))` (Llama, OPT, Qwen, Mistral).
 * 'parallel': `out = x + attn(norm(x)) + mlp(norm(x))`, one norm per layer (Phi-2, GPT-J).
 */
export type BlockKind = 'sequential' | 'parallel';

/** transformers' `layer_types` entries. */
export type LayerAttention = 'full_attention' | 'sliding_attention';

/**
 * RoPE frequency scaling (transformers' `rope_scaling` / v5 `rope_parameters`, rope_type
 * default | linear | dynamic | llama3; modeling_rope_utils.py).
 */
export interface RopeScaling {
  rope_type: 'default' | 'linear' | 'dynamic' | 'llama3';
  /** linear: positions / factor; dynamic: NTK factor; llama3: low-frequency division. */
  factor: number;
  /** llama3 only. */
  low_freq_factor?: number;
  /** llama3 only. */
  high_freq_factor?: number;
  /** llama3: the pretraining context; dynamic: the length beyond which the base grows. */
  original_max_position_embeddings?: number;
}

/** Rotary position embedding of the attention heads (Su et al. 2021, RoFormer). */
export interface RotarySpec {
  kind: 'rotary';
  rope_theta: number;
  /**
   * Rotated dimensions of each head, even, <= head_dim (`head_dim * partial_rotary_factor`):
   * the first `rotary_dim` are rotated, first half against second half (the Hugging Face
   * "rotate_half" layout), the rest pass through.
   */
  rotary_dim: number;
  /** null: no scaling (transformers' "default"). */
  rope_scaling: RopeScaling | null;
}

/** Learned absolute position embeddings added to the token embedding (OPT). */
export interface LearnedPositionSpec {
  kind: 'learned';
  /** Row of position 0 in the position embedding table (OPT: 2, transformers' `offset`). */
  offset: number;
}

/**
 * What SliceGPT changed, recorded in `config.json` of a sliced artifact under `sliceserve`.
 * Source: Ashkboos et al. 2024 (arXiv 2401.15024), sections 3.1-3.4.
 */
export interface SlicingInfo {
  /** Fraction of the embedding width removed, in [0, 1). */
  sparsity: number;
  /** Residual width before slicing (the norm divisor keeps using it). */
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
  /** Perplexity of the slice and of its dense model on a held-out sample (absent when not evaluated). */
  quality?: SliceQuality;
  created: string;
}

/** The quality cost of a slice: perplexity of the sliced and the dense model on one held-out sample (slicer/quality.ts). */
export interface SliceQuality {
  /** Basename of the held-out text file (not the calibration file). */
  file: string;
  sha256: string;
  windows: number;
  /** Tokens per window. */
  seq_len: number;
  /** Predicted tokens: windows x (seq_len - 1). */
  tokens: number;
  /** Perplexity of the sliced model. */
  perplexity: number;
  /** Perplexity of the dense model it was sliced from. */
  dense_perplexity: number;
}

/** A decoder-only model's hyperparameters and structure (see the module comment). */
export interface DecoderConfig {
  /** config.json `architectures`; the registry (models/registry.ts) resolves the family from it. */
  architectures: string[];
  model_type: string;
  hidden_size: number;
  /** MLP width (OPT's `ffn_dim`). */
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  /** Equal to num_attention_heads for multi-head attention. */
  num_key_value_heads: number;
  head_dim: number;
  vocab_size: number;
  max_position_embeddings: number;
  /** Norm of the dense model (a sliced model's norms are weightless RMSNorms, see above). */
  norm: NormKind;
  /** `rms_norm_eps` or `layer_norm_eps` (OPT: 1e-5, nn.LayerNorm's default). */
  norm_eps: number;
  block: BlockKind;
  /** Gated MLP `down(act(gate(x)) * up(x))`, else `fc2(act(fc1(x)))`. */
  gated_mlp: boolean;
  hidden_act: Activation;
  positions: RotarySpec | LearnedPositionSpec;
  /**
   * Per-head norms of q and k over head_dim, applied before RoPE (Qwen3's q_norm/k_norm: RMS;
   * Phi's qk_layernorm: LayerNorm). null: none.
   */
  qk_norm: NormKind | null;
  /**
   * Attention window W of the layers whose `layer_types` entry is 'sliding_attention': the query
   * at position i attends to keys at positions j with i - W < j <= i (transformers'
   * masking_utils `sliding_window_overlay`). null when no layer slides.
   */
  sliding_window: number | null;
  /** One entry per layer. */
  layer_types: LayerAttention[];
  tie_word_embeddings: boolean;
  /** null when the model has none (Qwen). */
  bos_token_id: number | null;
  /** The end-of-sequence id (the first one where config.json lists several). */
  eos_token_id: number;
  /**
   * Every id that ends a generated sequence, `eos_token_id` first: config.json's
   * `eos_token_id` list (Llama 3 style), or for a llama2.c checkpoint EOS and BOS (llama2.c's
   * run.c ends a sample at BOS). Absent: `[eos_token_id]`.
   */
  eos_token_ids?: number[];
  /** Present only on sliced models. */
  sliceserve?: SlicingInfo;
  /**
   * True on the slicer's intermediate model whose norms are fused (weightless) but which is
   * not sliced yet (SliceGPT §3.1); implied by `sliceserve`. Never read from config.json.
   */
  fused_norms?: boolean;
  /**
   * The config.json object as read (absent for models built in memory). Saving writes it back
   * with what SliceServe changed (tie_word_embeddings, torch_dtype, sliceserve), so that an
   * artifact keeps its family's own fields.
   */
  source?: Readonly<Record<string, unknown>>;
}

/** Every id that ends a generated sequence (see DecoderConfig.eos_token_ids). */
export function endOfSequenceIds(config: Pick<DecoderConfig, 'eos_token_id' | 'eos_token_ids'>): number[] {
  return config.eos_token_ids && config.eos_token_ids.length > 0 ? config.eos_token_ids : [config.eos_token_id];
}

/**
 * Whether the norms are fused into the layers that read them (weightless norms, readers with
 * the LayerNorm bias folded in, untied head): a sliced model or the slicer's fused model.
 */
export function normsFused(config: Pick<DecoderConfig, 'sliceserve' | 'fused_norms'>): boolean {
  return config.sliceserve !== undefined || config.fused_norms === true;
}

/**
 * The longest sequence the model takes: max_position_embeddings, times the factor of linear
 * and dynamic RoPE scaling (whose max_position_embeddings is the pretraining context they
 * extend; vLLM's `max_model_len` derivation does the same). llama3 models already state their
 * extended context in max_position_embeddings.
 */
export function contextLength(config: Pick<DecoderConfig, 'max_position_embeddings' | 'positions'>): number {
  const scaling = config.positions.kind === 'rotary' ? config.positions.rope_scaling : null;
  if (scaling && (scaling.rope_type === 'linear' || scaling.rope_type === 'dynamic')) return Math.floor(config.max_position_embeddings * scaling.factor);
  return config.max_position_embeddings;
}

/** Whether layer `l` uses the sliding window (DecoderConfig.sliding_window). */
export function isSlidingLayer(config: Pick<DecoderConfig, 'layer_types' | 'sliding_window'>, l: number): boolean {
  return config.sliding_window !== null && config.layer_types[l] === 'sliding_attention';
}
