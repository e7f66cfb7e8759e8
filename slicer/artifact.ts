/**
 * The sliced model artifact: a Hugging Face-style directory (config.json with a `sliceserve`
 * section recording what was sliced and how, model.safetensors with the sliced weights and the
 * shortcut matrices, tokenizer.json). Every command that takes `--model` loads it.
 */
import { loadModel } from '../models/load.js';
import { saveHuggingFaceModel } from '../models/huggingface.js';
import type { LoadedModel } from '../models/types.js';

/**
 * Writes a sliced model atomically (temp directory + rename; nothing half-written is left
 * behind on failure).
 * @throws Error when the directory cannot be written (the message names it).
 */
export async function saveSlicedArtifact(model: LoadedModel, dir: string, overwrite = false): Promise<void> {
  if (!model.config.sliceserve) throw new Error(`${model.id} is not a sliced model`);
  await saveHuggingFaceModel(model, dir, { dtype: 'float32', overwrite });
}

/**
 * Loads a sliced artifact and checks it is one.
 * @throws ModelLoadError for a missing or corrupted directory (missing tensor, wrong shape).
 */
export async function loadSlicedArtifact(dir: string, id?: string): Promise<LoadedModel> {
  const model = await loadModel(dir, id ? { id } : {});
  if (!model.config.sliceserve) throw new Error(`${dir}/config.json has no "sliceserve" section: not a sliced model`);
  return model;
}
