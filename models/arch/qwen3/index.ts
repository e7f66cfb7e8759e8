/**
 * Qwen3 (`Qwen3ForCausalLM`; transformers modeling_qwen3.py / configuration_qwen3.py): Llama
 * with a per-head RMSNorm on q and on k (`q_norm`, `k_norm`, weights [head_dim], eps
 * rms_norm_eps) applied before RoPE, a head_dim that need not be hidden_size / heads (default
 * 128), optional `attention_bias` (q, k, v, o), and Qwen2's sliding-window fields.
 */
import { z } from 'zod';
import { parseWith, positiveInt } from '../common.js';
import { llamaBiases, LLAMA_NAMES, parseLlamaShaped } from '../llama/index.js';
import { QWEN_DEFAULTS, qwenSliding } from '../qwen2/index.js';
import { buildLayout, type Architecture } from '../spec.js';

const headDimSchema = z.object({ head_dim: positiveInt.nullish() }).loose();

export const qwen3: Architecture = {
  family: 'Qwen3',
  architectures: ['Qwen3ForCausalLM'],
  modelTypes: ['qwen3'],
  parseConfig(json, file) {
    const headDim = parseWith(headDimSchema, json, file).head_dim ?? 128;
    const base = parseLlamaShaped({ ...json, head_dim: headDim }, file, { ...QWEN_DEFAULTS, architecture: 'Qwen3ForCausalLM', modelType: 'qwen3' });
    return { ...base, source: json, qk_norm: 'rms' as const, ...qwenSliding(json, base.num_hidden_layers, file) };
  },
  layout: (config) => buildLayout(config, LLAMA_NAMES, llamaBiases(config)),
};
