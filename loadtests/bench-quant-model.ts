/**
 * Do SliceGPT-rotated weights quantize better or worse than dense ones? Part of
 * `npm run bench:quant` (bench-quant.ts), on a real trained model (stories260K by default).
 *
 * Four models with the same function (up to slicing): `dense` (the checkpoint's weights,
 * RMSNorm scales separate, as served dense), `dense-fused` (norm scales folded into the
 * readers, SliceGPT §3.1), `rotated` (sparsity 0: every residual reader/writer in its PCA
 * basis) and `sliced` (sparsity 0.25 by default). For each linear layer and quantization
 * choice:
 * - weight error ||W^ - W||_F / ||W||_F;
 * - output error ||Y - X W^T||_F / ||X W^T||_F with X the layer's REAL inputs on calibration
 *   tokens (the residual signals the slicer records, RMS-normalised as the model does; the
 *   MLP activations for down_proj) and Y from onnxruntime's MatMulNBits (accuracy_level 0 and
 *   4), against a float64 reference with the unquantized weights. o_proj has weight error only
 *   (its input, the attention context, is not recorded);
 * - perplexity (PROTOCOL.md: 64 validation windows of 256 tokens) of the whole model with its
 *   weights replaced by the dequantized ones: what MatMulNBits computes at accuracy_level 0.
 */
import fs from 'node:fs';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { loadModel } from '../models/load.js';
import { layoutOf } from '../models/registry.js';
import type { DecoderConfig } from '../models/config.js';
import { OnnxGraph } from '../models/onnx/builder.js';
import { addMatMulNBits, dequantizeBlockwise, QUANT_PRESETS, quantizeBlockwise, type AccuracyLevel, type BlockQuantOptions } from '../models/quant/index.js';
import { buildTokenStream, cutWindows } from '../models/tokenizer/index.js';
import { type LoadedModel, type WeightTensor } from '../models/types.js';
import { perplexity } from '../runtime/perplexity.js';
import { DecoderSession } from '../runtime/decoder-session.js';
import { readCalibration, slicedWidth } from '../slicer/index.js';
import { seededNormals } from '../slicer/linalg/index.js';
import { relError } from './bench-quant-ops.js';
import { pcaBasis, type BasisFn } from '../slicer/driver.js';
import { fuseNorms } from '../slicer/fusion.js';

/** The repository's calibration and evaluation texts (cli/options.ts has the same defaults; loadtests may not import cli/). */
const DEFAULT_CALIBRATION_FILE = 'data/tinystories-train-sample.txt';
const DEFAULT_EVAL_FILE = 'data/tinystories-valid-sample.txt';
import { rotateAndSliceSequential } from '../slicer/sequential.js';

/** The bundled calibration and evaluation texts (the CLI's defaults), from the repository root. */
const DATA_DIR = path.join(__dirname, '..', '..', 'data');
const CALIBRATION_FILE = path.join(DATA_DIR, 'tinystories-train-sample.txt');
const EVAL_FILE = path.join(DATA_DIR, 'tinystories-valid-sample.txt');

export interface ModelBenchOptions {
  modelDir: string;
  sparsity: number;
  configs: BlockQuantOptions[];
  /** Configs for which the head / shortcuts / embedding scopes are also evaluated. */
  scopeConfigs: BlockQuantOptions[];
  /** Calibration tokens used for output errors (every k-th of the calibration set). */
  tokens: number;
  /** Calibration windows for slicing (default PROTOCOL.md's 128). */
  calWindows?: number;
  /** Evaluate perplexity (meaningless on random-weight synth models, and slow on big ones). */
  perplexity: boolean;
  /** Seeds of the random residual rotations tried on top of the PCA basis. */
  rotationSeeds: number[];
  log: (s: string) => void;
}

/** Per layer type, one model, one config: mean over layers. */
export interface LayerErrorRow {
  model: string;
  config: string;
  layer: string;
  weightError: number;
  /** accuracy_level 0 and 4 output errors (NaN for o_proj). */
  outputError0: number;
  outputError4: number;
}

export interface PplRow {
  model: string;
  config: string;
  scope: string;
  perplexity: number;
}

/**
 * Tensor names of a sequential, gated-MLP, RMSNorm model (the families this benchmark's
 * reader-input model covers), read from the registry's layout.
 * @throws Error for another block kind.
 */
function namesOf(config: DecoderConfig) {
  if (config.block !== 'sequential' || !config.gated_mlp || config.norm !== 'rms') {
    throw new Error('bench:quant model part: only sequential blocks with a gated MLP and RMSNorm are modelled (e.g. stories260K, bench-110m)');
  }
  const lay = layoutOf(config);
  const at = (l: number) => lay.layers[l];
  return {
    embed: lay.embedTokens,
    finalNorm: lay.finalNorm.weight ?? '',
    lmHead: lay.lmHead.weight,
    q: (l: number) => at(l).q.weight, k: (l: number) => at(l).k.weight, v: (l: number) => at(l).v.weight,
    o: (l: number) => at(l).o.weight, gate: (l: number) => at(l).gate!.weight, up: (l: number) => at(l).up.weight,
    down: (l: number) => at(l).down.weight,
    attnNorm: (l: number) => at(l).inputNorm.weight ?? '', mlpNorm: (l: number) => at(l).postAttentionNorm?.weight ?? '',
    attnShortcut: (l: number) => at(l).attnShortcut, mlpShortcut: (l: number) => at(l).mlpShortcut ?? '',
  };
}

export const configName = (c: BlockQuantOptions) => `int${c.bits} b${c.blockSize} ${c.symmetric ? 'sym' : 'asym'}`;

interface Recorded {
  signal: Float32Array;
  Q: Float64Array;
}

/** pcaBasis that also keeps each position's signal and basis. */
function recordingBasis(store: Map<string, Recorded>): BasisFn {
  const pca = pcaBasis(0.01);
  return async (signal, tokens, n, position) => {
    const Q = await pca(signal, tokens, n, position);
    store.set(position, { signal: Float32Array.from(signal), Q });
    return Q;
  };
}

/** Every `stride`-th row of X [T, d] projected on Q[:, :width], RMS-normalised with divisor d, times alpha. */
function readerInput(rec: Recorded, d: number, width: number, stride: number, eps: number, alpha?: Float32Array, identity = false): { x: Float32Array; rows: number } {
  const T = rec.signal.length / d;
  const rows = Math.floor(T / stride);
  const x = new Float32Array(rows * width);
  const v = new Float64Array(width);
  for (let r = 0; r < rows; r++) {
    const src = rec.signal.subarray(r * stride * d, (r * stride + 1) * d);
    let ss = 0;
    for (let j = 0; j < width; j++) {
      let s = 0;
      if (identity) s = src[j];
      else for (let i = 0; i < d; i++) s += src[i] * rec.Q[i * d + j];
      v[j] = s;
      ss += s * s;
    }
    const inv = 1 / Math.sqrt(ss / d + eps);
    for (let j = 0; j < width; j++) x[r * width + j] = v[j] * inv * (alpha ? alpha[j] : 1);
  }
  return { x, rows };
}

/** Y = X W^T, float64 accumulation, W [N, K]. */
function matmulT(x: Float32Array, rows: number, w: WeightTensor): Float64Array {
  const [N, K] = w.shape;
  const y = new Float64Array(rows * N);
  for (let r = 0; r < rows; r++) {
    for (let n = 0; n < N; n++) {
      let s = 0;
      for (let k = 0; k < K; k++) s += x[r * K + k] * w.data[n * K + k];
      y[r * N + n] = s;
    }
  }
  return y;
}

/** silu(gate) * up: the input of down_proj. */
function mlpActivation(x: Float32Array, rows: number, gate: WeightTensor, up: WeightTensor): Float32Array {
  const g = matmulT(x, rows, gate);
  const u = matmulT(x, rows, up);
  return Float32Array.from(g, (v, i) => (v / (1 + Math.exp(-v))) * u[i]);
}


interface Reader {
  layer: string;
  weight: string;
  x?: Float32Array;
  rows?: number;
  ref?: Float64Array;
}

/** The quantized layers of a model and their real inputs. */
function readersOf(model: LoadedModel, kind: 'dense' | 'fused' | 'rotated', rec: Map<string, Recorded>, stride: number): Reader[] {
  const { config, weights } = model;
  const W = namesOf(config);
  const d = config.hidden_size;
  const L = config.num_hidden_layers;
  const eps = config.norm_eps;
  const get = (name: string) => weights.get(name)!;
  const out: Reader[] = [];
  const input = (position: string, width: number, norm?: string) =>
    readerInput(rec.get(position)!, d, width, stride, eps, kind === 'dense' && norm ? weights.get(norm)?.data : undefined, kind !== 'rotated');
  for (let l = 0; l < L; l++) {
    const attnPos = l === 0 ? 'embedding' : `layer ${l - 1} output`;
    const a = input(attnPos, get(W.q(l)).shape[1], W.attnNorm(l));
    for (const [layer, name] of [['q_proj', W.q(l)], ['k_proj', W.k(l)], ['v_proj', W.v(l)]] as const) out.push({ layer, weight: name, ...a, ref: matmulT(a.x, a.rows, get(name)) });
    out.push({ layer: 'o_proj', weight: W.o(l) });
    const m = input(`layer ${l} mlp input`, get(W.gate(l)).shape[1], W.mlpNorm(l));
    for (const [layer, name] of [['gate_proj', W.gate(l)], ['up_proj', W.up(l)]] as const) out.push({ layer, weight: name, ...m, ref: matmulT(m.x, m.rows, get(name)) });
    const act = mlpActivation(m.x, m.rows, get(W.gate(l)), get(W.up(l)));
    out.push({ layer: 'down_proj', weight: W.down(l), x: act, rows: m.rows, ref: matmulT(act, m.rows, get(W.down(l))) });
  }
  const headName = weights.has(W.lmHead) ? W.lmHead : W.embed;
  const h = input(`layer ${L - 1} output`, get(headName).shape[1], W.finalNorm);
  out.push({ layer: 'lm_head', weight: headName, ...h, ref: matmulT(h.x, h.rows, get(headName)) });
  return out;
}

/** Output of every reader through MatMulNBits, one session holding all of them. */
async function opOutputs(readers: Reader[], weights: Map<string, WeightTensor>, config: BlockQuantOptions, accuracyLevel: AccuracyLevel): Promise<Map<number, Float32Array>> {
  const g = new OnnxGraph('readers');
  const feeds: Record<string, ort.Tensor> = {};
  const names: Array<[number, string]> = [];
  readers.forEach((r, i) => {
    if (!r.x) return;
    const w = weights.get(r.weight)!;
    const x = g.input(`x${i}`, 'float32', [r.rows!, w.shape[1]]);
    feeds[x] = new ort.Tensor('float32', r.x, [r.rows!, w.shape[1]]);
    const y = addMatMulNBits(g, x, quantizeBlockwise(w, config), { accuracyLevel, output: `y${i}` });
    g.output(y, 'float32', [r.rows!, w.shape[0]]);
    names.push([i, y]);
  });
  const built = g.build();
  const s = await ort.InferenceSession.create(built.model, { externalData: [{ path: built.externalDataPath, data: built.externalData }], intraOpNumThreads: 2 } as ort.InferenceSession.SessionOptions);
  try {
    const out = await s.run(feeds);
    return new Map(names.map(([i, y]) => [i, out[y].data as Float32Array]));
  } finally {
    await s.release();
  }
}

function fakeQuant(w: WeightTensor, c: BlockQuantOptions, transposed = false): WeightTensor {
  if (!transposed) return dequantizeBlockwise(quantizeBlockwise(w, c));
  // Stored [in, out] (shortcut matrices): quantize the [out, in] transpose, as a MatMulNBits would read it.
  const [a, b] = w.shape;
  const t = new Float32Array(a * b);
  for (let i = 0; i < a; i++) for (let j = 0; j < b; j++) t[j * a + i] = w.data[i * b + j];
  const d = dequantizeBlockwise(quantizeBlockwise({ shape: [b, a], data: t }, c)).data;
  const back = new Float32Array(a * b);
  for (let i = 0; i < a; i++) for (let j = 0; j < b; j++) back[i * b + j] = d[j * a + i];
  return { shape: [a, b], data: back };
}

/** Scopes: which tensors are replaced by their dequantized version. */
const SCOPES = ['linears', 'linears+shortcuts', 'linears+shortcuts+head', 'all (+embedding)', 'linears; int8 (b128 asym) shortcuts+head'] as const;

function quantizedModel(model: LoadedModel, c: BlockQuantOptions, scope: (typeof SCOPES)[number]): LoadedModel {
  const weights = new Map(model.weights);
  const W = namesOf(model.config);
  const L = model.config.num_hidden_layers;
  const c8 = QUANT_PRESETS.int8.linear;
  for (let l = 0; l < L; l++) {
    for (const name of [W.q(l), W.k(l), W.v(l), W.o(l), W.gate(l), W.up(l), W.down(l)]) weights.set(name, fakeQuant(weights.get(name)!, c));
    if (scope !== 'linears') {
      for (const name of [W.attnShortcut(l), W.mlpShortcut(l)]) if (weights.has(name)) weights.set(name, fakeQuant(weights.get(name)!, scope === 'linears; int8 (b128 asym) shortcuts+head' ? c8 : c, true));
    }
  }
  if (scope === 'linears+shortcuts+head' || scope === 'all (+embedding)') weights.set(W.lmHead, fakeQuant(weights.get(W.lmHead)!, c));
  if (scope === 'linears; int8 (b128 asym) shortcuts+head') weights.set(W.lmHead, fakeQuant(weights.get(W.lmHead)!, c8));
  if (scope === 'all (+embedding)') weights.set(W.embed, fakeQuant(weights.get(W.embed)!, c));
  return { ...model, weights };
}

/** A seeded n x n orthogonal matrix (modified Gram-Schmidt on Gaussian columns), row-major. */
function randomOrthogonal(n: number, seed: number): Float64Array {
  const g = seededNormals(n * n, seed);
  const cols: Float64Array[] = [];
  for (let j = 0; j < n; j++) {
    const v = Float64Array.from({ length: n }, (_, i) => g[i * n + j]);
    for (const c of cols) {
      let dot = 0;
      for (let i = 0; i < n; i++) dot += v[i] * c[i];
      for (let i = 0; i < n; i++) v[i] -= dot * c[i];
    }
    let norm = 0;
    for (let i = 0; i < n; i++) norm += v[i] * v[i];
    norm = Math.sqrt(norm);
    for (let i = 0; i < n; i++) v[i] /= norm;
    cols.push(v);
  }
  const q = new Float64Array(n * n);
  for (let j = 0; j < n; j++) for (let i = 0; i < n; i++) q[i * n + j] = cols[j][i];
  return q;
}

/** op(A) B for A [.., ..] and B row-major, float64 accumulate, float32 result. */
function product(a: ArrayLike<number>, aShape: [number, number], transA: boolean, b: ArrayLike<number>, bCols: number): Float32Array {
  const rows = transA ? aShape[1] : aShape[0];
  const inner = transA ? aShape[0] : aShape[1];
  const out = new Float32Array(rows * bCols);
  const acc = new Float64Array(bCols);
  for (let i = 0; i < rows; i++) {
    acc.fill(0);
    for (let k = 0; k < inner; k++) {
      const av = transA ? a[k * aShape[1] + i] : a[i * inner + k];
      if (av === 0) continue;
      for (let j = 0; j < bCols; j++) acc[j] += av * b[k * bCols + j];
    }
    out.set(acc, i * bCols);
  }
  return out;
}

/**
 * The same model in a randomly rotated residual basis (QuaRot's incoherence, on top of SliceGPT's
 * PCA basis): every residual position of width n gets one seeded orthogonal H_n; readers
 * W <- W H, writers W <- H^T W, shortcuts S <- H_in^T S H_out, embedding E <- E H. Weightless
 * (fused) RMSNorms are invariant. Needs a fused model (slicer/fusion.ts fuseNorms).
 */
function withRandomResidualRotation(model: LoadedModel, seed: number): LoadedModel {
  const weights = new Map(model.weights);
  const W = namesOf(model.config);
  const H = new Map<number, Float64Array>();
  const h = (n: number) => H.get(n) ?? (H.set(n, randomOrthogonal(n, seed + n)), H.get(n)!);
  const get = (name: string) => weights.get(name)!;
  const reader = (name: string) => {
    const w = get(name);
    weights.set(name, { shape: [...w.shape], data: product(w.data, [w.shape[0], w.shape[1]], false, h(w.shape[1]), w.shape[1]) });
  };
  const writer = (name: string) => {
    const w = get(name);
    weights.set(name, { shape: [...w.shape], data: product(h(w.shape[0]), [w.shape[0], w.shape[0]], true, w.data, w.shape[1]) });
  };
  const shortcut = (name: string) => {
    const sc = weights.get(name);
    if (!sc) return;
    const [i, o] = sc.shape;
    const left = product(h(i), [i, i], true, sc.data, o);
    weights.set(name, { shape: [i, o], data: product(left, [i, o], false, h(o), o) });
  };
  for (let l = 0; l < model.config.num_hidden_layers; l++) {
    [W.q(l), W.k(l), W.v(l), W.gate(l), W.up(l)].forEach(reader);
    [W.o(l), W.down(l)].forEach(writer);
    [W.attnShortcut(l), W.mlpShortcut(l)].forEach(shortcut);
  }
  reader(W.embed);
  reader(W.lmHead);
  return { ...model, weights };
}

async function evalPpl(model: LoadedModel, windows: number[][]): Promise<number> {
  const session = await DecoderSession.create(model, { logits: 'all', threads: 2 });
  try {
    return (await perplexity(session, windows, 8)).perplexity;
  } finally {
    await session.release();
  }
}

/** Runs the whole comparison; returns per-layer-type errors and perplexities. */
export async function measureModels(o: ModelBenchOptions): Promise<{ layers: LayerErrorRow[]; ppl: PplRow[]; widths: Record<string, number> }> {
  const loaded = loadModel(o.modelDir);
  const W = namesOf(loaded.config);
  // Untie the head (a llama2.c checkpoint shares it with the embedding) so each can be quantized alone.
  const denseWeights = new Map(loaded.weights);
  if (!denseWeights.has(W.lmHead)) denseWeights.set(W.lmHead, { shape: [...denseWeights.get(W.embed)!.shape], data: Float32Array.from(denseWeights.get(W.embed)!.data) });
  const dense: LoadedModel = { ...loaded, weights: denseWeights, config: { ...loaded.config, tie_word_embeddings: false } };
  const d = dense.config.hidden_size;
  const calibration = readCalibration(dense, { sparsity: o.sparsity, calibrationFile: CALIBRATION_FILE, calWindows: o.calWindows });
  const fused = fuseNorms(dense);
  const recRot = new Map<string, Recorded>();
  o.log('rotating (sparsity 0) with recorded calibration signals ...');
  const rotated = (await rotateAndSliceSequential(fused, { width: d, sliceHead: false, windows: calibration.windows, basis: recordingBasis(recRot) })).model;
  const width = slicedWidth(o.sparsity, d, 8);
  const recSliced = new Map<string, Recorded>();
  o.log(`slicing (sparsity ${o.sparsity}, d' = ${width}) ...`);
  const sliced = (await rotateAndSliceSequential(fused, { width, sliceHead: false, windows: calibration.windows, basis: recordingBasis(recSliced) })).model;
  const models: Array<{ name: string; model: LoadedModel; kind: 'dense' | 'fused' | 'rotated'; rec: Map<string, Recorded> }> = [
    { name: 'dense', model: dense, kind: 'dense', rec: recRot },
    { name: 'dense-fused', model: fused, kind: 'fused', rec: recRot },
    { name: 'rotated (sparsity 0)', model: rotated, kind: 'rotated', rec: recRot },
    { name: `sliced ${o.sparsity}`, model: sliced, kind: 'rotated', rec: recSliced },
  ];
  const stride = Math.max(1, Math.floor(calibration.windows.length * calibration.windows[0].length / o.tokens));
  const layers: LayerErrorRow[] = [];
  for (const m of models) {
    const readers = readersOf(m.model, m.kind, m.rec, stride);
    for (const c of o.configs) {
      const y0 = await opOutputs(readers, m.model.weights, c, 0);
      const y4 = await opOutputs(readers, m.model.weights, c, 4);
      const byType = new Map<string, { w: number[]; e0: number[]; e4: number[] }>();
      readers.forEach((r, i) => {
        const w = m.model.weights.get(r.weight)!;
        const acc = byType.get(r.layer) ?? { w: [], e0: [], e4: [] };
        acc.w.push(relError(dequantizeBlockwise(quantizeBlockwise(w, c)).data, w.data));
        if (r.ref) {
          acc.e0.push(relError(y0.get(i)!, r.ref));
          acc.e4.push(relError(y4.get(i)!, r.ref));
        }
        byType.set(r.layer, acc);
      });
      const mean = (xs: number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN);
      for (const [layer, acc] of byType) layers.push({ model: m.name, config: configName(c), layer, weightError: mean(acc.w), outputError0: mean(acc.e0), outputError4: mean(acc.e4) });
    }
    o.log(`  errors: ${m.name} done`);
  }
  const windows = cutWindows(Array.from(buildTokenStream(fs.readFileSync(EVAL_FILE), dense.tokenizer).tokens), 256, 64);
  const ppl: PplRow[] = [];
  for (const m of o.perplexity ? models : []) {
    if (m.kind === 'fused') continue; // same function as dense
    ppl.push({ model: m.name, config: 'f32', scope: '-', perplexity: await evalPpl(m.model, windows) });
    for (const c of o.configs) ppl.push({ model: m.name, config: configName(c), scope: 'linears', perplexity: await evalPpl(quantizedModel(m.model, c, 'linears'), windows) });
    for (const c of o.scopeConfigs) {
      for (const scope of SCOPES.slice(1)) {
        if (scope === 'linears+shortcuts' && m.kind === 'dense') continue;
        if (scope === 'linears; int8 (b128 asym) shortcuts+head' && c.bits === 8) continue;
        ppl.push({ model: m.name, config: configName(c), scope, perplexity: await evalPpl(quantizedModel(m.model, c, scope), windows) });
      }
    }
    o.log(`  perplexity: ${m.name} done`);
  }
  // Does a random rotation on top (QuaRot's incoherence processing) undo what the PCA basis costs?
  for (const [m, seed] of (o.perplexity ? models.filter((x) => x.kind !== 'dense') : []).flatMap((x) => o.rotationSeeds.map((sd) => [x, sd] as const))) {
    const name = `${m.name} + random rotation (seed ${seed})`;
    const model = withRandomResidualRotation(m.model, seed);
    ppl.push({ model: name, config: 'f32', scope: '-', perplexity: await evalPpl(model, windows) });
    for (const c of o.configs) ppl.push({ model: name, config: configName(c), scope: 'linears', perplexity: await evalPpl(quantizedModel(model, c, 'linears'), windows) });
    for (const c of o.scopeConfigs.filter((x) => x.bits === 4)) ppl.push({ model: name, config: configName(c), scope: 'linears; int8 (b128 asym) shortcuts+head', perplexity: await evalPpl(quantizedModel(model, c, 'linears; int8 (b128 asym) shortcuts+head'), windows) });
    o.log(`  perplexity: ${name} done`);
  }
  return { layers, ppl, widths: { dense: d, sliced: width } };
}
