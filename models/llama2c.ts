/**
 * Loader of llama2.c checkpoints (Karpathy's llama2.c `export.py`, legacy format "version 0",
 * read by `run.c`), producing the Hugging Face view of types.ts.
 *
 * File layout: 7 int32 header fields (dim, hidden_dim, n_layers, n_heads, n_kv_heads,
 * vocab_size, seq_len), then float32 arrays, row-major, linear weights `[out, in]`:
 * token_embedding [V, d], rms_att [L, d], wq [L, d, d], wk [L, kv, d], wv [L, kv, d],
 * wo [L, d, d], rms_ffn [L, d], w1 [L, h, d], w2 [L, d, h], w3 [L, h, d], rms_final [d],
 * freq_cis_real and freq_cis_imag [seq_len, head_dim/2] each (unused, skipped), and, only
 * when vocab_size is negative, an untied classifier [|V|, d]; otherwise the classifier is
 * the token embedding. (kv = n_kv_heads * head_dim, head_dim = d / n_heads.)
 *
 * RoPE: llama2.c rotates adjacent pairs (2i, 2i+1) of each head; Hugging Face rotates i
 * against i + head_dim/2. The rows of wq and wk are permuted per head on load
 * ({@link permuteRopeRows}) so that everything downstream uses the Hugging Face layout
 * (SLICEGPT.md section 8).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { readBytesAt } from './safetensors.js';
import { loadLlama2cTokenizer } from './tokenizer/index.js';
import { llama } from './arch/llama/index.js';
import type { DecoderConfig } from './config.js';
import { layoutOf } from './registry.js';
import { ModelLoadError, type LoadedModel, type WeightMap } from './types.js';

/** The 7-field header of a legacy llama2.c checkpoint. */
export interface Llama2cHeader {
  dim: number;
  hiddenDim: number;
  nLayers: number;
  nHeads: number;
  nKvHeads: number;
  /** |vocab_size| from the file. */
  vocabSize: number;
  seqLen: number;
  /** True when the file's vocab_size was positive: the classifier is the token embedding. */
  sharedClassifier: boolean;
}

const HEADER_BYTES = 28;
/** First int32 of llama2.c's newer export formats ("ak42" little-endian). */
const NEW_FORMAT_MAGIC = 0x616b3432;
/** Sanity bounds that reject garbage headers (far above any llama2.c model). */
const LIMITS = { dim: 1 << 16, hiddenDim: 1 << 18, nLayers: 1 << 10, nHeads: 1 << 10, vocabSize: 1 << 22, seqLen: 1 << 22 };

/**
 * Reads and checks a checkpoint header.
 * @throws ModelLoadError naming `file` if it is missing, shorter than 28 bytes, in llama2.c's
 *   newer (version 1/2) export format, or has nonsense values (non-positive sizes, dim not a
 *   multiple of n_heads, n_heads not a multiple of n_kv_heads, odd head_dim, absurd sizes).
 */
export function readLlama2cHeader(file: string): Llama2cHeader {
  const bytes = Buffer.alloc(HEADER_BYTES);
  let n = 0;
  try {
    const fd = fs.openSync(file, 'r');
    try {
      n = fs.readSync(fd, bytes, 0, HEADER_BYTES, 0);
    } finally {
      fs.closeSync(fd);
    }
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ModelLoadError(file, code === 'ENOENT' ? 'checkpoint not found' : `cannot read: ${(err as Error).message}`);
  }
  if (n < HEADER_BYTES) throw new ModelLoadError(file, `truncated: ${n} bytes, shorter than the 28-byte llama2.c header`);
  const f = (i: number) => bytes.readInt32LE(4 * i);
  if (f(0) === NEW_FORMAT_MAGIC) {
    throw new ModelLoadError(file, `llama2.c export format version ${f(1)} is not supported; export with --version 0 (legacy format)`);
  }
  const h: Llama2cHeader = {
    dim: f(0), hiddenDim: f(1), nLayers: f(2), nHeads: f(3), nKvHeads: f(4),
    vocabSize: Math.abs(f(5)), seqLen: f(6), sharedClassifier: f(5) > 0,
  };
  const fields = `dim=${h.dim}, hidden_dim=${h.hiddenDim}, n_layers=${h.nLayers}, n_heads=${h.nHeads}, ` +
    `n_kv_heads=${h.nKvHeads}, vocab_size=${f(5)}, seq_len=${h.seqLen}`;
  const bad = (why: string) => new ModelLoadError(file, `not a llama2.c checkpoint: header ${fields}: ${why}`);
  for (const key of ['dim', 'hiddenDim', 'nLayers', 'nHeads', 'vocabSize', 'seqLen'] as const) {
    if (!(h[key] > 0) || h[key] > LIMITS[key]) throw bad(`${key} must be in 1..${LIMITS[key]}`);
  }
  if (h.nKvHeads <= 0 || h.nKvHeads > h.nHeads || h.nHeads % h.nKvHeads !== 0) throw bad('n_heads must be a multiple of n_kv_heads');
  if (h.dim % h.nHeads !== 0) throw bad('dim must be a multiple of n_heads');
  if ((h.dim / h.nHeads) % 2 !== 0) throw bad('head_dim = dim / n_heads must be even (RoPE rotates pairs)');
  return h;
}

/** Number of float32 values after the header (weights, RoPE tables, untied classifier). */
export function llama2cFloatCount(h: Llama2cHeader): number {
  const headDim = h.dim / h.nHeads;
  const kvDim = h.nKvHeads * headDim;
  const perLayer = 2 * h.dim + 2 * h.dim * h.dim + 2 * kvDim * h.dim + 3 * h.hiddenDim * h.dim;
  return h.vocabSize * h.dim + h.nLayers * perLayer + h.dim + h.seqLen * headDim +
    (h.sharedClassifier ? 0 : h.vocabSize * h.dim);
}

/** The Hugging Face config of a llama2.c model (run.c's constants: eps 1e-5, theta 10000). */
export function llama2cConfig(h: Llama2cHeader): DecoderConfig {
  const config = llama.parseConfig({
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    hidden_size: h.dim,
    intermediate_size: h.hiddenDim,
    num_hidden_layers: h.nLayers,
    num_attention_heads: h.nHeads,
    num_key_value_heads: h.nKvHeads,
    head_dim: h.dim / h.nHeads,
    vocab_size: h.vocabSize,
    max_position_embeddings: h.seqLen,
    rms_norm_eps: 1e-5,
    rope_theta: 10000,
    tie_word_embeddings: h.sharedClassifier,
    bos_token_id: 1,
    // llama2.c's run.c ends a sample at BOS, the separator of its training stories; EOS (2)
    // is never emitted by the TinyStories checkpoints.
    eos_token_id: [2, 1],
  }, 'llama2.c header');
  // Built in memory: saving writes the family's config.json fields, not this object.
  delete config.source;
  return config;
}

/**
 * Permutes the rows of a q or k projection `[numHeads * headDim, cols]` from llama2.c's RoPE
 * layout (each head rotates rows (2i, 2i+1)) to Hugging Face's (rows (i, i + headDim/2)):
 * within each head, new row `a * headDim/2 + i` is old row `2i + a` (a in {0, 1}). This is
 * the permutation of `transformers`' `convert_llama_weights_to_hf.py`.
 * @returns a new array; `w` is not modified.
 */
export function permuteRopeRows(w: Float32Array, numHeads: number, headDim: number, cols: number): Float32Array {
  return permuteRows(w, numHeads, headDim, cols, (i, a) => 2 * i + a, (i, a) => a * (headDim / 2) + i);
}

/** Inverse of {@link permuteRopeRows}: Hugging Face row order back to llama2.c's. */
export function unpermuteRopeRows(w: Float32Array, numHeads: number, headDim: number, cols: number): Float32Array {
  return permuteRows(w, numHeads, headDim, cols, (i, a) => a * (headDim / 2) + i, (i, a) => 2 * i + a);
}

function permuteRows(
  w: Float32Array, numHeads: number, headDim: number, cols: number,
  from: (i: number, a: number) => number, to: (i: number, a: number) => number,
): Float32Array {
  if (w.length !== numHeads * headDim * cols || headDim % 2 !== 0) {
    throw new Error(`permuteRopeRows: ${w.length} values do not form [${numHeads} x ${headDim}, ${cols}] with even head_dim`);
  }
  const out = new Float32Array(w.length);
  for (let h = 0; h < numHeads; h++) {
    const base = h * headDim;
    for (let i = 0; i < headDim / 2; i++) {
      for (let a = 0; a < 2; a++) {
        const src = (base + from(i, a)) * cols;
        out.set(w.subarray(src, src + cols), (base + to(i, a)) * cols);
      }
    }
  }
  return out;
}

/** The checkpoint and tokenizer files of a llama2.c model. */
export interface Llama2cFiles {
  checkpoint: string;
  tokenizer: string;
}

const isTokenizerName = (name: string) => /^tok.*\.bin$/.test(name);

/**
 * Finds the files of a llama2.c model: `p` is a directory holding exactly one checkpoint
 * `*.bin` (any name not starting with `tok`) and one tokenizer `tok*.bin`, or the path of the
 * checkpoint itself (the tokenizer is then the `tok*.bin` next to it).
 * @throws ModelLoadError naming the path when a file is missing or ambiguous.
 */
export function findLlama2cFiles(p: string): Llama2cFiles {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(p);
  } catch {
    throw new ModelLoadError(p, 'no such file or directory');
  }
  const dir = stat.isDirectory() ? p : path.dirname(p);
  const names = fs.readdirSync(dir).filter((n) => n.endsWith('.bin')).sort();
  let checkpoint: string;
  if (stat.isDirectory()) {
    const checkpoints = names.filter((n) => !isTokenizerName(n));
    if (checkpoints.length !== 1) {
      throw new ModelLoadError(dir, checkpoints.length === 0
        ? 'no llama2.c checkpoint (*.bin other than tok*.bin) in this directory'
        : `several llama2.c checkpoints (${checkpoints.join(', ')}); pass the path of one .bin file`);
    }
    checkpoint = path.join(dir, checkpoints[0]!);
  } else {
    checkpoint = p;
  }
  const tokenizers = names.filter((n) => isTokenizerName(n) && n !== path.basename(checkpoint));
  if (tokenizers.length !== 1) {
    throw new ModelLoadError(dir, tokenizers.length === 0
      ? `no llama2.c tokenizer (tok*.bin, e.g. tok512.bin or tokenizer.bin) next to ${path.basename(checkpoint)}`
      : `several llama2.c tokenizers (${tokenizers.join(', ')}); keep one tok*.bin next to the checkpoint`);
  }
  return { checkpoint, tokenizer: path.join(dir, tokenizers[0]!) };
}

/** Options of {@link loadLlama2cModel}. */
export interface LoadOptions {
  /** Model id (default: the directory's name). */
  id?: string;
}

/**
 * Loads a llama2.c model (checkpoint + tok*.bin tokenizer) as Hugging Face-named float32
 * weights with wq/wk rows permuted to the Hugging Face RoPE layout, its config
 * ({@link llama2cConfig}) and its tokenizer (converted to a Hugging Face tokenizer.json, see
 * models/tokenizer/llama2c-vocab.ts). Tied models have no `lm_head.weight`.
 * @param p the model directory, or the path of the checkpoint .bin.
 * @throws ModelLoadError naming the file: missing files, a header with nonsense values, a file
 *   whose size differs from what the header implies (both sizes given), a bad tokenizer.
 */
export function loadLlama2cModel(p: string, options: LoadOptions = {}): LoadedModel {
  const files = findLlama2cFiles(p);
  const file = files.checkpoint;
  const h = readLlama2cHeader(file);
  const expected = HEADER_BYTES + 4 * llama2cFloatCount(h);
  const actual = fs.statSync(file).size;
  if (actual !== expected) {
    throw new ModelLoadError(file, actual < expected
      ? `truncated: the file has ${actual} bytes but its header (dim ${h.dim}, ${h.nLayers} layers, vocab ${h.vocabSize}) implies ${expected}`
      : `the file has ${actual} bytes but its header (dim ${h.dim}, ${h.nLayers} layers, vocab ${h.vocabSize}) implies ${expected}; not a legacy llama2.c checkpoint?`);
  }
  const config = llama2cConfig(h);
  const d = h.dim;
  const headDim = config.head_dim;
  const kvDim = h.nKvHeads * headDim;
  const L = h.nLayers;
  const weights: WeightMap = new Map();
  const fd = fs.openSync(file, 'r');
  try {
    let position = HEADER_BYTES;
    const next = (count: number) => {
      const data = new Float32Array(count);
      readBytesAt(fd, new Uint8Array(data.buffer), position, file);
      position += 4 * count;
      return data;
    };
    /** Reads [L, rows, cols] and stores layer l's slice under name(l). */
    const perLayer = (name: (l: number) => string, rows: number, cols: number, transform?: (w: Float32Array) => Float32Array) => {
      const all = next(L * rows * cols);
      for (let l = 0; l < L; l++) {
        const slice = all.slice(l * rows * cols, (l + 1) * rows * cols);
        weights.set(name(l), { shape: rows === 1 ? [cols] : [rows, cols], data: transform ? transform(slice) : slice });
      }
    };
    const layout = layoutOf(config);
    const at = layout.layers;
    weights.set(layout.embedTokens, { shape: [h.vocabSize, d], data: next(h.vocabSize * d) });
    perLayer((l) => at[l].inputNorm.weight!, 1, d);
    perLayer((l) => at[l].q.weight, d, d, (w) => permuteRopeRows(w, h.nHeads, headDim, d));
    perLayer((l) => at[l].k.weight, kvDim, d, (w) => permuteRopeRows(w, h.nKvHeads, headDim, d));
    perLayer((l) => at[l].v.weight, kvDim, d);
    perLayer((l) => at[l].o.weight, d, d);
    perLayer((l) => at[l].postAttentionNorm!.weight!, 1, d);
    perLayer((l) => at[l].gate!.weight, h.hiddenDim, d);
    perLayer((l) => at[l].down.weight, d, h.hiddenDim);
    perLayer((l) => at[l].up.weight, h.hiddenDim, d);
    weights.set(layout.finalNorm.weight!, { shape: [d], data: next(d) });
    position += 4 * h.seqLen * headDim; // freq_cis_real and freq_cis_imag
    if (!h.sharedClassifier) weights.set(layout.lmHead.weight, { shape: [h.vocabSize, d], data: next(h.vocabSize * d) });
  } finally {
    fs.closeSync(fd);
  }
  const tokenizer = loadLlama2cTokenizer(files.tokenizer, h.vocabSize);
  const dir = path.resolve(path.dirname(file));
  return { id: options.id ?? path.basename(dir), dir, format: 'llama2c', config, weights, tokenizer };
}
