/**
 * config.json parsing shared by the families: the fields every decoder has (with transformers'
 * defaults), RoPE and its scaling (modeling_rope_utils.py), sliding-window layer types, the
 * activation names, end-of-sequence ids and the `sliceserve` section of sliced artifacts.
 */
import { z } from 'zod';
import type { Activation, DecoderConfig, LayerAttention, RopeScaling, RotarySpec, SlicingInfo } from '../config.js';
import { ModelLoadError } from '../types.js';

export const positiveInt = z.number().int().positive();

/**
 * config.json fields of a decoder's geometry under their transformers names, shared by the
 * families whose configs use them (Llama-shaped families, Phi); each adds its norm epsilon
 * and extras.
 */
export const decoderShapeFields = {
  hidden_size: positiveInt,
  intermediate_size: positiveInt,
  num_hidden_layers: positiveInt,
  num_attention_heads: positiveInt,
  num_key_value_heads: positiveInt.nullish(),
  head_dim: positiveInt.nullish(),
  max_position_embeddings: positiveInt.optional(),
  hidden_act: z.string().optional(),
};
export const nonNegativeInt = z.number().int().nonnegative();

const slicingSchema = z.object({
  sparsity: z.number().min(0).lt(1),
  original_hidden_size: positiveInt,
  sliced_hidden_size: positiveInt,
  round_interval: positiveInt,
  slice_head: z.boolean(),
  calibration: z.object({
    file: z.string(),
    sha256: z.string(),
    windows: nonNegativeInt,
    seq_len: positiveInt,
    tokens: nonNegativeInt,
  }).loose(),
  source_model_sha256: z.string(),
  created: z.string(),
}).loose();

/** Fields common to every family, as config.json spells them (family parsers extend it). */
export const commonSchema = z.object({
  architectures: z.array(z.string()).min(1).optional(),
  model_type: z.string().optional(),
  vocab_size: positiveInt,
  tie_word_embeddings: z.boolean().optional(),
  bos_token_id: nonNegativeInt.nullish(),
  eos_token_id: z.union([nonNegativeInt, z.array(nonNegativeInt).min(1)]).nullish(),
  sliceserve: slicingSchema.optional(),
}).loose();

/**
 * Validates `json` against `schema`.
 * @throws ModelLoadError naming `file` and the first offending field.
 */
export function parseWith<T extends z.ZodType>(schema: T, json: unknown, file: string): z.infer<T> {
  const parsed = schema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const where = issue.path.length > 0 ? issue.path.join('.') : '(top level)';
    throw new ModelLoadError(file, `invalid config: ${where}: ${issue.message}`);
  }
  return parsed.data;
}

/** A ModelLoadError factory for one config file. */
export function failer(file: string): (problem: string) => ModelLoadError {
  return (problem) => new ModelLoadError(file, problem);
}

/**
 * transformers' activation names -> {@link Activation} (transformers activations.py ACT2FN):
 * gelu_new, gelu_pytorch_tanh and gelu_fast are all the tanh approximation
 * `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`; gelu is the erf form.
 * @throws ModelLoadError for another name.
 */
export function parseActivation(name: string, file: string, field = 'hidden_act'): Activation {
  const map: Record<string, Activation> = {
    silu: 'silu',
    swish: 'silu',
    relu: 'relu',
    gelu: 'gelu',
    gelu_new: 'gelu_tanh',
    gelu_pytorch_tanh: 'gelu_tanh',
    gelu_fast: 'gelu_tanh',
  };
  const act = map[name];
  if (!act) throw new ModelLoadError(file, `${field} ${name} is not supported; supported: ${Object.keys(map).join(', ')}`);
  return act;
}

/**
 * The attention geometry: num_key_value_heads (default num_attention_heads) and head_dim
 * (default hidden_size / num_attention_heads, as transformers).
 * @throws ModelLoadError for heads that do not divide.
 */
export function attentionShape(hidden: number, heads: number, kvHeads: number | null | undefined, headDim: number | null | undefined, file: string): { num_key_value_heads: number; head_dim: number } {
  const fail = failer(file);
  const kv = kvHeads ?? heads;
  if (heads % kv !== 0) throw fail(`num_attention_heads ${heads} is not a multiple of num_key_value_heads ${kv}`);
  let hd = headDim ?? undefined;
  if (hd === undefined) {
    if (hidden % heads !== 0) throw fail(`hidden_size ${hidden} is not a multiple of num_attention_heads ${heads} and head_dim is not given`);
    hd = hidden / heads;
  }
  return { num_key_value_heads: kv, head_dim: hd };
}

const ropeScalingSchema = z.object({
  rope_type: z.string().optional(),
  type: z.string().optional(),
  factor: z.number().positive().optional(),
  low_freq_factor: z.number().optional(),
  high_freq_factor: z.number().optional(),
  original_max_position_embeddings: positiveInt.optional(),
  rope_theta: z.number().positive().optional(),
  partial_rotary_factor: z.number().gt(0).max(1).optional(),
}).loose();

/**
 * RoPE from config.json: `rope_theta` (default `defaultTheta`), `partial_rotary_factor`
 * (default 1), and `rope_scaling` (transformers 4.x) or `rope_parameters` (transformers 5,
 * which also carries rope_theta). rope_type (legacy key `type`): default, linear (needs
 * factor), dynamic (needs factor), llama3 (needs factor, low_freq_factor, high_freq_factor,
 * original_max_position_embeddings). transformers' rotary dim is
 * `int(head_dim * partial_rotary_factor)` (modeling_rope_utils `_compute_default_rope_parameters`).
 * @throws ModelLoadError for another rope_type (yarn, longrope, ...), missing parameters, or an
 *   odd rotary dim.
 */
export function parseRope(json: Record<string, unknown>, headDim: number, file: string, defaultTheta = 10000): RotarySpec {
  const fail = failer(file);
  const key = json.rope_parameters !== undefined && json.rope_parameters !== null ? 'rope_parameters' : 'rope_scaling';
  const raw = json[key];
  let scaling: RopeScaling | null = null;
  let theta = typeof json.rope_theta === 'number' ? json.rope_theta : defaultTheta;
  let partial = typeof json.partial_rotary_factor === 'number' ? json.partial_rotary_factor : 1;
  if (raw !== undefined && raw !== null) {
    const r = parseWith(ropeScalingSchema, raw, file);
    if (r.rope_theta !== undefined) theta = r.rope_theta;
    if (r.partial_rotary_factor !== undefined) partial = r.partial_rotary_factor;
    const type = r.rope_type ?? r.type ?? 'default';
    const need = (field: keyof typeof r): number => {
      const v = r[field];
      if (typeof v !== 'number') throw fail(`${key} rope_type ${type} needs ${String(field)}`);
      return v;
    };
    if (type === 'linear' || type === 'dynamic') {
      scaling = { rope_type: type, factor: need('factor') };
      if (type === 'dynamic' && r.original_max_position_embeddings !== undefined) scaling.original_max_position_embeddings = r.original_max_position_embeddings;
    } else if (type === 'llama3') {
      scaling = {
        rope_type: 'llama3',
        factor: need('factor'),
        low_freq_factor: need('low_freq_factor'),
        high_freq_factor: need('high_freq_factor'),
        original_max_position_embeddings: need('original_max_position_embeddings'),
      };
      if (!(scaling.high_freq_factor! > scaling.low_freq_factor!)) throw fail(`${key} llama3: high_freq_factor must be greater than low_freq_factor`);
    } else if (type !== 'default') {
      throw fail(`${key} rope_type ${type} is not supported; supported: default, linear, dynamic, llama3`);
    }
  }
  if (!(partial > 0 && partial <= 1)) throw fail(`partial_rotary_factor ${partial} must be in (0, 1]`);
  const rotary = Math.floor(headDim * partial);
  if (rotary < 2 || rotary % 2 !== 0) throw fail(`the rotary dimension int(head_dim ${headDim} x partial_rotary_factor ${partial}) = ${rotary} must be even and >= 2`);
  return { kind: 'rotary', rope_theta: theta, rotary_dim: rotary, rope_scaling: scaling };
}

/**
 * Per-layer attention kinds: config.json's `layer_types` when given, else sliding on every
 * layer when `slidingWindow` is set and `firstSliding` is 0 (Mistral), or on layers
 * >= `firstSliding` (Qwen2/Qwen3's `max_window_layers`), else full.
 * @throws ModelLoadError for a `layer_types` list of the wrong length or with unknown entries.
 */
export function layerTypes(json: Record<string, unknown>, layers: number, slidingWindow: number | null, file: string, firstSliding = 0): LayerAttention[] {
  const given = json.layer_types;
  if (Array.isArray(given)) {
    if (given.length !== layers) throw new ModelLoadError(file, `layer_types has ${given.length} entries for ${layers} layers`);
    for (const t of given) {
      if (t !== 'full_attention' && t !== 'sliding_attention') throw new ModelLoadError(file, `layer_types entry ${JSON.stringify(t)} is not supported; supported: full_attention, sliding_attention`);
    }
    return given as LayerAttention[];
  }
  return Array.from({ length: layers }, (_, l) => (slidingWindow !== null && l >= firstSliding ? 'sliding_attention' : 'full_attention'));
}

/** Fields of DecoderConfig every family fills the same way. */
export type CommonFields = Pick<DecoderConfig, 'architectures' | 'model_type' | 'vocab_size' | 'tie_word_embeddings' | 'bos_token_id' | 'eos_token_id' | 'eos_token_ids' | 'sliceserve' | 'source'>;

/**
 * architectures, model_type, vocab_size, tie_word_embeddings (default `defaultTied`), the
 * BOS/EOS ids (family defaults; a list of EOS ids keeps its first as eos_token_id and all in
 * eos_token_ids; a family without a default EOS needs one, which the loader may take from
 * generation_config.json or tokenizer_config.json), and the sliceserve section (checked against hidden_size), plus `source`.
 * @throws ModelLoadError for an id outside the vocabulary, no EOS id at all, or an inconsistent
 *   sliceserve section.
 */
export function commonFields(json: Record<string, unknown>, file: string, defaults: { architecture: string; modelType: string; tied: boolean; bos: number | null; eos: number | null; hiddenSize: number }): CommonFields {
  const c = parseWith(commonSchema, json, file);
  const fail = failer(file);
  const eosList = Array.isArray(c.eos_token_id) ? [...new Set(c.eos_token_id)] : null;
  const fields: CommonFields = {
    architectures: c.architectures ?? [defaults.architecture],
    model_type: c.model_type ?? defaults.modelType,
    vocab_size: c.vocab_size,
    tie_word_embeddings: c.tie_word_embeddings ?? defaults.tied,
    bos_token_id: c.bos_token_id === undefined ? defaults.bos : c.bos_token_id,
    eos_token_id: -1,
    source: json,
  };
  const eos = (eosList ? eosList[0] : (c.eos_token_id as number | null | undefined)) ?? defaults.eos;
  if (eos === null) throw fail('no eos_token_id in config.json (nor in generation_config.json or tokenizer_config.json): say which token ends a sequence');
  fields.eos_token_id = eos;
  if (eosList && eosList.length > 1) fields.eos_token_ids = eosList;
  if (c.sliceserve) {
    const s = c.sliceserve as SlicingInfo;
    if (s.original_hidden_size !== defaults.hiddenSize) {
      throw fail(`sliceserve.original_hidden_size ${s.original_hidden_size} differs from hidden_size ${defaults.hiddenSize}`);
    }
    if (s.sliced_hidden_size > defaults.hiddenSize) {
      throw fail(`sliceserve.sliced_hidden_size ${s.sliced_hidden_size} exceeds hidden_size ${defaults.hiddenSize}`);
    }
    if (fields.tie_word_embeddings) throw fail('a sliced model (sliceserve present) cannot have tie_word_embeddings true');
    fields.sliceserve = s;
  }
  const ids: Array<[string, number]> = [...(fields.eos_token_ids ?? [fields.eos_token_id]).map((id): [string, number] => ['eos_token_id', id])];
  if (fields.bos_token_id !== null) ids.unshift(['bos_token_id', fields.bos_token_id]);
  for (const [what, id] of ids) {
    if (id >= fields.vocab_size) throw fail(`${what} ${id} is not below vocab_size ${fields.vocab_size}`);
  }
  return fields;
}
