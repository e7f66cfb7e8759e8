/**
 * Fixtures for the model-loading tests: paths of the bundled model and shared data, temporary
 * directories, raw safetensors/llama2.c file writers for corrupt inputs, the two RoPE layouts,
 * and a one-call "convert stories260K to a Hugging Face directory" for end-to-end checks.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { saveHuggingFaceModel, type SaveDtype } from '../../models/huggingface.js';
import { loadModel } from '../../models/load.js';
import { ModelLoadError, type LoadedModel } from '../../models/types.js';

/** Repository root (tests run from dist/test/models). */
export const REPO_ROOT = path.resolve(__dirname, '..', '..', '..');
/** The bundled llama2.c model. */
export const STORIES_DIR = path.join(REPO_ROOT, 'models', 'stories260K');
export const STORIES_BIN = path.join(STORIES_DIR, 'stories260K.bin');
export const TOK512 = path.join(STORIES_DIR, 'tok512.bin');
/** Texts the tests read, all inside the repository (a fresh clone has nothing beside it). */
export const VALID_FILE = path.join(REPO_ROOT, 'data', 'tinystories-valid-sample.txt');
export const TRAIN_FILE = path.join(REPO_ROOT, 'data', 'tinystories-train-sample.txt');
/** Test-only fixtures (test/fixtures/data/SOURCES.md). */
export const FIXTURE_DATA = path.join(REPO_ROOT, 'test', 'fixtures', 'data');
export const WIKITEXT_FILE = path.join(FIXTURE_DATA, 'wikitext2-test.raw');
export const TINY_STORIES_FILE = path.join(FIXTURE_DATA, 'tinystories-sample-tiny.txt');

/** A fresh temporary directory, removed when the process exits. */
export function tempDir(prefix = 'sliceserve-models-'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  process.once('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/**
 * Writes a safetensors file from a raw header (object or exact JSON text) and data bytes, with
 * no validation: for corrupt-file tests.
 */
export function writeRawSafetensors(file: string, header: object | string, data: Uint8Array, headerLength?: bigint): void {
  const json = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(headerLength ?? BigInt(json.length));
  fs.writeFileSync(file, Buffer.concat([prefix, json, Buffer.from(data)]));
}

/** Header fields of a llama2.c checkpoint (vocab_size negative = untied classifier). */
export interface RawLlama2cHeader {
  dim: number; hiddenDim: number; nLayers: number; nHeads: number; nKvHeads: number; vocabSize: number; seqLen: number;
}

/** Writes a llama2.c legacy checkpoint: the 7-int header, then `floats` as float32. */
export function writeLlama2cCheckpoint(file: string, h: RawLlama2cHeader, floats: Float32Array): void {
  const header = Buffer.alloc(28);
  [h.dim, h.hiddenDim, h.nLayers, h.nHeads, h.nKvHeads, h.vocabSize, h.seqLen].forEach((v, i) => header.writeInt32LE(v, 4 * i));
  fs.writeFileSync(file, Buffer.concat([header, Buffer.from(floats.buffer, floats.byteOffset, floats.byteLength)]));
}

/** RoPE angle of pair i at position `pos` (theta = 10000, as run.c and transformers). */
function ropeAngle(pos: number, i: number, headDim: number): number {
  return pos * 10000 ** (-(2 * i) / headDim);
}

/** llama2.c RoPE on one head vector: rotates adjacent pairs (2i, 2i+1). */
export function ropeAdjacent(v: Float64Array, pos: number): Float64Array {
  const out = new Float64Array(v.length);
  for (let i = 0; i < v.length / 2; i++) {
    const a = ropeAngle(pos, i, v.length);
    const [x0, x1] = [v[2 * i]!, v[2 * i + 1]!];
    out[2 * i] = x0 * Math.cos(a) - x1 * Math.sin(a);
    out[2 * i + 1] = x0 * Math.sin(a) + x1 * Math.cos(a);
  }
  return out;
}

/** Hugging Face RoPE on one head vector: `x cos + rotate_half(x) sin`, pairs (i, i + hd/2). */
export function ropeHalf(v: Float64Array, pos: number): Float64Array {
  const half = v.length / 2;
  const out = new Float64Array(v.length);
  for (let i = 0; i < half; i++) {
    const a = ropeAngle(pos, i, v.length);
    out[i] = v[i]! * Math.cos(a) - v[i + half]! * Math.sin(a);
    out[i + half] = v[i + half]! * Math.cos(a) + v[i]! * Math.sin(a);
  }
  return out;
}

/** `W x` for W [rows, cols] row-major, in float64. */
export function matVec(w: Float32Array, rows: number, cols: number, x: Float64Array): Float64Array {
  const out = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let s = 0;
    for (let c = 0; c < cols; c++) s += w[r * cols + c]! * x[c]!;
    out[r] = s;
  }
  return out;
}

/**
 * Loads the bundled stories260K (llama2.c) and its conversion to a Hugging Face directory in
 * `dtype`, both through `loadModel`: the pair an end-to-end check (same logits) needs.
 */
export function convertStories260K(dtype: SaveDtype = 'float32'): { dense: LoadedModel; converted: LoadedModel; dir: string } {
  const dense = loadModel(STORIES_DIR);
  const dir = path.join(tempDir(), `stories260K-hf-${dtype}`);
  saveHuggingFaceModel(dense, dir, { dtype });
  return { dense, converted: loadModel(dir), dir };
}

/**
 * Asserts that `fn` throws a ModelLoadError for `file` whose message contains every one of
 * `parts`, and returns the message.
 */
export function assertLoadError(fn: () => unknown, file: string, ...parts: string[]): string {
  let error: unknown;
  try {
    fn();
  } catch (err) {
    error = err;
  }
  assert.ok(error instanceof ModelLoadError, `expected a ModelLoadError, got ${error === undefined ? 'no error' : String(error)}`);
  assert.equal(error.file, file, `error names ${error.file}, expected ${file} (message: ${error.message})`);
  assert.ok(error.message.startsWith(`${file}: `), error.message);
  for (const part of parts) assert.ok(error.message.includes(part), `message ${JSON.stringify(error.message)} lacks ${JSON.stringify(part)}`);
  return error.message;
}
