/**
 * The quantized model artifact: a Hugging Face-style directory whose `config.json` carries a
 * `sliceserve_quantization` section and whose `model.safetensors` holds, for every quantized
 * tensor `<name>`, exactly the MatMulNBits inputs (`<name>.qweight` U8 [N, k_blocks, blob],
 * `<name>.scales` F32 [N, k_blocks], `<name>.qzeros` U8 [N, zero-point bytes] when
 * asymmetric; models/quant/layout.ts), and every other tensor (embedding, norms, biases) as F32
 * under its own name; plus tokenizer.json, tokenizer_config.json, generation_config.json.
 * A sliced model's config keeps its `sliceserve` section. `loadModel` (models/load.ts) loads it
 * without any float32 copy of the quantized weights. Not loadable by transformers (its
 * quantization config is not one of theirs, and a sliced model has shortcut matrices).
 *
 * Written atomically (temporary directory, then rename); the safetensors data is written tensor
 * by tensor after a header computed from the shapes.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { contextLength, type DecoderConfig } from '../config.js';
import { CONFIG_FILE, GENERATION_CONFIG_FILE, configToJson } from '../huggingface.js';
import { fileTensor } from '../lazy-tensor.js';
import { layoutOf, parseDecoderConfig } from '../registry.js';
import { SAFETENSORS_FILE, readBytesAt, readSafetensorsHeader } from '../safetensors.js';
import { HfTokenizer, TOKENIZER_CONFIG_FILE, TOKENIZER_FILE, genericTokenizerConfig, loadHfTokenizer, readJsonFile } from '../tokenizer/index.js';
import { ModelLoadError, type LoadedModel, type WeightMap } from '../types.js';
import { expectedWeightShapes, validateTokenizerSize } from '../validate.js';
import type { BlockQuantizedWeight } from './blockwise.js';
import type { AccuracyLevel } from './emit.js';
import { matMulNBitsLayout, type QuantBits } from './layout.js';
import type { ModelQuantization, QuantizedTensor, QuantRotationInfo } from './model.js';
import { QUANT_PRESETS, type QuantPreset, type QuantPresetName } from './presets.js';
import { makeDirectories, makeTempDirectory } from '../dirs.js';

/** The config.json key of a quantized artifact. */
export const QUANT_CONFIG_KEY = 'sliceserve_quantization';
/** Version of the on-disk layout; bump when it changes. */
export const QUANT_ARTIFACT_VERSION = 1;

/** One quantized tensor as config.json records it. */
interface TensorJson {
  shape: number[];
  transposed: boolean;
  bits: QuantBits;
  block_size: number;
  symmetric: boolean;
  accuracy_level: AccuracyLevel;
}

/** The `sliceserve_quantization` section. */
export interface QuantizationJson {
  format: 'onnxruntime-matmulnbits';
  version: number;
  preset: QuantPresetName;
  options: QuantPreset;
  rotation: QuantRotationInfo | null;
  /** sha256 of the float model it was quantized from (models/load.ts hashModelWeights), when known. */
  source_model_sha256: string | null;
  created: string;
  tensors: Record<string, TensorJson>;
}

/** Whether `dir` holds a quantized artifact (its config.json has the section). */
export function isQuantizedArtifact(dir: string): boolean {
  const file = path.join(dir, CONFIG_FILE);
  if (!fs.existsSync(file)) return false;
  try {
    const json = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
    return typeof json === 'object' && json !== null && QUANT_CONFIG_KEY in json;
  } catch {
    return false;
  }
}

/** A tensor of the safetensors file: name, dtype, shape and its bytes. */
interface Entry {
  name: string;
  dtype: 'F32' | 'U8';
  shape: number[];
  bytes: Uint8Array;
}

const bytesOf = (a: Float32Array | Uint8Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

function entriesOf(model: LoadedModel): Entry[] {
  const q = model.quantization!;
  const entries: Entry[] = [];
  for (const [name, t] of [...model.weights].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) entries.push({ name, dtype: 'F32', shape: [...t.shape], bytes: bytesOf(t.data) });
  for (const [name, t] of [...q.tensors].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    const L = t.q.layout;
    entries.push({ name: `${name}.qweight`, dtype: 'U8', shape: [L.N, L.kBlocks, L.blobSize], bytes: t.q.data });
    entries.push({ name: `${name}.scales`, dtype: 'F32', shape: [L.N, L.kBlocks], bytes: bytesOf(t.q.scales) });
    if (t.q.zeroPoints) entries.push({ name: `${name}.qzeros`, dtype: 'U8', shape: [L.N, L.zeroPointBytesPerRow], bytes: t.q.zeroPoints });
  }
  return entries;
}

/** Writes a safetensors file: the header from the entries' sizes, then each tensor's bytes. */
function writeEntries(file: string, entries: readonly Entry[], metadata: Record<string, string>): void {
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const e of entries) {
    header[e.name] = { dtype: e.dtype, shape: e.shape, data_offsets: [offset, offset + e.bytes.byteLength] };
    offset += e.bytes.byteLength;
  }
  let text = JSON.stringify(header);
  text += ' '.repeat((8 - (Buffer.byteLength(text) % 8)) % 8);
  const json = Buffer.from(text, 'utf8');
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(json.length), 0);
  const fd = fs.openSync(file, 'w');
  try {
    const write = (b: Uint8Array) => {
      for (let done = 0; done < b.byteLength; ) done += fs.writeSync(fd, b, done, Math.min(1 << 30, b.byteLength - done));
    };
    write(prefix);
    write(json);
    for (const e of entries) write(e.bytes);
  } finally {
    fs.closeSync(fd);
  }
}

/** Options of {@link saveQuantizedArtifact}. */
export interface QuantSaveOptions {
  /** Replace an existing non-empty directory (default false: refuse). */
  overwrite?: boolean;
  /** sha256 of the float model it was quantized from, recorded in config.json. */
  sourceSha256?: string | null;
}

/**
 * Writes a quantized model (LoadedModel with `quantization`) as an artifact directory,
 * atomically.
 * @throws Error for a model that is not quantized, a non-empty `dir` without `overwrite`, or
 *   I/O errors (the message names the directory); nothing half-written is left behind.
 */
export function saveQuantizedArtifact(model: LoadedModel, dir: string, options: QuantSaveOptions = {}): void {
  const q = model.quantization;
  if (!q) throw new Error(`${model.id} is not quantized`);
  const target = path.resolve(dir);
  if (fs.existsSync(target) && (!fs.statSync(target).isDirectory() || fs.readdirSync(target).length > 0) && !options.overwrite) {
    throw new Error(`${target} exists and is not empty; choose another directory or allow overwriting`);
  }
  const tensors: Record<string, TensorJson> = {};
  for (const [name, t] of q.tensors) {
    tensors[name] = { shape: [...t.shape], transposed: t.transposed, bits: t.q.layout.bits, block_size: t.q.layout.blockSize, symmetric: t.q.symmetric, accuracy_level: t.accuracyLevel };
  }
  const section: QuantizationJson = {
    format: 'onnxruntime-matmulnbits',
    version: QUANT_ARTIFACT_VERSION,
    preset: q.preset,
    options: q.options,
    rotation: q.rotation,
    source_model_sha256: options.sourceSha256 ?? null,
    created: new Date().toISOString(),
    tensors,
  };
  const parent = path.dirname(target);
  makeDirectories(parent);
  const temp = makeTempDirectory(path.join(parent, `.${path.basename(target)}.tmp-`));
  try {
    const writeJson = (name: string, value: unknown) => fs.writeFileSync(path.join(temp, name), JSON.stringify(value, null, 2) + '\n');
    writeJson(CONFIG_FILE, { ...configToJson(model.config, 'float32'), [QUANT_CONFIG_KEY]: section });
    writeEntries(path.join(temp, SAFETENSORS_FILE), entriesOf(model), { format: 'pt', sliceserve: 'quantized (onnxruntime MatMulNBits layout; see config.json sliceserve_quantization)' });
    writeJson(TOKENIZER_FILE, model.tokenizer.toJSON());
    const tokenizerConfig = model.tokenizer instanceof HfTokenizer && Object.keys(model.tokenizer.tokenizerConfig).length > 0 ? model.tokenizer.tokenizerConfig : genericTokenizerConfig(model.tokenizer);
    writeJson(TOKENIZER_CONFIG_FILE, { model_max_length: contextLength(model.config), ...tokenizerConfig });
    const eos = model.config.eos_token_ids && model.config.eos_token_ids.length > 1 ? model.config.eos_token_ids : model.config.eos_token_id;
    writeJson(GENERATION_CONFIG_FILE, { bos_token_id: model.config.bos_token_id, eos_token_id: eos });
    if (fs.existsSync(target)) fs.rmSync(target, { recursive: true, force: true });
    fs.renameSync(temp, target);
  } catch (err) {
    fs.rmSync(temp, { recursive: true, force: true });
    throw err;
  }
}

/** The section of config.json, checked. @throws ModelLoadError naming the file. */
function parseSection(json: Record<string, unknown>, file: string): QuantizationJson {
  const s = json[QUANT_CONFIG_KEY] as QuantizationJson | undefined;
  const bad = (what: string) => new ModelLoadError(file, `${QUANT_CONFIG_KEY}: ${what}`);
  if (typeof s !== 'object' || s === null) throw bad('expected an object');
  if (s.format !== 'onnxruntime-matmulnbits') throw bad(`unknown format ${JSON.stringify(s.format)}`);
  if (s.version !== QUANT_ARTIFACT_VERSION) throw bad(`version ${String(s.version)} is not ${QUANT_ARTIFACT_VERSION}; quantize the model again`);
  if (!(s.preset in QUANT_PRESETS)) throw bad(`unknown preset ${JSON.stringify(s.preset)}`);
  if (typeof s.tensors !== 'object' || s.tensors === null) throw bad('no tensors');
  return s;
}

/**
 * Loads a quantized artifact written by {@link saveQuantizedArtifact}.
 * @param options.id the model id (default: the directory's name).
 * @throws ModelLoadError naming the file: a bad config section, a missing or mis-shaped tensor
 *   (float or quantized part), tensors the layout does not have, a corrupt safetensors file.
 */
export function loadQuantizedArtifact(dir: string, options: { id?: string } = {}): LoadedModel {
  const absDir = path.resolve(dir);
  const configFile = path.join(absDir, CONFIG_FILE);
  const json = readJsonFile(configFile, 'config file');
  const section = parseSection(json, configFile);
  const { [QUANT_CONFIG_KEY]: _section, ...plain } = json;
  const config: DecoderConfig = parseDecoderConfig(plain, configFile);
  const file = path.join(absDir, SAFETENSORS_FILE);
  const header = readSafetensorsHeader(file);
  const info = new Map(header.tensors.map((t) => [t.name, t]));
  const fd = fs.openSync(file, 'r');
  const read = (name: string, dtype: 'F32' | 'U8', shape: readonly number[]): Float32Array | Uint8Array => {
    const t = info.get(name);
    if (!t) throw new ModelLoadError(file, `missing tensor ${name}`);
    if (t.dtype !== dtype || t.shape.join(',') !== shape.join(',')) throw new ModelLoadError(file, `tensor ${name} is ${t.dtype} [${t.shape.join(', ')}], expected ${dtype} [${shape.join(', ')}]`);
    const out = dtype === 'F32' ? new Float32Array(t.shape.reduce((a, b) => a * b, 1)) : new Uint8Array(t.end - t.begin);
    readBytesAt(fd, bytesOf(out), header.dataStart + t.begin, file);
    info.delete(name);
    return out;
  };
  const tensors = new Map<string, QuantizedTensor>();
  const weights: WeightMap = new Map();
  try {
    for (const [name, t] of Object.entries(section.tensors)) {
      const [rows, cols] = t.transposed ? [t.shape[1], t.shape[0]] : [t.shape[0], t.shape[1]];
      const L = matMulNBitsLayout(rows, cols, { bits: t.bits, blockSize: t.block_size });
      const q: BlockQuantizedWeight = {
        layout: L,
        symmetric: t.symmetric,
        data: read(`${name}.qweight`, 'U8', [L.N, L.kBlocks, L.blobSize]) as Uint8Array,
        scales: read(`${name}.scales`, 'F32', [L.N, L.kBlocks]) as Float32Array,
        ...(t.symmetric ? {} : { zeroPoints: read(`${name}.qzeros`, 'U8', [L.N, L.zeroPointBytesPerRow]) as Uint8Array }),
      };
      tensors.set(name, { shape: [...t.shape], q, transposed: t.transposed, accuracyLevel: t.accuracy_level });
    }
    for (const t of [...info.values()]) {
      if (/\.(qweight|scales|qzeros)$/.test(t.name) || t.dtype !== 'F32') throw new ModelLoadError(file, `unexpected tensor ${t.name} (${t.dtype}; config.json ${QUANT_CONFIG_KEY}.tensors does not list it)`);
      // Float tensors (embedding, norms, biases) stay on disk until used (models/lazy-tensor.ts).
      weights.set(t.name, fileTensor([...t.shape], { file, offset: header.dataStart + t.begin, dtype: 'F32' }));
    }
  } finally {
    fs.closeSync(fd);
  }
  // Together, the float and the quantized tensors are exactly the layout's (a tied head may be quantized on its own).
  const expected = expectedWeightShapes(config);
  const head = layoutOf(config).lmHead.weight;
  for (const [name, t] of [...weights, ...tensors]) {
    const want = expected.get(name) ?? (name === head && config.tie_word_embeddings ? [config.vocab_size, t.shape[1]] : undefined);
    if (!want) throw new ModelLoadError(file, `unexpected tensor ${name} (not in the ${config.architectures[0]} layout)`);
    if (want.join(',') !== t.shape.join(',')) throw new ModelLoadError(file, `tensor ${name} has shape [${t.shape.join(', ')}], expected [${want.join(', ')}]`);
  }
  for (const name of expected.keys()) if (!weights.has(name) && !tensors.has(name)) throw new ModelLoadError(file, `missing tensor ${name}`);
  const tokenizer = loadHfTokenizer(absDir, { bosTokenId: config.bos_token_id, eosTokenId: config.eos_token_id, eosTokenIds: config.eos_token_ids });
  validateTokenizerSize(tokenizer, config, path.join(absDir, TOKENIZER_FILE), configFile);
  const quantization: ModelQuantization = { preset: section.preset, options: section.options, rotation: section.rotation, tensors };
  return { id: options.id ?? path.basename(absDir), dir: absDir, format: 'huggingface', config, weights, tokenizer, quantization };
}
