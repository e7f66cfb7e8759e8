/**
 * Phi-3 (`Phi3ForCausalLM`; transformers modeling_phi3.py / configuration_phi3.py): Llama-shaped
 * (RMSNorm, SwiGLU, no biases) with FUSED projections in the checkpoint: `self_attn.qkv_proj`
 * [(H + 2 KV) head_dim, d] holds q, k, v row blocks in that order, `mlp.gate_up_proj` [2 I, d]
 * holds gate then up (transformers' `chunk(2)`). They are split into the Llama names at load
 * (sliced artifacts are written split). `sliding_window` (null by default) applies to every
 * layer; `partial_rotary_factor` as read; `rope_scaling` longrope (the 128k models) is refused.
 */
import { z } from 'zod';
import type { WeightMap, WeightTensor } from '../../types.js';
import { ModelLoadError } from '../../types.js';
import { tensorRows } from '../../lazy-tensor.js';
import { layerTypes, parseWith, positiveInt } from '../common.js';
import { LLAMA_NAMES, parseLlamaShaped } from '../llama/index.js';
import { buildLayout, NO_BIASES, type Architecture } from '../spec.js';

const phi3Schema = z.object({ sliding_window: positiveInt.nullish() }).loose();

/** Rows [from, to) of a [rows, cols] tensor (read on use from a lazily loaded checkpoint). */
function rows(t: WeightTensor, from: number, to: number): WeightTensor {
  return tensorRows(t, from, to);
}

export const phi3: Architecture = {
  family: 'Phi-3',
  architectures: ['Phi3ForCausalLM'],
  modelTypes: ['phi3'],
  parseConfig(json, file) {
    const base = parseLlamaShaped(json, file, { architecture: 'Phi3ForCausalLM', modelType: 'phi3', maxPositions: 4096, rmsNormEps: 1e-5, ropeTheta: 10000, tied: false, bos: 1, eos: 32000 });
    const window = parseWith(phi3Schema, json, file).sliding_window ?? null;
    return { ...base, sliding_window: window, layer_types: layerTypes(json, base.num_hidden_layers, window, file) };
  },
  layout: (config) => buildLayout(config, LLAMA_NAMES, NO_BIASES),
  fromCheckpoint(weights, config, file) {
    const out: WeightMap = new Map(weights);
    const qDim = config.num_attention_heads * config.head_dim;
    const kvDim = config.num_key_value_heads * config.head_dim;
    const I = config.intermediate_size;
    for (let l = 0; l < config.num_hidden_layers; l++) {
      const p = LLAMA_NAMES.layerPrefix(l);
      const qkv = out.get(`${p}.self_attn.qkv_proj.weight`);
      if (qkv) {
        if (qkv.shape[0] !== qDim + 2 * kvDim) throw new ModelLoadError(file, `tensor ${p}.self_attn.qkv_proj.weight has ${qkv.shape[0]} rows, expected q + k + v = ${qDim + 2 * kvDim}`);
        out.set(`${p}.self_attn.q_proj.weight`, rows(qkv, 0, qDim));
        out.set(`${p}.self_attn.k_proj.weight`, rows(qkv, qDim, qDim + kvDim));
        out.set(`${p}.self_attn.v_proj.weight`, rows(qkv, qDim + kvDim, qDim + 2 * kvDim));
        out.delete(`${p}.self_attn.qkv_proj.weight`);
      }
      const gateUp = out.get(`${p}.mlp.gate_up_proj.weight`);
      if (gateUp) {
        if (gateUp.shape[0] !== 2 * I) throw new ModelLoadError(file, `tensor ${p}.mlp.gate_up_proj.weight has ${gateUp.shape[0]} rows, expected 2 x intermediate_size = ${2 * I}`);
        out.set(`${p}.mlp.gate_proj.weight`, rows(gateUp, 0, I));
        out.set(`${p}.mlp.up_proj.weight`, rows(gateUp, I, 2 * I));
        out.delete(`${p}.mlp.gate_up_proj.weight`);
      }
    }
    return out;
  },
};
