/**
 * One entry point for loading any model SliceServe understands, and the weight hash that
 * identifies a model (the slicer's cache keys use it).
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { byteViews } from './bytes.js';
import { CONFIG_FILE, loadHuggingFaceModel } from './huggingface.js';
import { loadLlama2cModel } from './llama2c.js';
import { isQuantizedArtifact, loadQuantizedArtifact } from './quant/artifact.js';
import { ModelLoadError, type LoadedModel } from './types.js';

/** Options of {@link loadModel}. */
export interface LoadModelOptions {
  /** Model id (default: the model directory's name). */
  id?: string;
}

const EXPECTED = 'expected a Hugging Face model directory (config.json, model.safetensors or ' +
  'model.safetensors.index.json, tokenizer.json) or a llama2.c model (a checkpoint *.bin with a ' +
  'tok*.bin tokenizer next to it, or the path of the checkpoint .bin)';

/**
 * Loads a model from `p`, choosing the format from what is there:
 * - a directory with `config.json` -> Hugging Face (models/huggingface.ts), or a quantized
 *   artifact when config.json has a `sliceserve_quantization` section (models/quant/artifact.ts);
 * - a directory with a `*.bin` checkpoint and a `tok*.bin` tokenizer -> llama2.c
 *   (models/llama2c.ts), or the path of a `.bin` checkpoint itself.
 * Weights have Hugging Face names and RoPE layout (types.ts); a Hugging Face directory's stay
 * on disk in their own dtype until used (models/lazy-tensor.ts), a llama2.c checkpoint's are read.
 * @param options.id the model id; default the directory's basename.
 * @throws ModelLoadError naming the path when nothing there fits (listing what was expected),
 *   or the file-specific errors of the chosen loader.
 */
export function loadModel(p: string, options: LoadModelOptions = {}): LoadedModel {
  const abs = path.resolve(p);
  let stat: fs.Stats;
  try {
    stat = fs.statSync(abs);
  } catch {
    throw new ModelLoadError(abs, `no such file or directory; ${EXPECTED}`);
  }
  if (stat.isFile()) {
    if (abs.endsWith('.bin')) return loadLlama2cModel(abs, options);
    throw new ModelLoadError(abs, `not a model: ${EXPECTED}`);
  }
  const names = fs.readdirSync(abs);
  if (names.includes(CONFIG_FILE)) return isQuantizedArtifact(abs) ? loadQuantizedArtifact(abs, options) : loadHuggingFaceModel(abs, options);
  const bins = names.filter((n) => n.endsWith('.bin'));
  if (bins.some((n) => !n.startsWith('tok')) && bins.some((n) => n.startsWith('tok'))) return loadLlama2cModel(abs, options);
  throw new ModelLoadError(abs, `no model found: ${EXPECTED}; the directory holds ${names.length === 0 ? 'nothing' : names.sort().join(', ')}`);
}

/**
 * A hex sha256 that identifies a model's weights: over the tensors in sorted name order
 * (JavaScript string order), for each the UTF-8 name, a 0 byte, the shape as decimal numbers
 * joined by ',', a 0 byte, then the float32 values as little-endian bytes. Independent of the
 * on-disk format and dtype the weights were loaded from (only their float32 values count).
 * Lazy tensors are read one at a time (memory: the largest tensor).
 */
export function hashModelWeights(model: Pick<LoadedModel, 'weights'>): string {
  const hash = createHash('sha256');
  for (const name of [...model.weights.keys()].sort()) {
    const t = model.weights.get(name)!;
    hash.update(`${name}\0${t.shape.join(',')}\0`, 'utf8');
    for (const view of byteViews(t.data)) hash.update(view);
  }
  return hash.digest('hex');
}
