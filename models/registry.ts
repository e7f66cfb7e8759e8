/**
 * The one registry of model families, keyed by config.json's `architectures` (and
 * `model_type` when that is missing), as transformers' AutoModel, vLLM's model registry and
 * transformers.js do. Loaders, the graph builder and the slicer find a model's family here;
 * models/arch/spec.ts says how to add one.
 */
import type { DecoderConfig } from './config.js';
import { llama } from './arch/llama/index.js';
import { mistral } from './arch/mistral/index.js';
import { opt } from './arch/opt/index.js';
import { phi } from './arch/phi/index.js';
import { phi3 } from './arch/phi3/index.js';
import { qwen2 } from './arch/qwen2/index.js';
import { qwen3 } from './arch/qwen3/index.js';
import type { Architecture, DecoderLayout } from './arch/spec.js';
import { ModelLoadError } from './types.js';

const ARCHITECTURES: readonly Architecture[] = [llama, mistral, qwen2, qwen3, phi3, opt, phi];

/** The supported `architectures` names, in registry order. */
export function supportedArchitectures(): string[] {
  return ARCHITECTURES.flatMap((a) => a.architectures);
}

/** One line naming the supported families and their architectures, for messages. */
export function supportedFamiliesLine(): string {
  return ARCHITECTURES.map((a) => `${a.family} (${a.architectures.join(', ')})`).join(', ');
}

/** The family registered for `architectures` / `model_type`, or undefined. */
function lookup(architectures: readonly unknown[] | undefined, modelType: unknown): Architecture | undefined {
  if (architectures && architectures.length > 0) {
    for (const name of architectures) {
      const hit = ARCHITECTURES.find((a) => a.architectures.includes(name as string));
      if (hit) return hit;
    }
    return undefined;
  }
  return ARCHITECTURES.find((a) => a.modelTypes.includes(modelType as string));
}

/**
 * The family of a config.json object.
 * @throws ModelLoadError naming `file` and the supported families when none fits.
 */
export function architectureOfJson(json: unknown, file: string): Architecture {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new ModelLoadError(file, 'invalid config: (top level): expected an object');
  const { architectures, model_type } = json as { architectures?: unknown; model_type?: unknown };
  if (architectures !== undefined && !Array.isArray(architectures)) throw new ModelLoadError(file, 'invalid config: architectures: expected an array of names');
  const arch = lookup(architectures as unknown[] | undefined, model_type);
  if (arch) return arch;
  const what = Array.isArray(architectures) && architectures.length > 0
    ? `unknown architecture ${architectures.join(', ')}`
    : model_type !== undefined ? `unknown model_type ${String(model_type)}` : 'no "architectures" or "model_type" field: cannot tell the model family';
  throw new ModelLoadError(file, `${what}; supported: ${supportedFamiliesLine()}`);
}

/**
 * Parses a config.json object with its family's parser.
 * @throws ModelLoadError (unknown family, or the family parser's errors).
 */
export function parseDecoderConfig(json: unknown, file: string): DecoderConfig {
  return architectureOfJson(json, file).parseConfig(json as Record<string, unknown>, file);
}

/**
 * The family of a parsed config.
 * @throws Error when the config names no registered architecture (configs made by a family's
 *   parser always do).
 */
export function architectureOf(config: Pick<DecoderConfig, 'architectures' | 'model_type'>): Architecture {
  const arch = lookup(config.architectures, config.model_type);
  if (!arch) throw new Error(`unknown architecture ${config.architectures.join(', ')}; supported: ${supportedFamiliesLine()}`);
  return arch;
}

const layouts = new WeakMap<DecoderConfig, DecoderLayout>();

/** The weight layout of a model with `config` (computed once per config object). */
export function layoutOf(config: DecoderConfig): DecoderLayout {
  let layout = layouts.get(config);
  if (!layout) {
    layout = architectureOf(config).layout(config);
    layouts.set(config, layout);
  }
  return layout;
}
