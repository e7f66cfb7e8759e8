/**
 * Phi (`PhiForCausalLM`, phi-1/1.5/2; transformers modeling_phi.py / configuration_phi.py):
 * PARALLEL blocks, one LayerNorm per layer feeding attention and MLP,
 * `out = x + dense(attn(ln(x))) + fc2(act(fc1(ln(x))))`; partial rotary
 * (`partial_rotary_factor` of each head, default 0.5; phi-2: 0.4), rotate-half layout on that
 * part; `gelu_new`; biases on q, k, v, dense, fc1, fc2 and the head; `final_layernorm`;
 * optional per-head LayerNorms on q and k (`qk_layernorm`).
 */
import { z } from 'zod';
import { attentionShape, commonFields, decoderShapeFields, parseActivation, parseRope, parseWith } from '../common.js';
import { buildLayout, type Architecture, type FamilyNames } from '../spec.js';

const phiSchema = z.object({
  ...decoderShapeFields,
  layer_norm_eps: z.number().positive().optional(),
  qk_layernorm: z.boolean().optional(),
}).loose();

const PHI_NAMES: FamilyNames = {
  embedTokens: 'model.embed_tokens.weight',
  layerPrefix: (l) => `model.layers.${l}`,
  inputNorm: 'input_layernorm',
  q: 'self_attn.q_proj',
  k: 'self_attn.k_proj',
  v: 'self_attn.v_proj',
  o: 'self_attn.dense',
  qNorm: 'self_attn.q_layernorm',
  kNorm: 'self_attn.k_layernorm',
  up: 'mlp.fc1',
  down: 'mlp.fc2',
  finalNorm: 'model.final_layernorm',
  lmHead: 'lm_head',
};

export const phi: Architecture = {
  family: 'Phi',
  architectures: ['PhiForCausalLM'],
  modelTypes: ['phi'],
  parseConfig(json, file) {
    const c = parseWith(phiSchema, json, file);
    const geometry = attentionShape(c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.head_dim, file);
    const layers = c.num_hidden_layers;
    return {
      ...commonFields(json, file, { architecture: 'PhiForCausalLM', modelType: 'phi', tied: false, bos: 1, eos: 2, hiddenSize: c.hidden_size }),
      hidden_size: c.hidden_size,
      intermediate_size: c.intermediate_size,
      num_hidden_layers: layers,
      num_attention_heads: c.num_attention_heads,
      ...geometry,
      max_position_embeddings: c.max_position_embeddings ?? 2048,
      norm: 'layer',
      norm_eps: c.layer_norm_eps ?? 1e-5,
      block: 'parallel',
      gated_mlp: false,
      hidden_act: parseActivation(c.hidden_act ?? 'gelu_new', file),
      positions: parseRope({ partial_rotary_factor: 0.5, ...json }, geometry.head_dim, file),
      qk_norm: c.qk_layernorm ? 'layer' : null,
      sliding_window: null,
      layer_types: Array.from({ length: layers }, () => 'full_attention' as const),
    };
  },
  layout: (config) => buildLayout(config, PHI_NAMES, { q: true, k: true, v: true, o: true, mlpIn: true, mlpOut: true, lmHead: true }),
};
