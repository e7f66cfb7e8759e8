/**
 * Mistral (`MistralForCausalLM`; transformers modeling_mistral.py / configuration_mistral.py):
 * Llama without biases, plus `sliding_window` on every layer (default 4096; null = full
 * attention): the query at position i attends to keys at positions j with i - W < j <= i.
 */
import { z } from 'zod';
import { layerTypes, parseWith, positiveInt } from '../common.js';
import { LLAMA_NAMES, parseLlamaShaped } from '../llama/index.js';
import { buildLayout, NO_BIASES, type Architecture } from '../spec.js';

const mistralSchema = z.object({ sliding_window: positiveInt.nullish() }).loose();

export const mistral: Architecture = {
  family: 'Mistral',
  architectures: ['MistralForCausalLM'],
  modelTypes: ['mistral'],
  parseConfig(json, file) {
    const base = parseLlamaShaped(json, file, { architecture: 'MistralForCausalLM', modelType: 'mistral', maxPositions: 4096 * 32, rmsNormEps: 1e-6, ropeTheta: 10000, tied: false, bos: 1, eos: 2 });
    const c = parseWith(mistralSchema, json, file);
    const window = c.sliding_window === undefined ? 4096 : c.sliding_window;
    return { ...base, sliding_window: window, layer_types: layerTypes(json, base.num_hidden_layers, window, file) };
  },
  layout: (config) => buildLayout(config, LLAMA_NAMES, NO_BIASES),
};
