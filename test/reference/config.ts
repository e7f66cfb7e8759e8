/**
 * Reading a raw Hugging Face `config.json` the way transformers does, for the reference forward
 * pass: the family (from `architectures`), every default of the family's `configuration_*.py`,
 * the RoPE parameters (`rope_scaling` of transformers 4.x or `rope_parameters` of v5, legacy
 * `type` key), the attention window of every layer, and SliceServe's `sliceserve` section.
 *
 * Sources (transformers, src/transformers/):
 * - models/{llama,mistral,qwen2,qwen3,opt,phi,phi3}/configuration_*.py: defaults;
 * - modeling_rope_utils.py: `_compute_*_parameters`, `RotaryEmbeddingConfigMixin`
 *   (`convert_rope_params_to_dict`, `standardize_rope_params`);
 * - models/qwen3/configuration_qwen3.py `Qwen3Config.__init__`: `layer_types`.
 * Nothing here reads SliceServe's product code.
 */
import { parseActivation, ReferenceUnsupportedError, type ActivationName } from './math.js';

/** A parsed config.json object. */
export type JsonConfig = Record<string, unknown>;

/** The families the reference implements, by transformers' `architectures` name. */
export const REFERENCE_ARCHITECTURES = {
  LlamaForCausalLM: 'llama',
  MistralForCausalLM: 'mistral',
  Qwen2ForCausalLM: 'qwen2',
  Qwen3ForCausalLM: 'qwen3',
  OPTForCausalLM: 'opt',
  PhiForCausalLM: 'phi',
  Phi3ForCausalLM: 'phi3',
} as const;

export type ReferenceFamily = (typeof REFERENCE_ARCHITECTURES)[keyof typeof REFERENCE_ARCHITECTURES];

/** The RoPE variants implemented (modeling_rope_utils.py `ROPE_INIT_FUNCTIONS` + "default"). */
export type RopeType = 'default' | 'linear' | 'dynamic' | 'llama3';

/** Resolved rotary-embedding parameters. */
export interface RopeSpec {
  type: RopeType;
  /** rope_theta, the base. */
  theta: number;
  /** Rotated dims at the start of each head: int(head_dim * partial_rotary_factor), even. */
  rotaryDim: number;
  /** partial_rotary_factor as resolved (1 unless the config or the family says otherwise). */
  partialRotaryFactor: number;
  /** `factor` of linear / dynamic / llama3. */
  factor: number;
  /** llama3 only. */
  lowFreqFactor: number;
  highFreqFactor: number;
  /** llama3 only: `original_max_position_embeddings` (the pre-training context). */
  originalMaxPositionEmbeddings: number;
  /** config.max_position_embeddings (the dynamic-NTK threshold). */
  maxPositionEmbeddings: number;
}

/** What `config.sliceserve` of a SliceGPT artifact says (only the fields the forward needs). */
export interface SlicedSpec {
  /** The residual width before slicing: every weightless norm divides by it. */
  originalHiddenSize: number;
  slicedHiddenSize: number | null;
  sparsity: number | null;
}

/** Everything the reference forward needs to know about a model, resolved from config.json. */
export interface ResolvedConfig {
  family: ReferenceFamily;
  architecture: keyof typeof REFERENCE_ARCHITECTURES;
  hiddenSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  vocabSize: number;
  intermediateSize: number;
  maxPositionEmbeddings: number;
  /** RMSNorm (Llama, Mistral, Qwen, Phi-3) or LayerNorm (OPT, Phi). */
  norm: 'rms' | 'layer';
  /** rms_norm_eps or layer_norm_eps (OPT: nn.LayerNorm's default 1e-5). */
  normEps: number;
  /** OPT `layer_norm_elementwise_affine`; true elsewhere. */
  normAffine: boolean;
  activation: ActivationName;
  /** gated: down(act(gate) * up); gated-fused: Phi-3's gate_up_proj; plain: fc2(act(fc1)). */
  mlp: 'gated' | 'gated-fused' | 'plain';
  /** sequential pre-norm blocks, or parallel ones (Phi-2). */
  block: 'sequential' | 'parallel';
  /** Rotary or learned (OPT, offset 2) positions. */
  positions: 'rope' | 'learned';
  rope: RopeSpec | null;
  /** Per layer: the sliding window W (query i sees keys j with i - W < j <= i), or null. */
  layerWindows: (number | null)[];
  /** Per-head norm of q and k before RoPE: Qwen3 RMSNorm, Phi LayerNorm (qk_layernorm). */
  qkNorm: 'none' | 'rms' | 'layer';
  tieWordEmbeddings: boolean;
  /** Which linears carry a bias in the dense model. */
  bias: { qkv: boolean; o: boolean; mlp: boolean; head: boolean };
  /** Present on SliceServe's sliced artifacts. */
  sliced: SlicedSpec | null;
}

// ---------------------------------------------------------------------------------------------
// Small typed readers. Python defaults apply only when a key is ABSENT; an explicit null is
// Python None, which some fields treat differently (Mistral's sliding_window: null = full).
// ---------------------------------------------------------------------------------------------

function has(c: JsonConfig, key: string): boolean {
  return Object.prototype.hasOwnProperty.call(c, key);
}

function num(c: JsonConfig, key: string, fallback?: number): number {
  const v = c[key];
  if (v === undefined || v === null) {
    if (fallback === undefined) throw new ReferenceUnsupportedError(`config.json has no ${key}`);
    return fallback;
  }
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new ReferenceUnsupportedError(`config.json ${key} must be a number, got ${JSON.stringify(v)}`);
  return v;
}

function int(c: JsonConfig, key: string, fallback?: number): number {
  const v = num(c, key, fallback);
  if (!Number.isInteger(v) || v <= 0) throw new ReferenceUnsupportedError(`config.json ${key} must be a positive integer, got ${v}`);
  return v;
}

function bool(c: JsonConfig, key: string, fallback: boolean): boolean {
  const v = c[key];
  if (v === undefined || v === null) return fallback;
  if (typeof v !== 'boolean') throw new ReferenceUnsupportedError(`config.json ${key} must be a boolean, got ${JSON.stringify(v)}`);
  return v;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Family defaults from each configuration_*.py (only the fields the forward uses). */
interface FamilyDefaults {
  vocab_size: number;
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  max_position_embeddings: number;
  eps: number;
  act: string;
  tie: boolean;
}

const DEFAULTS: Record<ReferenceFamily, FamilyDefaults> = {
  // LlamaConfig
  llama: { vocab_size: 32000, hidden_size: 4096, intermediate_size: 11008, num_hidden_layers: 32, num_attention_heads: 32, max_position_embeddings: 2048, eps: 1e-6, act: 'silu', tie: false },
  // MistralConfig (num_key_value_heads 8, sliding_window 4096 handled below)
  mistral: { vocab_size: 32000, hidden_size: 4096, intermediate_size: 14336, num_hidden_layers: 32, num_attention_heads: 32, max_position_embeddings: 4096 * 32, eps: 1e-6, act: 'silu', tie: false },
  // Qwen2Config
  qwen2: { vocab_size: 151936, hidden_size: 4096, intermediate_size: 22016, num_hidden_layers: 32, num_attention_heads: 32, max_position_embeddings: 32768, eps: 1e-6, act: 'silu', tie: false },
  // Qwen3Config (head_dim 128)
  qwen3: { vocab_size: 151936, hidden_size: 4096, intermediate_size: 22016, num_hidden_layers: 32, num_attention_heads: 32, max_position_embeddings: 32768, eps: 1e-6, act: 'silu', tie: false },
  // OPTConfig (ffn_dim 3072; tie_word_embeddings is PretrainedConfig's default True)
  opt: { vocab_size: 50272, hidden_size: 768, intermediate_size: 3072, num_hidden_layers: 12, num_attention_heads: 12, max_position_embeddings: 2048, eps: 1e-5, act: 'relu', tie: true },
  // PhiConfig (partial_rotary_factor 0.5)
  phi: { vocab_size: 51200, hidden_size: 2048, intermediate_size: 8192, num_hidden_layers: 24, num_attention_heads: 32, max_position_embeddings: 2048, eps: 1e-5, act: 'gelu_new', tie: false },
  // Phi3Config
  phi3: { vocab_size: 32064, hidden_size: 3072, intermediate_size: 8192, num_hidden_layers: 32, num_attention_heads: 32, max_position_embeddings: 4096, eps: 1e-5, act: 'silu', tie: false },
};

/**
 * The family of a config.json: `architectures[0]`, which transformers' `AutoModelForCausalLM`
 * does not need but every checkpoint carries.
 * @throws ReferenceUnsupportedError naming the supported architectures.
 */
export function referenceFamily(config: JsonConfig): { family: ReferenceFamily; architecture: keyof typeof REFERENCE_ARCHITECTURES } {
  const archs = config.architectures;
  const name = Array.isArray(archs) && typeof archs[0] === 'string' ? archs[0] : undefined;
  if (name === undefined) throw new ReferenceUnsupportedError('config.json has no "architectures" list');
  if (Array.isArray(archs) && archs.length !== 1) throw new ReferenceUnsupportedError(`config.json lists ${archs.length} architectures; the reference reads exactly one`);
  if (!(name in REFERENCE_ARCHITECTURES)) {
    throw new ReferenceUnsupportedError(`architecture ${name} is not implemented by the reference; supported: ${Object.keys(REFERENCE_ARCHITECTURES).join(', ')}`);
  }
  const arch = name as keyof typeof REFERENCE_ARCHITECTURES;
  return { family: REFERENCE_ARCHITECTURES[arch], architecture: arch };
}

/**
 * The head dimension as each family's attention module computes it:
 * - Llama, Mistral: `config.head_dim` when set and not None, else hidden_size // heads
 *   (`getattr(config, "head_dim", None) or hidden_size // num_attention_heads`);
 * - Qwen2, Phi-3: `getattr(config, "head_dim", hidden_size // heads)`: a config.json head_dim
 *   wins; an explicit null would crash transformers, so it is refused here;
 * - Qwen3: `Qwen3Config.head_dim` defaults to 128 when the key is ABSENT (not hidden/heads);
 * - OPT: always hidden_size // heads; Phi: the same (another head_dim is refused).
 */
function resolveHeadDim(family: ReferenceFamily, c: JsonConfig, hidden: number, heads: number): number {
  const derived = Math.floor(hidden / heads);
  switch (family) {
    case 'llama':
    case 'mistral':
      return c.head_dim === undefined || c.head_dim === null || c.head_dim === 0 ? derived : int(c, 'head_dim');
    case 'qwen2':
    case 'phi3':
      if (c.head_dim === null) throw new ReferenceUnsupportedError('config.json head_dim is null; transformers would fail on it');
      return has(c, 'head_dim') ? int(c, 'head_dim') : derived;
    case 'qwen3':
      if (c.head_dim === null) throw new ReferenceUnsupportedError('config.json head_dim is null; transformers would fail on it');
      return int(c, 'head_dim', 128);
    case 'opt':
      if (hidden % heads !== 0) throw new ReferenceUnsupportedError(`hidden_size ${hidden} is not divisible by num_attention_heads ${heads}`);
      return derived;
    case 'phi':
      // PhiAttention takes LlamaAttention's head_dim, but its q/k LayerNorms are built over
      // hidden_size // heads: only a head_dim equal to that is coherent.
      if (hidden % heads !== 0) throw new ReferenceUnsupportedError(`hidden_size ${hidden} is not divisible by num_attention_heads ${heads}`);
      if (c.head_dim !== undefined && c.head_dim !== null && c.head_dim !== derived) throw new ReferenceUnsupportedError(`Phi with head_dim ${String(c.head_dim)} != hidden_size / num_attention_heads ${derived}`);
      return derived;
  }
}

const LAYER_TYPE_KEYS = new Set(['full_attention', 'sliding_attention']);

/**
 * RoPE parameters as transformers resolves them.
 *
 * Where they live: transformers 4.x reads `rope_theta` and `partial_rotary_factor` from the
 * top level and the scaling from `rope_scaling`; v5 moves all of them into `rope_parameters`
 * (`convert_rope_params_to_dict`: a non-empty `rope_scaling` wins over `rope_parameters`; the
 * dict's `rope_theta` wins over the top-level one). Conflicting duplicates are refused here
 * rather than resolved, since the two versions resolve them differently.
 *
 * The type: `rope_type`, else the legacy `type` (4.x config `__init__` copies `type` over
 * `rope_type`; v5 `standardize_rope_params` keeps `rope_type`: refused when they differ).
 * Phi-3's legacy `su`/`yarn` mean `longrope`, which is refused like yarn and every other type.
 *
 * The rotated width: `int(head_dim * partial_rotary_factor)` (v4.45+ and v5 use the resolved
 * head_dim; 4.44 and older used hidden_size // heads even with an explicit head_dim).
 */
function resolveRope(family: ReferenceFamily, c: JsonConfig, headDim: number, maxPos: number): RopeSpec {
  const scaling = c.rope_scaling;
  const params = c.rope_parameters;
  if (scaling !== undefined && scaling !== null && !isObject(scaling)) throw new ReferenceUnsupportedError('config.json rope_scaling must be an object or null');
  if (params !== undefined && params !== null && !isObject(params)) throw new ReferenceUnsupportedError('config.json rope_parameters must be an object or null');
  let dict: Record<string, unknown> = {};
  if (isObject(scaling) && Object.keys(scaling).length > 0) dict = scaling;
  else if (isObject(params)) dict = params;
  if (Object.keys(dict).length > 0 && Object.keys(dict).every((k) => LAYER_TYPE_KEYS.has(k))) {
    throw new ReferenceUnsupportedError('per-layer-type rope_parameters are not supported by the reference');
  }
  if (isObject(scaling) && isObject(params) && Object.keys(scaling).length > 0 && Object.keys(params).length > 0) {
    for (const key of ['rope_type', 'type', 'factor'] as const) {
      if (key in params && key in scaling && params[key] !== scaling[key]) {
        throw new ReferenceUnsupportedError(`rope_scaling.${key} and rope_parameters.${key} disagree`);
      }
    }
  }

  const pick = (key: string, topLevel: unknown): unknown => {
    const inner = dict[key];
    const hasInner = inner !== undefined && inner !== null;
    const hasTop = topLevel !== undefined && topLevel !== null;
    if (hasInner && hasTop && inner !== topLevel) throw new ReferenceUnsupportedError(`${key} is ${JSON.stringify(topLevel)} at the top level but ${JSON.stringify(inner)} in the rope dict`);
    return hasInner ? inner : hasTop ? topLevel : undefined;
  };

  const thetaRaw = pick('rope_theta', c.rope_theta);
  const theta = thetaRaw === undefined ? 10000 : thetaRaw;
  if (typeof theta !== 'number' || !(theta > 0)) throw new ReferenceUnsupportedError(`rope_theta must be a positive number, got ${JSON.stringify(theta)}`);

  const ropeType = dict.rope_type;
  const legacyType = dict.type;
  if (ropeType !== undefined && legacyType !== undefined && ropeType !== legacyType) {
    throw new ReferenceUnsupportedError(`rope dict has rope_type ${JSON.stringify(ropeType)} but legacy type ${JSON.stringify(legacyType)}; transformers 4.x and v5 disagree on which wins`);
  }
  let type = (ropeType ?? legacyType ?? 'default') as unknown;
  if (typeof type !== 'string') throw new ReferenceUnsupportedError(`rope_type must be a string, got ${JSON.stringify(type)}`);
  if (family === 'phi3' && (type === 'su' || type === 'yarn')) type = 'longrope';
  if (type !== 'default' && type !== 'linear' && type !== 'dynamic' && type !== 'llama3') {
    throw new ReferenceUnsupportedError(`rope type ${JSON.stringify(type)} is not supported by the reference (supported: default, linear, dynamic, llama3)`);
  }

  const prfRaw = pick('partial_rotary_factor', c.partial_rotary_factor);
  const prf = prfRaw === undefined ? (family === 'phi' ? 0.5 : 1.0) : prfRaw;
  if (typeof prf !== 'number' || !(prf > 0 && prf <= 1)) throw new ReferenceUnsupportedError(`partial_rotary_factor must be in (0, 1], got ${JSON.stringify(prf)}`);
  const rotaryDim = Math.trunc(headDim * prf);
  if (rotaryDim < 2 || rotaryDim % 2 !== 0) {
    throw new ReferenceUnsupportedError(`rotary width int(${headDim} * ${prf}) = ${rotaryDim} must be even and at least 2`);
  }

  const need = (key: string): number => {
    const v = dict[key];
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new ReferenceUnsupportedError(`rope type ${type} needs a numeric ${key}, got ${JSON.stringify(v)}`);
    return v;
  };
  const spec: RopeSpec = {
    type, theta, rotaryDim, partialRotaryFactor: prf, factor: 1, lowFreqFactor: NaN, highFreqFactor: NaN,
    originalMaxPositionEmbeddings: NaN, maxPositionEmbeddings: maxPos,
  };
  if (type === 'linear' || type === 'dynamic' || type === 'llama3') spec.factor = need('factor');
  if (type === 'llama3') {
    spec.lowFreqFactor = need('low_freq_factor');
    spec.highFreqFactor = need('high_freq_factor');
    if (!(spec.highFreqFactor > spec.lowFreqFactor)) throw new ReferenceUnsupportedError('llama3 rope needs high_freq_factor > low_freq_factor');
    // v5 standardize_rope_params: a top-level original_max_position_embeddings (Phi-3 style)
    // overrides the dict's; absent both, max_position_embeddings. 4.x requires the dict key.
    const top = c.original_max_position_embeddings;
    const inner = dict.original_max_position_embeddings;
    if (typeof top === 'number' && typeof inner === 'number' && top !== inner) {
      throw new ReferenceUnsupportedError(`original_max_position_embeddings is ${top} at the top level but ${inner} in the rope dict`);
    }
    const o = typeof top === 'number' ? top : typeof inner === 'number' ? inner : maxPos;
    if (!Number.isInteger(o) || o <= 0) throw new ReferenceUnsupportedError(`original_max_position_embeddings must be a positive integer, got ${o}`);
    spec.originalMaxPositionEmbeddings = o;
  }
  return spec;
}

function windowValue(v: unknown, key: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) throw new ReferenceUnsupportedError(`${key} must be a positive integer or null, got ${JSON.stringify(v)}`);
  return v;
}

/**
 * The attention window of every layer.
 * - Mistral: `sliding_window` (MistralConfig default 4096 when the key is absent; null = full),
 *   the same for every layer (`create_sliding_window_causal_mask` when it is set).
 * - Phi-3: `sliding_window` (default None), every layer.
 * - Qwen2 / Qwen3: `sliding_window` counts only when `use_sliding_window` is true (config
 *   `__init__`: `sliding_window if use_sliding_window else None`); then `layer_types` decides,
 *   explicit or derived as "sliding_attention" for layer i >= max_window_layers (default 28).
 *   A "sliding_attention" layer with no window makes transformers raise in
 *   `create_sliding_window_causal_mask`, so it is refused here.
 * - Llama, OPT, Phi: no window.
 */
function resolveWindows(family: ReferenceFamily, c: JsonConfig, numLayers: number): (number | null)[] {
  const all = (w: number | null) => Array.from({ length: numLayers }, () => w);
  switch (family) {
    case 'mistral': {
      if (!has(c, 'sliding_window')) return all(4096);
      return all(c.sliding_window === null ? null : windowValue(c.sliding_window, 'sliding_window'));
    }
    case 'phi3':
      return all(c.sliding_window === undefined || c.sliding_window === null ? null : windowValue(c.sliding_window, 'sliding_window'));
    case 'qwen2':
    case 'qwen3': {
      const use = bool(c, 'use_sliding_window', false);
      let window: number | null = null;
      if (use) {
        if (!has(c, 'sliding_window')) window = 4096;
        else window = c.sliding_window === null ? null : windowValue(c.sliding_window, 'sliding_window');
      }
      let types: string[];
      if (c.layer_types !== undefined && c.layer_types !== null) {
        if (!Array.isArray(c.layer_types) || c.layer_types.length !== numLayers || !c.layer_types.every((t) => typeof t === 'string' && LAYER_TYPE_KEYS.has(t))) {
          throw new ReferenceUnsupportedError(`layer_types must list ${numLayers} entries of full_attention / sliding_attention`);
        }
        types = c.layer_types as string[];
      } else {
        const maxWindowLayers = num(c, 'max_window_layers', 28);
        types = Array.from({ length: numLayers }, (_, i) => (window !== null && i >= maxWindowLayers ? 'sliding_attention' : 'full_attention'));
      }
      return types.map((t, i) => {
        if (t === 'full_attention') return null;
        if (window === null) throw new ReferenceUnsupportedError(`layer ${i} is sliding_attention but the config has no sliding window (use_sliding_window false or sliding_window null)`);
        return window;
      });
    }
    default:
      return all(null);
  }
}

function resolveSliced(c: JsonConfig, hidden: number): SlicedSpec | null {
  const s = c.sliceserve;
  if (s === undefined || s === null) return null;
  if (!isObject(s)) throw new ReferenceUnsupportedError('config.json sliceserve must be an object');
  const original = s.original_hidden_size;
  if (typeof original !== 'number' || !Number.isInteger(original) || original <= 0) {
    throw new ReferenceUnsupportedError('sliceserve.original_hidden_size must be a positive integer');
  }
  if (original !== hidden) throw new ReferenceUnsupportedError(`sliceserve.original_hidden_size ${original} differs from hidden_size ${hidden}`);
  const sliced = typeof s.sliced_hidden_size === 'number' ? s.sliced_hidden_size : null;
  const sparsity = typeof s.sparsity === 'number' ? s.sparsity : null;
  return { originalHiddenSize: original, slicedHiddenSize: sliced, sparsity };
}

/**
 * Resolves a raw config.json into what the reference forward computes with.
 * @throws ReferenceUnsupportedError for an unknown architecture, a missing or malformed
 *   required field, an unsupported RoPE type (yarn, longrope, ...), an unsupported activation,
 *   a window on a layer without one, or GQA head counts that do not divide.
 */
export function resolveReferenceConfig(config: JsonConfig): ResolvedConfig {
  const { family, architecture } = referenceFamily(config);
  const d = DEFAULTS[family];
  const hiddenSize = int(config, 'hidden_size', d.hidden_size);
  const numLayers = int(config, 'num_hidden_layers', d.num_hidden_layers);
  const numHeads = int(config, 'num_attention_heads', d.num_attention_heads);
  // Absent num_key_value_heads: MistralConfig defaults to 8, Qwen2Config/Qwen3Config to 32,
  // the others to num_attention_heads; an explicit null is num_attention_heads everywhere.
  const kvAbsent = !has(config, 'num_key_value_heads');
  const kvDefault = kvAbsent && family === 'mistral' ? 8 : kvAbsent && (family === 'qwen2' || family === 'qwen3') ? 32 : numHeads;
  const numKvHeads = family === 'opt' ? numHeads : int(config, 'num_key_value_heads', kvDefault);
  if (numHeads % numKvHeads !== 0) throw new ReferenceUnsupportedError(`num_attention_heads ${numHeads} is not a multiple of num_key_value_heads ${numKvHeads}`);
  const headDim = resolveHeadDim(family, config, hiddenSize, numHeads);
  const vocabSize = int(config, 'vocab_size', d.vocab_size);
  const intermediateSize = family === 'opt' ? int(config, 'ffn_dim', d.intermediate_size) : int(config, 'intermediate_size', d.intermediate_size);
  const maxPositionEmbeddings = int(config, 'max_position_embeddings', d.max_position_embeddings);
  const activationName = parseActivation(family === 'opt' ? config.activation_function ?? d.act : config.hidden_act ?? d.act, family === 'opt' ? 'activation_function' : 'hidden_act');
  const isLayerNorm = family === 'opt' || family === 'phi';
  const normEps = family === 'opt' ? 1e-5 : isLayerNorm ? num(config, 'layer_norm_eps', d.eps) : num(config, 'rms_norm_eps', d.eps);
  const positions = family === 'opt' ? 'learned' : 'rope';
  const rope = positions === 'rope' ? resolveRope(family, config, headDim, maxPositionEmbeddings) : null;
  if (family === 'opt' && (config.rope_scaling ?? null) !== null) throw new ReferenceUnsupportedError('OPT has learned positions; rope_scaling makes no sense');

  const block: ResolvedConfig['block'] = family === 'phi' ? 'parallel' : 'sequential';
  if (family === 'opt') {
    // Variants SliceServe refuses too (opt-350m): the reference does not implement them.
    if (!bool(config, 'do_layer_norm_before', true)) throw new ReferenceUnsupportedError('OPT with do_layer_norm_before false (post-LayerNorm blocks) is not implemented by the reference');
    if (int(config, 'word_embed_proj_dim', hiddenSize) !== hiddenSize) throw new ReferenceUnsupportedError('OPT with word_embed_proj_dim != hidden_size (project_in / project_out) is not implemented by the reference');
    if (bool(config, '_remove_final_layer_norm', false)) throw new ReferenceUnsupportedError('OPT with _remove_final_layer_norm is not implemented by the reference');
  }

  const attentionBias = bool(config, 'attention_bias', false);
  const enableBias = bool(config, 'enable_bias', true);
  const bias = {
    llama: { qkv: attentionBias, o: attentionBias, mlp: bool(config, 'mlp_bias', false), head: false },
    mistral: { qkv: false, o: false, mlp: false, head: false },
    qwen2: { qkv: true, o: false, mlp: false, head: false },
    qwen3: { qkv: attentionBias, o: attentionBias, mlp: false, head: false },
    opt: { qkv: enableBias, o: enableBias, mlp: enableBias, head: false },
    phi: { qkv: true, o: true, mlp: true, head: true },
    phi3: { qkv: false, o: false, mlp: false, head: false },
  }[family];

  return {
    family,
    architecture,
    hiddenSize,
    numLayers,
    numHeads,
    numKvHeads,
    headDim,
    vocabSize,
    intermediateSize,
    maxPositionEmbeddings,
    norm: isLayerNorm ? 'layer' : 'rms',
    normEps,
    normAffine: family === 'opt' ? bool(config, 'layer_norm_elementwise_affine', true) : true,
    activation: activationName,
    mlp: family === 'opt' || family === 'phi' ? 'plain' : family === 'phi3' ? 'gated-fused' : 'gated',
    block,
    positions,
    rope,
    layerWindows: resolveWindows(family, config, numLayers),
    qkNorm: family === 'qwen3' ? 'rms' : family === 'phi' && bool(config, 'qk_layernorm', false) ? 'layer' : 'none',
    tieWordEmbeddings: bool(config, 'tie_word_embeddings', d.tie),
    bias,
    sliced: resolveSliced(config, hiddenSize),
  };
}
