/**
 * Hugging Face model directories (the layout of `transformers`' `save_pretrained`):
 * `config.json`, `model.safetensors` (or shards + `model.safetensors.index.json`),
 * `tokenizer.json` (+ `tokenizer_config.json`), `generation_config.json`.
 * Every family of models/registry.ts, dense or SliceGPT-sliced (config.json `sliceserve`).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  SAFETENSORS_FILE, SAFETENSORS_INDEX_FILE, ShardedSafetensorsWriter, readSafetensors, readShardedSafetensors,
  type SafetensorsContents, type SafetensorsWriteDtype,
} from './safetensors.js';
import {
  HfTokenizer, TOKENIZER_CONFIG_FILE, TOKENIZER_FILE, genericTokenizerConfig, loadHfTokenizer, readJsonFile,
} from './tokenizer/index.js';
import { contextLength, type DecoderConfig } from './config.js';
import { architectureOf, layoutOf, parseDecoderConfig } from './registry.js';
import { ModelLoadError, type LoadedModel, type TextTokenizer, type WeightMap, type WeightTensor } from './types.js';
import { expectedWeightShapes, validateTokenizerSize, validateWeights } from './validate.js';
import { makeDirectories, makeTempDirectory } from './dirs.js';

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
  /**
   * Keep the weights on disk, each read (as float32) when it is used (default true; see
   * models/lazy-tensor.ts): loading reads only the headers, and a bf16/f16 checkpoint is never
   * held widened. false reads every tensor now.
   */
  lazy?: boolean;
}

/**
 * Loads a Hugging Face directory: config.json (parsed by its family, models/registry.ts), the
 * weights from model.safetensors or the sharded index, lazily by default (converted by the
 * family's `fromCheckpoint`, then every tensor checked against the config by shape, see
 * validateWeights; `rotary_emb.inv_freq` buffers dropped, and the head dropped when the
 * embeddings are tied), tokenizer.json (+ tokenizer_config.json). The safetensors files must
 * not change while the model is in use.
 * @throws ModelLoadError naming the file and the problem: missing config/weights/tokenizer,
 *   unknown architecture, corrupt safetensors, a missing shard, a missing or mis-shaped
 *   tensor, a tokenizer larger than config.vocab_size.
 */
export function loadHuggingFaceModel(dir: string, options: HfLoadOptions = {}): LoadedModel {
  const absDir = path.resolve(dir);
  const configFile = path.join(absDir, CONFIG_FILE);
  const config = parseDecoderConfig(withEndOfSequenceIds(readJsonFile(configFile, 'config file'), absDir), configFile);

  const single = path.join(absDir, SAFETENSORS_FILE);
  const index = path.join(absDir, SAFETENSORS_INDEX_FILE);
  let contents: SafetensorsContents;
  const read = { lazy: options.lazy ?? true };
  if (fs.existsSync(single)) {
    contents = readSafetensors(single, undefined, read);
  } else if (fs.existsSync(index)) {
    contents = readShardedSafetensors(index, read);
  } else {
    const hasBin = fs.existsSync(path.join(absDir, 'pytorch_model.bin'));
    throw new ModelLoadError(absDir, `no ${SAFETENSORS_FILE} or ${SAFETENSORS_INDEX_FILE}` +
      (hasBin ? ' (pytorch_model.bin is not supported: convert it to safetensors)' : ''));
  }
  const { files } = contents;
  const weightsFile = fs.existsSync(single) ? single : index;
  const arch = architectureOf(config);
  const weights = arch.fromCheckpoint ? arch.fromCheckpoint(contents.weights, config, weightsFile) : contents.weights;
  const lmHead = layoutOf(config).lmHead.weight;
  for (const name of [...weights.keys()]) {
    if (IGNORED_TENSOR.test(name) || (name === lmHead && config.tie_word_embeddings)) weights.delete(name);
  }
  validateWeights(config, weights, (name) => files.get(name) ?? weightsFile, configFile);

  const tokenizer = loadHfTokenizer(absDir, { bosTokenId: config.bos_token_id, eosTokenId: config.eos_token_id, eosTokenIds: config.eos_token_ids });
  validateTokenizerSize(tokenizer, config, path.join(absDir, TOKENIZER_FILE), configFile);
  return { id: options.id ?? path.basename(absDir), dir: absDir, format: 'huggingface', config, weights, tokenizer };
}

/**
 * config.json with every id that ends a sequence: its `eos_token_id` (one id or a list) joined
 * with generation_config.json's (transformers' `generate` and vLLM stop at the latter, e.g.
 * Llama-3 instruct models list <|eot_id|> there); when neither has one, the id of
 * tokenizer_config.json's `eos_token` in tokenizer.json. Unchanged when nothing is found (the
 * family's default applies, or parsing says that an EOS is missing).
 */
function withEndOfSequenceIds(json: Record<string, unknown>, dir: string): Record<string, unknown> {
  const ids = (v: unknown): number[] => (Array.isArray(v) ? v : v === null || v === undefined ? [] : [v]).filter((x): x is number => Number.isInteger(x));
  const own = ids(json.eos_token_id);
  const generationFile = path.join(dir, GENERATION_CONFIG_FILE);
  const generation = fs.existsSync(generationFile) ? ids(readJsonFile(generationFile, 'generation config').eos_token_id) : [];
  let all = [...new Set([...own, ...generation])];
  if (all.length === 0) {
    const fromTokenizer = tokenizerEosId(dir);
    if (fromTokenizer === null) return json;
    all = [fromTokenizer];
  }
  if (all.length === own.length) return json;
  return { ...json, eos_token_id: all.length === 1 ? all[0] : all };
}

/** The id of tokenizer_config.json's `eos_token` among tokenizer.json's added tokens, or null. */
function tokenizerEosId(dir: string): number | null {
  const configFile = path.join(dir, TOKENIZER_CONFIG_FILE);
  const tokenizerFile = path.join(dir, TOKENIZER_FILE);
  if (!fs.existsSync(configFile) || !fs.existsSync(tokenizerFile)) return null;
  const eos = readJsonFile(configFile, 'tokenizer config').eos_token;
  const content = typeof eos === 'string' ? eos : (eos as { content?: unknown } | null)?.content;
  if (typeof content !== 'string') return null;
  const added = readJsonFile(tokenizerFile, 'tokenizer file').added_tokens;
  const hit = Array.isArray(added) ? added.find((t) => (t as { content?: unknown }).content === content) : undefined;
  const id = (hit as { id?: unknown } | undefined)?.id;
  return Number.isInteger(id) ? (id as number) : null;
}

/**
 * The config.json object written for `config`: the family's own config.json as it was read
 * (DecoderConfig.source), or for a model built in memory the family's `configJson`, with what
 * SliceServe sets: tie_word_embeddings, eos_token_id (a list when several ids end a sequence),
 * torch_dtype, and the `sliceserve` section of a sliced model.
 * @throws Error for an in-memory model whose family cannot write a config.
 */
export function configToJson(config: DecoderConfig, dtype: SaveDtype): Record<string, unknown> {
  const arch = architectureOf(config);
  const base = config.source ?? arch.configJson?.(config);
  if (!base) throw new Error(`${arch.family} models built in memory cannot be saved (no config.json to write)`);
  const { sliceserve: _old, ...fields } = base;
  return {
    ...fields,
    tie_word_embeddings: config.tie_word_embeddings,
    eos_token_id: eosTokenIdJson(config),
    torch_dtype: dtype,
    ...(config.sliceserve ? { sliceserve: config.sliceserve } : {}),
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

/** What a Hugging Face directory holds besides its weights. */
export interface HfModelDescription {
  /** Names the model in messages. */
  id: string;
  config: DecoderConfig;
  tokenizer: TextTokenizer;
}

/**
 * A Hugging Face directory written tensor by tensor (what {@link saveHuggingFaceModel} and the
 * slicer use): {@link HuggingFaceWriter.create} plans the safetensors shards from the shapes
 * the config calls for (models/validate.ts `expectedWeightShapes`, the tied head left out) in a
 * temporary directory next to the target; {@link write} puts each tensor in its place as soon
 * as it is known, in any order; {@link commit} writes config.json, the tokenizer and generation
 * files and the shard index and renames the directory into place (atomic: the target appears
 * complete or not at all); {@link abort} removes the temporary directory. Memory: one tensor at
 * a time.
 */
export class HuggingFaceWriter {
  private readonly tensors: ShardedSafetensorsWriter;
  private done = false;

  private constructor(
    private readonly model: HfModelDescription,
    private readonly target: string,
    private readonly temp: string,
    private readonly dtype: SaveDtype,
    private readonly overwrite: boolean,
    shapes: Map<string, number[]>,
    maxShardBytes: number | undefined,
  ) {
    this.tensors = new ShardedSafetensorsWriter(temp, shapes, { dtype: SAFETENSORS_DTYPE[dtype], metadata: { format: 'pt' }, maxShardBytes });
  }

  /**
   * Starts writing `model` to `outDir`.
   * @throws Error for an unknown dtype, or when `outDir` exists and is not empty (unless
   *   `overwrite`); I/O errors.
   */
  static create(model: HfModelDescription, outDir: string, options: HfSaveOptions = {}): HuggingFaceWriter {
    const dtype = options.dtype ?? 'float32';
    if (!SAVE_DTYPES.includes(dtype)) throw new Error(`unknown dtype ${dtype}; use one of ${SAVE_DTYPES.join(', ')}`);
    const target = path.resolve(outDir);
    if (isNonEmptyDir(target) && !options.overwrite) {
      throw new Error(`${target} exists and is not empty; choose another output directory or allow overwriting`);
    }
    const shapes = expectedWeightShapes(model.config);
    const parent = path.dirname(target);
    makeDirectories(parent);
    const temp = makeTempDirectory(path.join(parent, `.${path.basename(target)}.tmp-`));
    try {
      return new HuggingFaceWriter(model, target, temp, dtype, options.overwrite ?? false, shapes, options.maxShardBytes);
    } catch (err) {
      fs.rmSync(temp, { recursive: true, force: true });
      throw err;
    }
  }

  /**
   * Writes one tensor (its `data` is read once), rounded to the directory's dtype.
   * @throws Error for a name the config does not call for, or another shape.
   */
  write(name: string, tensor: WeightTensor): void {
    this.tensors.write(name, tensor);
  }

  /**
   * The tensor written for `name`, read back on use from the temporary directory (valid until
   * {@link commit} or {@link abort}; in the dtype of the directory).
   */
  readBack(name: string): WeightTensor {
    return this.tensors.readBack(name);
  }

  /** Tensors the config calls for that were not written yet, sorted. */
  get missing(): string[] {
    return this.tensors.missing;
  }

  /**
   * Finishes the directory and moves it to the target (replacing an existing one when
   * overwriting was allowed).
   * @returns the files written, with sizes.
   * @throws Error naming tensors that were never written (the temporary directory is
   *   removed), or I/O errors.
   */
  commit(): WrittenFile[] {
    if (this.done) throw new Error(`${this.target}: already committed or aborted`);
    try {
      const weightFiles = this.tensors.finish();
      const { config, tokenizer } = this.model;
      const writeJson = (name: string, value: unknown) => fs.writeFileSync(path.join(this.temp, name), JSON.stringify(value, null, 2) + '\n');
      writeJson(CONFIG_FILE, configToJson(config, this.dtype));
      writeJson(TOKENIZER_FILE, tokenizer.toJSON());
      // A config that holds nothing but a chat_template.jinja's template gets the generic fields too.
      const own = tokenizer instanceof HfTokenizer ? tokenizer.tokenizerConfig : {};
      const tokenizerConfig = Object.keys(own).some((key) => key !== 'chat_template') ? own : { ...genericTokenizerConfig(tokenizer), ...own };
      writeJson(TOKENIZER_CONFIG_FILE, { model_max_length: contextLength(config), ...tokenizerConfig });
      writeJson(GENERATION_CONFIG_FILE, { bos_token_id: config.bos_token_id, eos_token_id: eosTokenIdJson(config) });
      const names = [CONFIG_FILE, ...weightFiles, TOKENIZER_FILE, TOKENIZER_CONFIG_FILE, GENERATION_CONFIG_FILE];
      const written = names.map((name) => ({ name, bytes: fs.statSync(path.join(this.temp, name)).size }));
      if (isNonEmptyDir(this.target) && !this.overwrite) throw new Error(`${this.target} exists and is not empty; choose another output directory or allow overwriting`);
      replaceDirectory(this.temp, this.target);
      this.done = true;
      return written;
    } catch (err) {
      this.abort();
      throw err;
    }
  }

  /** Drops everything written (idempotent). */
  abort(): void {
    if (this.done) return;
    this.done = true;
    this.tensors.close();
    fs.rmSync(this.temp, { recursive: true, force: true });
  }
}

/**
 * Writes `model` as a Hugging Face directory: config.json, model.safetensors (shards of at
 * most 2 GiB plus model.safetensors.index.json when bigger), tokenizer.json,
 * tokenizer_config.json and generation_config.json. Tied models are written without
 * `lm_head.weight`. Tensors are read (lazy ones too) and written one at a time
 * ({@link HuggingFaceWriter}). The write is atomic: everything goes to a temporary directory
 * next to `outDir`, which is then renamed; on failure the temporary directory is removed and
 * any existing `outDir` is left as it was.
 * @returns the files written, with sizes.
 * @throws Error if `outDir` exists and is not empty (unless `overwrite`), or on I/O errors;
 *   ModelLoadError if the model's weights do not match its config.
 */
export function saveHuggingFaceModel(model: LoadedModel, outDir: string, options: HfSaveOptions = {}): WrittenFile[] {
  const weights: WeightMap = new Map(model.weights);
  if (model.config.tie_word_embeddings) weights.delete(layoutOf(model.config).lmHead.weight);
  const writer = HuggingFaceWriter.create(model, outDir, options);
  try {
    validateWeights(model.config, weights, () => `${model.id} (in memory)`);
    for (const [name, t] of weights) writer.write(name, t);
  } catch (err) {
    writer.abort();
    throw err;
  }
  return writer.commit();
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
function eosTokenIdJson(config: DecoderConfig): number | number[] {
  return config.eos_token_ids && config.eos_token_ids.length > 1 ? config.eos_token_ids : config.eos_token_id;
}
