/**
 * Op-level speed and accuracy of quantized linear layers on onnxruntime's CPU provider:
 * float32 MatMul vs com.microsoft MatMulNBits (bits x block_size x accuracy_level x
 * symmetric) vs com.microsoft DynamicQuantizeMatMul (per-channel int8), for the linear shapes
 * of real models, at batch 1 (decode) and 16. Part of `npm run bench:quant` (bench-quant.ts).
 *
 * Timing: every session of one (shape, bits) group is alive at once and the runs are
 * interleaved round-robin, so load from other processes hits all variants alike; the figure is
 * the median of the rounds (ms per call, `session.run` overhead included). Spinning is off
 * (many sessions share the cores). Accuracy: relative Frobenius error of Y against a float64
 * matmul with the UNQUANTIZED weights, Gaussian A and N(0, 0.02) weights with 1 % outliers x8.
 */
import * as ort from 'onnxruntime-node';
import { OnnxGraph } from '../models/onnx/builder.js';
import { addDynamicQuantizeMatMul, addMatMulNBits, quantizePerChannelInt8, quantizeBlockwise, type AccuracyLevel, type QuantBits } from '../models/quant/index.js';
import type { WeightTensor } from '../models/types.js';
import { seededNormals } from '../slicer/linalg/index.js';

/** One linear shape: N outputs, K inputs, with a label such as "110m q/o". */
export interface LinearShape {
  label: string;
  N: number;
  K: number;
}

/** The variant of a linear layer being measured. */
export interface OpVariant {
  /** 'f32' | 'nbits' | 'dqmm'. */
  kind: 'f32' | 'nbits' | 'dqmm';
  bits?: QuantBits;
  blockSize?: number;
  accuracyLevel?: AccuracyLevel;
  symmetric?: boolean;
}

export interface OpResult extends OpVariant {
  shape: string;
  N: number;
  K: number;
  batch: number;
  /** Median ms per call over the rounds. */
  ms: number;
  /** f32 ms / this ms, same shape and batch, same group. */
  speedup: number;
  /** ||Y - A W^T||_F / ||A W^T||_F with the unquantized W (float64 reference). */
  relError: number;
}

export function variantName(v: OpVariant): string {
  if (v.kind === 'f32') return 'f32 MatMul';
  if (v.kind === 'dqmm') return 'int8 DynamicQuantizeMatMul';
  return `int${v.bits} b${v.blockSize} acc${v.accuracyLevel} ${v.symmetric ? 'sym' : 'asym'}`;
}

function outlierWeights(N: number, K: number, seed: number): WeightTensor {
  const g = seededNormals(N * K, seed);
  const data = new Float32Array(N * K);
  for (let i = 0; i < data.length; i++) data[i] = 0.02 * g[i] * (i % 101 === 17 ? 8 : 1);
  return { shape: [N, K], data };
}

function buildSession(w: WeightTensor, v: OpVariant, threads: number): Promise<ort.InferenceSession> {
  const [N, K] = w.shape;
  const g = new OnnxGraph('op');
  const x = g.input('x', 'float32', ['batch', K]);
  let y: string;
  if (v.kind === 'f32') {
    const t = new Float32Array(K * N);
    for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) t[k * N + n] = w.data[n * K + k];
    y = g.op('MatMul', [x, g.initializer('w_t', 'float32', [K, N], t)], {}, { output: 'y' });
  } else if (v.kind === 'dqmm') {
    y = addDynamicQuantizeMatMul(g, x, quantizePerChannelInt8(w), { output: 'y' });
  } else {
    const q = quantizeBlockwise(w, { bits: v.bits!, blockSize: v.blockSize!, symmetric: v.symmetric! });
    y = addMatMulNBits(g, x, q, { accuracyLevel: v.accuracyLevel, output: 'y' });
  }
  g.output(y, 'float32', ['batch', N]);
  const built = g.build();
  return ort.InferenceSession.create(built.model, {
    externalData: [{ path: built.externalDataPath, data: built.externalData }],
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    graphOptimizationLevel: 'all',
    extra: { session: { intra_op: { allow_spinning: '0' } } },
  } as ort.InferenceSession.SessionOptions);
}

/** Y = A W^T in float64 for A [M, K]. */
function referenceOutput(a: Float32Array, M: number, w: WeightTensor): Float64Array {
  const [N, K] = w.shape;
  const y = new Float64Array(M * N);
  for (let n = 0; n < N; n++) {
    const row = w.data.subarray(n * K, (n + 1) * K);
    for (let m = 0; m < M; m++) {
      let s = 0;
      const off = m * K;
      for (let k = 0; k < K; k++) s += a[off + k] * row[k];
      y[m * N + n] = s;
    }
  }
  return y;
}

/** ||y - ref||_F / ||ref||_F. */
export function relError(y: ArrayLike<number>, ref: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < ref.length; i++) {
    num += (y[i] - ref[i]) ** 2;
    den += ref[i] ** 2;
  }
  return Math.sqrt(num / den);
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

/**
 * Measures every variant of `variants` (plus the f32 baseline) on `shape` at `batches`.
 * @param rounds interleaved timing rounds (after 2 warm-up calls per session and batch).
 */
export async function measureShape(shape: LinearShape, variants: OpVariant[], batches: number[], rounds: number, threads: number, log: (s: string) => void): Promise<OpResult[]> {
  const w = outlierWeights(shape.N, shape.K, shape.N * 31 + shape.K);
  const all: OpVariant[] = [{ kind: 'f32' }, ...variants];
  const sessions: ort.InferenceSession[] = [];
  try {
    for (const v of all) sessions.push(await buildSession(w, v, threads));
    const inputs = new Map<number, Float32Array>(batches.map((M) => [M, Float32Array.from(seededNormals(M * shape.K, M * 7 + shape.K))]));
    const feeds = new Map<number, Record<string, ort.Tensor>>(batches.map((M) => [M, { x: new ort.Tensor('float32', inputs.get(M)!, [M, shape.K]) }]));
    const times = all.map(() => batches.map(() => [] as number[]));
    const outputs: Float32Array[][] = all.map(() => batches.map(() => new Float32Array(0)));
    for (let r = -2; r < rounds; r++) {
      for (let i = 0; i < all.length; i++) {
        for (let b = 0; b < batches.length; b++) {
          const t0 = performance.now();
          const out = await sessions[i].run(feeds.get(batches[b])!);
          const ms = performance.now() - t0;
          if (r >= 0) times[i][b].push(ms);
          else outputs[i][b] = out.y.data as Float32Array;
        }
      }
    }
    const errors = all.map(() => batches.map(() => NaN));
    for (let b = 0; b < batches.length; b++) {
      const ref = referenceOutput(inputs.get(batches[b])!, batches[b], w);
      for (let i = 0; i < all.length; i++) errors[i][b] = relError(outputs[i][b], ref);
    }
    const results: OpResult[] = [];
    for (let b = 0; b < batches.length; b++) {
      const base = median(times[0][b]);
      for (let i = 0; i < all.length; i++) {
        const ms = median(times[i][b]);
        results.push({ ...all[i], shape: shape.label, N: shape.N, K: shape.K, batch: batches[b], ms, speedup: base / ms, relError: errors[i][b] });
      }
      const best = results.filter((r) => r.batch === batches[b]).sort((x, y) => x.ms - y.ms)[0];
      log(`  ${shape.label} [${shape.N}x${shape.K}] batch ${batches[b]}: f32 ${base.toFixed(3)} ms, fastest ${variantName(best)} ${best.ms.toFixed(3)} ms`);
    }
    return results;
  } finally {
    await Promise.allSettled(sessions.map((s) => s.release()));
  }
}
