/** Registry of slicing adapters, keyed by the Hugging Face `architectures` entry. */
import { llamaSlicingAdapter } from '../models/llama/slicing-adapter.js';
import type { LlamaConfig } from '../models/types.js';
import type { SlicingAdapter } from './adapter.js';

const ADAPTERS: Record<string, SlicingAdapter> = {
  LlamaForCausalLM: llamaSlicingAdapter,
};

/**
 * The adapter for a model's architecture.
 * @throws Error naming the architecture and the supported ones.
 */
export function adapterFor(config: LlamaConfig): SlicingAdapter {
  for (const arch of config.architectures) if (ADAPTERS[arch]) return ADAPTERS[arch];
  throw new Error(`no SliceGPT adapter for architecture ${config.architectures.join(', ') || '(none)'}; supported: ${Object.keys(ADAPTERS).join(', ')}`);
}
