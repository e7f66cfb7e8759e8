/**
 * Hugging Face model directories (the layout of `transformers`' `save_pretrained`):
 * `config.json`, `model.safetensors` (or shards + `model.safetensors.index.json`),
 * `tokenizer.json` (+ `tokenizer_config.json`), `generation_config.json`.
 * Only LlamaForCausalLM is supported, dense or SliceGPT-sliced (config.json `sliceserve`).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  SAFETENSORS_FILE, SAFETENSORS_INDEX_FILE, readSafetensors, readShardedSafetensors, writeShardedSafetensors,
  type SafetensorsContents, type SafetensorsWriteDtype,
} from './safetensors.js';
import {
  HfTokenizer, TOKENIZER_CONFIG_FILE, TOKENIZER_FILE, genericTokenizerConfig, loadHfTokenizer, readJsonFile,
} from './tokenizer/index.js';
import { ModelLoadError, W, type LlamaConfig, type LoadedModel, type WeightMap } from './types.js';
import { parseLlamaConfig, validateTokenizerSize, validateWeights } from './validate.js';

export const CONFIG_FILE = 'config.json';
export const GENERATION_CONFIG_FILE = 'generation_config.json';

/** On-disk dtypes of {@link saveHuggingFaceModel}, with their `torch_dtype` names. */
export type SaveDtype = 'float32' | 'float16' | 'bfloat16';
export const SAVE_DTYPES: readonly SaveDtype[] = ['float32', 'float16', 'bfloat16'];
const SAFETENSORS_DTYPE: Record<SaveDtype, SafetensorsWriteDtype> = { float32: 'F32', float16: 'F16', bfloat16: 'BF16' };

/** Tensors that some checkpoints carry but that are recomputed, never loaded. */
const IGNORED_TENSOR = /\.rotary_emb\.inv_freq$/;

/** Options of {@link loadHuggingFaceModel}. */
export interface HfLoadOptions {
  /** Model id (default: the directory's name). */
  id?: string;
}

/**
 * Loads a Hugging Face Llama directory: config.json (validated, see parseLlamaConfig), the
 * weights as float32 from model.safetensors or the sharded index (every tensor checked against
 * the config, see validateWeights; `rotary_emb.inv_freq` buffers dropped, and `lm_head.weight`
 * dropped when the embeddings are tied), tokenizer.json (+ tokenizer_config.json).
 * @throws ModelLoadError naming the file and the problem: missing config/weights/tokenizer,
 *   unknown architecture, corrupt safetensors, a missing shard, a missing or mis-shaped
 *   tensor, a tokenizer larger than config.vocab_size.
 */
export function loadHuggingFaceModel(dir: string, options: HfLoadOptions = {}): LoadedModel {
  const absDir = path.resolve(dir);
  const configFile = path.join(absDir, CONFIG_FILE);
  const config = parseLlamaConfig(readJsonFile(configFile, 'config file'), configFile);

  const single = path.join(absDir, SAFETENSORS_FILE);
  const index = path.join(absDir, SAFETENSORS_INDEX_FILE);
  let contents: SafetensorsContents;
  if (fs.existsSync(single)) {
    contents = readSafetensors(single);
  } else if (fs.existsSync(index)) {
    contents = readShardedSafetensors(index);
  } else {
    const hasBin = fs.existsSync(path.join(absDir, 'pytorch_model.bin'));
    throw new ModelLoadError(absDir, `no ${SAFETENSORS_FILE} or ${SAFETENSORS_INDEX_FILE}` +
      (hasBin ? ' (pytorch_model.bin is not supported: convert it to safetensors)' : ''));
  }
  const { weights, files } = contents;
  for (const name of [...weights.keys()]) {
    if (IGNORED_TENSOR.test(name) || (name === W.lmHead && config.tie_word_embeddings)) weights.delete(name);
  }
  const weightsFile = fs.existsSync(single) ? single : index;
  validateWeights(config, weights, (name) => files.get(name) ?? weightsFile, configFile);

  const tokenizer = loadHfTokenizer(absDir, { bosTokenId: config.bos_token_id, eosTokenId: config.eos_token_id, eosTokenIds: config.eos_token_ids });
  validateTokenizerSize(tokenizer, config, path.join(absDir, TOKENIZER_FILE), configFile);
  return { id: options.id ?? path.basename(absDir), dir: absDir, format: 'huggingface', config, weights, tokenizer };
}

/** The config.json object written for `config` (transformers' LlamaConfig field names). */
export function configToJson(config: LlamaConfig, dtype: SaveDtype): Record<string, unknown> {
  const { sliceserve, eos_token_ids: _ids, ...fields } = config;
  return {
    ...fields,
    eos_token_id: eosTokenIdJson(config),
    hidden_act: 'silu',
    attention_bias: false,
    mlp_bias: false,
    rope_scaling: null,
    torch_dtype: dtype,
    ...(sliceserve ? { sliceserve } : {}),
  };
}

/** Options of {@link saveHuggingFaceModel}. */
export interface HfSaveOptions {
  /** On-disk dtype of the weights (default float32); weights are rounded to nearest even. */
  dtype?: SaveDtype;
  /** Replace an existing non-empty directory (default false: refuse). */
  overwrite?: boolean;
  /** Shard size limit in bytes (default 2 GiB). */
  maxShardBytes?: number;
}

/** A file written by {@link saveHuggingFaceModel}. */
export interface WrittenFile {
  name: string;
  bytes: number;
}

function isNonEmptyDir(p: string): boolean {
  try {
    return fs.readdirSync(p).length > 0;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    if ((err as NodeJS.ErrnoException).code === 'ENOTDIR') return true;
    throw err;
  }
}

/**
 * Writes `model` as a Hugging Face directory: config.json, model.safetensors (shards of at
 * most 2 GiB plus model.safetensors.index.json when bigger), tokenizer.json,
 * tokenizer_config.json and generation_config.json. Tied models are written without
 * `lm_head.weight`. The write is atomic: everything goes to a temporary directory next to
 * `outDir`, which is then renamed; on failure the temporary directory is removed and any
 * existing `outDir` is left as it was.
 * @returns the files written, with sizes.
 * @throws Error if `outDir` exists and is not empty (unless `overwrite`), or on I/O errors;
 *   ModelLoadError if the model's weights do not match its config.
 */
export function saveHuggingFaceModel(model: LoadedModel, outDir: string, options: HfSaveOptions = {}): WrittenFile[] {
  const dtype = options.dtype ?? 'float32';
  if (!SAVE_DTYPES.includes(dtype)) throw new Error(`unknown dtype ${dtype}; use one of ${SAVE_DTYPES.join(', ')}`);
  const target = path.resolve(outDir);
  if (isNonEmptyDir(target) && !options.overwrite) {
    throw new Error(`${target} exists and is not empty; choose another output directory or allow overwriting`);
  }
  const weights: WeightMap = new Map(model.weights);
  if (model.config.tie_word_embeddings) weights.delete(W.lmHead);
  validateWeights(model.config, weights, () => `${model.id} (in memory)`);

  const parent = path.dirname(target);
  fs.mkdirSync(parent, { recursive: true });
  const temp = fs.mkdtempSync(path.join(parent, `.${path.basename(target)}.tmp-`));
  try {
    const writeJson = (name: string, value: unknown) => fs.writeFileSync(path.join(temp, name), JSON.stringify(value, null, 2) + '\n');
    writeJson(CONFIG_FILE, configToJson(model.config, dtype));
    const weightFiles = writeShardedSafetensors(temp, weights, {
      dtype: SAFETENSORS_DTYPE[dtype],
      metadata: { format: 'pt' },
      maxShardBytes: options.maxShardBytes,
    });
    writeJson(TOKENIZER_FILE, model.tokenizer.toJSON());
    const tokenizerConfig = model.tokenizer instanceof HfTokenizer && Object.keys(model.tokenizer.tokenizerConfig).length > 0
      ? model.tokenizer.tokenizerConfig
      : genericTokenizerConfig(model.tokenizer);
    writeJson(TOKENIZER_CONFIG_FILE, { model_max_length: model.config.max_position_embeddings, ...tokenizerConfig });
    writeJson(GENERATION_CONFIG_FILE, { bos_token_id: model.config.bos_token_id, eos_token_id: eosTokenIdJson(model.config) });
    const names = [CONFIG_FILE, ...weightFiles, TOKENIZER_FILE, TOKENIZER_CONFIG_FILE, GENERATION_CONFIG_FILE];
    const written = names.map((name) => ({ name, bytes: fs.statSync(path.join(temp, name)).size }));
    replaceDirectory(temp, target);
    return written;
  } catch (err) {
    fs.rmSync(temp, { recursive: true, force: true });
    throw err;
  }
}

/** Moves `source` to `target`, replacing an existing `target` (moved aside first, then deleted). */
function replaceDirectory(source: string, target: string): void {
  if (!fs.existsSync(target)) {
    fs.renameSync(source, target);
    return;
  }
  const backup = `${source}.old`;
  fs.renameSync(target, backup);
  try {
    fs.renameSync(source, target);
  } catch (err) {
    fs.renameSync(backup, target);
    throw err;
  }
  fs.rmSync(backup, { recursive: true, force: true });
}

/** config.json's `eos_token_id`: the id, or the list when several ids end a sequence (as transformers reads it). */
function eosTokenIdJson(config: LlamaConfig): number | number[] {
  return config.eos_token_ids && config.eos_token_ids.length > 1 ? config.eos_token_ids : config.eos_token_id;
}
