/**
 * Float64 matrix products: onnxruntime's CPU Gemm for double (2048^3 in ~0.3-0.65 s on 2
 * cores) and a plain JS loop for products so small that a session run (~12 us) costs more.
 */
import * as ort from 'onnxruntime-node';
import { gemmF64Model } from './onnx-graphs.js';
import { linalgSession } from './sessions.js';

/** A 2-D shape [rows, columns] of a row-major array as stored. */
export type Shape2 = readonly [number, number];

/** Options of {@link matmulF64}. */
export interface MatmulOptions {
  /** Multiply by A^T instead of A (A is stored [k, m]). */
  transA?: boolean;
  /** Multiply by B^T instead of B (B is stored [n, k]). */
  transB?: boolean;
}

/**
 * Products with at most this many multiply-adds (m*k*n) run in JS: measured crossover on
 * this project's machines, where a 16x16x16 product took 14 us in JS and 12 us through a
 * cached onnxruntime session (docs/linear-algebra.md).
 */
export const JS_MATMUL_MAX_MACS = 4096;

/** [m, k, n] of op(A) op(B), after validating the arrays against their shapes. */
export function productDims(
  a: Float64Array,
  aShape: Shape2,
  b: Float64Array,
  bShape: Shape2,
  options: MatmulOptions = {},
): [number, number, number] {
  for (const [name, arr, shape] of [
    ['a', a, aShape],
    ['b', b, bShape],
  ] as const) {
    if (shape.length !== 2 || !shape.every((s) => Number.isInteger(s) && s >= 0)) {
      throw new RangeError(`matmulF64: ${name}Shape must be two non-negative integers, got [${shape.join(', ')}]`);
    }
    if (arr.length !== shape[0] * shape[1]) {
      throw new RangeError(`matmulF64: ${name} has ${arr.length} entries, shape [${shape.join(', ')}] needs ${shape[0] * shape[1]}`);
    }
  }
  const [m, k] = options.transA ? [aShape[1], aShape[0]] : [aShape[0], aShape[1]];
  const [kb, n] = options.transB ? [bShape[1], bShape[0]] : [bShape[0], bShape[1]];
  if (k !== kb) {
    throw new RangeError(
      `matmulF64: inner dimensions differ: op(A) is [${m}, ${k}], op(B) is [${kb}, ${n}]` +
        ` (transA=${!!options.transA}, transB=${!!options.transB})`,
    );
  }
  return [m, k, n];
}

/**
 * op(A) op(B) with a plain JS loop in float64 (summation over k in increasing order).
 * Same contract as {@link matmulF64}; synchronous. Meant for small products.
 */
export function matmulF64Js(
  a: Float64Array,
  aShape: Shape2,
  b: Float64Array,
  bShape: Shape2,
  options: MatmulOptions = {},
): Float64Array {
  const [m, k, n] = productDims(a, aShape, b, bShape, options);
  const c = new Float64Array(m * n);
  // Element (i, p) of op(A) and (p, j) of op(B) through strides of the stored layouts.
  const [aRow, aCol] = options.transA ? [1, m] : [k, 1];
  const [bRow, bCol] = options.transB ? [1, k] : [n, 1];
  for (let i = 0; i < m; i++) {
    for (let p = 0; p < k; p++) {
      const av = a[i * aRow + p * aCol];
      if (av === 0) continue;
      const cBase = i * n;
      const bBase = p * bRow;
      for (let j = 0; j < n; j++) c[cBase + j] += av * b[bBase + j * bCol];
    }
  }
  return c;
}

/**
 * C = op(A) op(B) in float64, op(X) = X or X^T.
 *
 * @param a - row-major, stored as `aShape` ([m, k], or [k, m] with `transA`).
 * @param aShape - shape of `a` as stored.
 * @param b - row-major, stored as `bShape` ([k, n], or [n, k] with `transB`).
 * @param bShape - shape of `b` as stored.
 * @param options - `transA`, `transB`.
 * @returns C, [m, n] row-major float64. Products of at most {@link JS_MATMUL_MAX_MACS}
 *   multiply-adds run in JS, larger ones through onnxruntime's CPU Gemm (double); results
 *   agree to rounding (summation order differs).
 * @throws RangeError when a length does not match its shape or the inner dimensions differ;
 *   onnxruntime errors as thrown by it.
 */
export async function matmulF64(
  a: Float64Array,
  aShape: Shape2,
  b: Float64Array,
  bShape: Shape2,
  options: MatmulOptions = {},
): Promise<Float64Array> {
  const [m, k, n] = productDims(a, aShape, b, bShape, options);
  if (m * k * n <= JS_MATMUL_MAX_MACS) return matmulF64Js(a, aShape, b, bShape, options);
  const transA = !!options.transA;
  const transB = !!options.transB;
  const session = await linalgSession(`gemm_f64_${+transA}${+transB}`, () => gemmF64Model({ transA, transB }));
  const out = await session.run({
    A: new ort.Tensor('float64', a, [aShape[0], aShape[1]]),
    B: new ort.Tensor('float64', b, [bShape[0], bShape[1]]),
  });
  return out.Y.data as Float64Array;
}
