/**
 * Qwen2 / Qwen2.5 (`Qwen2ForCausalLM`; transformers modeling_qwen2.py / configuration_qwen2.py):
 * Llama with biases on q, k and v (not o), rope_theta typically 1e6, tied embeddings on the
 * small models. Sliding-window attention only when `use_sliding_window` is true, then on the
 * layers from `max_window_layers` on (or as an explicit `layer_types` says); transformers
 * drops `sliding_window` otherwise.
 */
import { z } from 'zod';
import type { DecoderConfig } from '../../config.js';
import { layerTypes, nonNegativeInt, parseWith, positiveInt } from '../common.js';
import { LLAMA_NAMES, parseLlamaShaped, type LlamaShapedDefaults } from '../llama/index.js';
import { buildLayout, NO_BIASES, type Architecture } from '../spec.js';

const slidingSchema = z.object({
  use_sliding_window: z.boolean().optional(),
  sliding_window: positiveInt.nullish(),
  max_window_layers: nonNegativeInt.optional(),
}).loose();

/**
 * The sliding-window fields of the Qwen families: `use_sliding_window` (default false),
 * `sliding_window` (default 4096), `max_window_layers` (default 28), or `layer_types`.
 */
export function qwenSliding(json: Record<string, unknown>, layers: number, file: string): Pick<DecoderConfig, 'sliding_window' | 'layer_types'> {
  const c = parseWith(slidingSchema, json, file);
  const window = c.use_sliding_window ? (c.sliding_window === undefined ? 4096 : c.sliding_window) : null;
  return { sliding_window: window, layer_types: layerTypes(json, layers, window, file, c.max_window_layers ?? 28) };
}

/** Defaults of configuration_qwen2.py / configuration_qwen3.py (no BOS; EOS from the checkpoint). */
export const QWEN_DEFAULTS: Omit<LlamaShapedDefaults, 'architecture' | 'modelType'> = { maxPositions: 32768, rmsNormEps: 1e-6, ropeTheta: 10000, tied: false, bos: null, eos: null };

export const qwen2: Architecture = {
  family: 'Qwen2',
  architectures: ['Qwen2ForCausalLM'],
  modelTypes: ['qwen2'],
  parseConfig(json, file) {
    const base = parseLlamaShaped(json, file, { ...QWEN_DEFAULTS, architecture: 'Qwen2ForCausalLM', modelType: 'qwen2' });
    return { ...base, ...qwenSliding(json, base.num_hidden_layers, file) };
  },
  layout: (config) => buildLayout(config, LLAMA_NAMES, { ...NO_BIASES, q: true, k: true, v: true }),
};
