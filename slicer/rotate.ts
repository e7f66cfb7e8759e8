/**
 * The rotate-and-slice verbs of SliceGPT (arXiv 2401.15024 §3.2-3.4; SLICEGPT.md §5), each a
 * float64 product cast to float32 (PROTOCOL.md §5: rotations in float64, stored in the model
 * dtype). Q is an n x n orthogonal matrix, row-major, principal directions in its columns;
 * `Q_k` below means its first k columns. Weights are stored `[out, in]`.
 */
import type { WeightTensor } from '../models/types.js';
import { matmulF64 } from './linalg/index.js';

/** Q[:, :k] as an [n, k] row-major float64 array. */
export function leadingColumns(Q: Float64Array, n: number, k: number): Float64Array {
  if (k > n) throw new RangeError(`cannot keep ${k} of ${n} columns`);
  const out = new Float64Array(n * k);
  for (let i = 0; i < n; i++) for (let j = 0; j < k; j++) out[i * k + j] = Q[i * n + j];
  return out;
}

/**
 * Elements of the float64 copy of a row block in {@link rowsTimes} (32 MiB): the products of a
 * 128256 x 3072 embedding would otherwise need ~6 GB of float64 temporaries at once.
 */
export const ROW_BLOCK_ELEMENTS = 1 << 22;

/**
 * (X Qk) for X [rows, n] float32 and Qk [n, k] float64, computed in float64 one block of rows
 * at a time (rows are independent) and stored as float32 [rows, k].
 */
async function rowsTimes(x: Float32Array, rows: number, n: number, Qk: Float64Array, k: number): Promise<Float32Array> {
  const out = new Float32Array(rows * k);
  const block = Math.max(1, Math.floor(ROW_BLOCK_ELEMENTS / Math.max(1, n)));
  for (let r = 0; r < rows; r += block) {
    const m = Math.min(block, rows - r);
    const y = await matmulF64(Float64Array.from(x.subarray(r * n, (r + m) * n)), [m, n], Qk, [n, k]);
    out.set(y, r * k);
  }
  return out;
}

/**
 * A layer that READS the residual: W <- (W Q)[:, :k] (the rotated and sliced input side),
 * in float64 by blocks of rows (memory: the float32 result plus ~32 MiB).
 * @param w [out, n]. @returns [out, k].
 */
export async function rotateReader(w: WeightTensor, Q: Float64Array, n: number, k: number): Promise<WeightTensor> {
  const [out, inn] = w.shape;
  if (inn !== n) throw new RangeError(`rotateReader: weight reads ${inn} columns, Q is ${n} x ${n}`);
  return { shape: [out, k], data: await rowsTimes(w.data, out, n, leadingColumns(Q, n, k), k) };
}

/**
 * A layer that WRITES the residual: W <- (Q^T W)[:k, :] (rows of the output side).
 * @param w [n, in]. @returns [k, in].
 */
export async function rotateWriter(w: WeightTensor, Q: Float64Array, n: number, k: number): Promise<WeightTensor> {
  const [out, inn] = w.shape;
  if (out !== n) throw new RangeError(`rotateWriter: weight writes ${out} rows, Q is ${n} x ${n}`);
  const y = await matmulF64(leadingColumns(Q, n, k), [n, k], Float64Array.from(w.data), [n, inn], { transA: true });
  return { shape: [k, inn], data: Float32Array.from(y) };
}

/**
 * The bias of a layer that WRITES the residual: b <- (b Q)[:k] (rotated like the rows of
 * {@link rotateWriter}). @param b [n]. @returns [k].
 */
export async function rotateWriterBias(b: WeightTensor, Q: Float64Array, n: number, k: number): Promise<WeightTensor> {
  const data = b.data;
  if (data.length !== n) throw new RangeError(`rotateWriterBias: bias has ${data.length} entries, Q is ${n} x ${n}`);
  const y = await matmulF64(Float64Array.from(data), [1, n], leadingColumns(Q, n, k), [n, k]);
  return { shape: [k], data: Float32Array.from(y) };
}

/**
 * The shortcut of a residual connection between two bases: S = Qa[:, :kIn]^T Qb[:, :kOut]
 * (SliceGPT §3.4), stored [kIn, kOut] so that the residual becomes `x @ S`.
 */
export async function shortcutMatrix(Qa: Float64Array, kIn: number, Qb: Float64Array, kOut: number, n: number): Promise<WeightTensor> {
  const y = await matmulF64(leadingColumns(Qa, n, kIn), [n, kIn], leadingColumns(Qb, n, kOut), [n, kOut], { transA: true });
  return { shape: [kIn, kOut], data: Float32Array.from(y) };
}

/**
 * Q[:, :k]^T as a shortcut [k, n]: carries a stream held in the first k principal
 * coordinates back to the original basis (used while calibrating, PROTOCOL.md §5.3).
 */
export function backToOriginal(Q: Float64Array, n: number, k: number): WeightTensor {
  const data = new Float32Array(k * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < k; j++) data[j * n + i] = Q[i * n + j];
  return { shape: [k, n], data };
}

/**
 * A signal in the original basis projected onto the first k principal directions:
 * (X Q)[:, :k], in float64 by blocks of rows. @param x [tokens, n] float32.
 * @returns [tokens, k] float32.
 */
export async function projectSignal(x: Float32Array, tokens: number, Q: Float64Array, n: number, k: number): Promise<Float32Array> {
  if (x.length !== tokens * n) throw new RangeError(`projectSignal: ${x.length} values for [${tokens}, ${n}]`);
  return rowsTimes(x, tokens, n, leadingColumns(Q, n, k), k);
}
