/**
 * Llama (`LlamaForCausalLM`; transformers modeling_llama.py / configuration_llama.py):
 * RMSNorm, rotary positions with rope_scaling default | linear | dynamic | llama3, grouped
 * KV heads, an explicit head_dim, optional biases on the attention (`attention_bias`: q, k, v
 * and o) and the MLP (`mlp_bias`: gate, up, down), SwiGLU MLP, tied or untied head.
 * It also exports the pieces that the Llama-shaped families (Mistral, Qwen2, Qwen3, Phi-3)
 * share: their tensor names and config parser.
 */
import { z } from 'zod';
import type { DecoderConfig } from '../../config.js';
import { attentionShape, commonFields, decoderShapeFields, layerTypes, parseActivation, parseRope, parseWith } from '../common.js';
import { buildLayout, NO_BIASES, type Architecture, type DenseBiases, type FamilyNames } from '../spec.js';

/** Tensor names of the Llama-shaped families (Hugging Face's LlamaForCausalLM names). */
export const LLAMA_NAMES: FamilyNames = {
  embedTokens: 'model.embed_tokens.weight',
  layerPrefix: (l) => `model.layers.${l}`,
  inputNorm: 'input_layernorm',
  q: 'self_attn.q_proj',
  k: 'self_attn.k_proj',
  v: 'self_attn.v_proj',
  o: 'self_attn.o_proj',
  qNorm: 'self_attn.q_norm',
  kNorm: 'self_attn.k_norm',
  postAttentionNorm: 'post_attention_layernorm',
  gate: 'mlp.gate_proj',
  up: 'mlp.up_proj',
  down: 'mlp.down_proj',
  finalNorm: 'model.norm',
  lmHead: 'lm_head',
};

/** config.json fields of the Llama-shaped families (defaults differ per family). */
export const llamaShapeSchema = z.object({ ...decoderShapeFields, rms_norm_eps: z.number().positive().optional() }).loose();

/** Per-family defaults of {@link parseLlamaShaped} (transformers' configuration_*.py). */
export interface LlamaShapedDefaults {
  architecture: string;
  modelType: string;
  maxPositions: number;
  rmsNormEps: number;
  ropeTheta: number;
  tied: boolean;
  bos: number | null;
  /** null: the checkpoint must give one (commonFields). */
  eos: number | null;
}

/**
 * The DecoderConfig of a Llama-shaped family (RMSNorm, rotary, sequential blocks, SwiGLU)
 * before its own extras (sliding window, q/k norms): shared by Llama, Mistral, Qwen2, Qwen3
 * and Phi-3.
 * @throws ModelLoadError as the field parsers in ../common.ts.
 */
export function parseLlamaShaped(json: Record<string, unknown>, file: string, defaults: LlamaShapedDefaults): DecoderConfig {
  const c = parseWith(llamaShapeSchema, json, file);
  const geometry = attentionShape(c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.head_dim, file);
  return {
    ...commonFields(json, file, { architecture: defaults.architecture, modelType: defaults.modelType, tied: defaults.tied, bos: defaults.bos, eos: defaults.eos, hiddenSize: c.hidden_size }),
    hidden_size: c.hidden_size,
    intermediate_size: c.intermediate_size,
    num_hidden_layers: c.num_hidden_layers,
    num_attention_heads: c.num_attention_heads,
    ...geometry,
    max_position_embeddings: c.max_position_embeddings ?? defaults.maxPositions,
    norm: 'rms',
    norm_eps: c.rms_norm_eps ?? defaults.rmsNormEps,
    block: 'sequential',
    gated_mlp: true,
    hidden_act: parseActivation(c.hidden_act ?? 'silu', file),
    positions: parseRope(json, geometry.head_dim, file, defaults.ropeTheta),
    qk_norm: null,
    sliding_window: null,
    layer_types: layerTypes({}, c.num_hidden_layers, null, file),
  };
}

/** Llama's biases: `attention_bias` on q, k, v and o; `mlp_bias` on gate, up and down. */
export function llamaBiases(config: DecoderConfig): DenseBiases {
  const source = config.source ?? {};
  const attn = source.attention_bias === true;
  const mlp = source.mlp_bias === true;
  return { ...NO_BIASES, q: attn, k: attn, v: attn, o: attn, mlpIn: mlp, mlpOut: mlp };
}

export const llama: Architecture = {
  family: 'Llama',
  architectures: ['LlamaForCausalLM'],
  modelTypes: ['llama'],
  parseConfig(json, file) {
    return parseLlamaShaped(json, file, { architecture: 'LlamaForCausalLM', modelType: 'llama', maxPositions: 2048, rmsNormEps: 1e-6, ropeTheta: 10000, tied: false, bos: 1, eos: 2 });
  },
  layout: (config) => buildLayout(config, LLAMA_NAMES, llamaBiases(config)),
  configJson(config) {
    const rope = config.positions.kind === 'rotary' ? config.positions : null;
    return {
      architectures: config.architectures,
      model_type: config.model_type,
      hidden_size: config.hidden_size,
      intermediate_size: config.intermediate_size,
      num_hidden_layers: config.num_hidden_layers,
      num_attention_heads: config.num_attention_heads,
      num_key_value_heads: config.num_key_value_heads,
      head_dim: config.head_dim,
      vocab_size: config.vocab_size,
      max_position_embeddings: config.max_position_embeddings,
      rms_norm_eps: config.norm_eps,
      rope_theta: rope?.rope_theta ?? 10000,
      rope_scaling: rope?.rope_scaling ?? null,
      hidden_act: config.hidden_act,
      attention_bias: false,
      mlp_bias: false,
      tie_word_embeddings: config.tie_word_embeddings,
      bos_token_id: config.bos_token_id,
      eos_token_id: config.eos_token_id,
    };
  },
};
