/**
 * OPT (`OPTForCausalLM`; transformers modeling_opt.py / configuration_opt.py): pre-LayerNorm
 * sequential blocks (`self_attn_layer_norm`, `final_layer_norm` per layer), biases on every
 * linear (`enable_bias`), learned positions whose row for position p is p + 2 (transformers'
 * `OPTLearnedPositionalEmbedding.offset`), a plain MLP `fc2(act(fc1(x)))` with
 * `activation_function` (ReLU), multi-head attention (queries scaled after their bias, which
 * equals scaling the scores), `model.decoder.final_layer_norm`, a head tied to the embedding.
 * Checkpoints that store names without the `model.` prefix are accepted.
 * Refused, with the reason: post-LayerNorm blocks (`do_layer_norm_before: false`, opt-350m),
 * `word_embed_proj_dim` != hidden_size (project_in / project_out, opt-350m),
 * `_remove_final_layer_norm`, and LayerNorms without parameters.
 */
import { z } from 'zod';
import type { WeightMap } from '../../types.js';
import { commonFields, failer, parseActivation, parseWith, positiveInt } from '../common.js';
import { buildLayout, type Architecture, type FamilyNames } from '../spec.js';

const optSchema = z.object({
  hidden_size: positiveInt,
  ffn_dim: positiveInt,
  num_hidden_layers: positiveInt,
  num_attention_heads: positiveInt,
  max_position_embeddings: positiveInt.optional(),
  activation_function: z.string().optional(),
  do_layer_norm_before: z.boolean().optional(),
  _remove_final_layer_norm: z.boolean().optional(),
  word_embed_proj_dim: positiveInt.nullish(),
  layer_norm_elementwise_affine: z.boolean().optional(),
  enable_bias: z.boolean().optional(),
}).loose();

const OPT_NAMES: FamilyNames = {
  embedTokens: 'model.decoder.embed_tokens.weight',
  embedPositions: 'model.decoder.embed_positions.weight',
  layerPrefix: (l) => `model.decoder.layers.${l}`,
  inputNorm: 'self_attn_layer_norm',
  q: 'self_attn.q_proj',
  k: 'self_attn.k_proj',
  v: 'self_attn.v_proj',
  o: 'self_attn.out_proj',
  postAttentionNorm: 'final_layer_norm',
  up: 'fc1',
  down: 'fc2',
  finalNorm: 'model.decoder.final_layer_norm',
  lmHead: 'lm_head',
};

/** transformers' offset of OPT's learned positions. */
const OPT_POSITION_OFFSET = 2;

export const opt: Architecture = {
  family: 'OPT',
  architectures: ['OPTForCausalLM'],
  modelTypes: ['opt'],
  parseConfig(json, file) {
    const c = parseWith(optSchema, json, file);
    const fail = failer(file);
    if (c.do_layer_norm_before === false) throw fail('OPT with do_layer_norm_before false (post-LayerNorm blocks, as opt-350m) is not supported: SliceServe serves and slices pre-LayerNorm OPT models');
    if (c.word_embed_proj_dim != null && c.word_embed_proj_dim !== c.hidden_size) {
      throw fail(`OPT with word_embed_proj_dim ${c.word_embed_proj_dim} != hidden_size ${c.hidden_size} (project_in / project_out, as opt-350m) is not supported`);
    }
    if (c._remove_final_layer_norm === true) throw fail('OPT with _remove_final_layer_norm true is not supported');
    if (c.layer_norm_elementwise_affine === false) throw fail('OPT with layer_norm_elementwise_affine false (LayerNorms without weight and bias) is not supported');
    if (c.hidden_size % c.num_attention_heads !== 0) throw fail(`hidden_size ${c.hidden_size} is not a multiple of num_attention_heads ${c.num_attention_heads}`);
    const layers = c.num_hidden_layers;
    return {
      ...commonFields(json, file, { architecture: 'OPTForCausalLM', modelType: 'opt', tied: true, bos: 2, eos: 2, hiddenSize: c.hidden_size }),
      hidden_size: c.hidden_size,
      intermediate_size: c.ffn_dim,
      num_hidden_layers: layers,
      num_attention_heads: c.num_attention_heads,
      num_key_value_heads: c.num_attention_heads,
      head_dim: c.hidden_size / c.num_attention_heads,
      max_position_embeddings: c.max_position_embeddings ?? 2048,
      norm: 'layer',
      norm_eps: 1e-5,
      block: 'sequential',
      gated_mlp: false,
      hidden_act: parseActivation(c.activation_function ?? 'relu', file, 'activation_function'),
      positions: { kind: 'learned', offset: OPT_POSITION_OFFSET },
      qk_norm: null,
      sliding_window: null,
      layer_types: Array.from({ length: layers }, () => 'full_attention' as const),
    };
  },
  layout(config) {
    const bias = config.source?.enable_bias !== false;
    return buildLayout(config, OPT_NAMES, { q: bias, k: bias, v: bias, o: bias, mlpIn: bias, mlpOut: bias, lmHead: false });
  },
  fromCheckpoint(weights) {
    // facebook/opt-* store the base model's names ("decoder.layers.0...") without "model.".
    if (![...weights.keys()].some((n) => n.startsWith('decoder.'))) return weights;
    const out: WeightMap = new Map();
    for (const [name, t] of weights) out.set(name.startsWith('decoder.') ? `model.${name}` : name, t);
    return out;
  },
};
