// Reference implementations for the linear-algebra tests, written independently of slicer/linalg.
import { seededNormals } from '../../slicer/linalg/index.js';

/** Naive C = A B for row-major A [m, k], B [k, n] (the textbook triple loop, sum over k inside). */
export function naiveMatmul(a: ArrayLike<number>, b: ArrayLike<number>, m: number, k: number, n: number): Float64Array {
  const c = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let p = 0; p < k; p++) s += a[i * k + p] * b[p * n + j];
      c[i * n + j] = s;
    }
  }
  return c;
}

/** Row-major transpose of a [rows, cols] array. */
export function transpose(a: ArrayLike<number>, rows: number, cols: number): Float64Array {
  const t = new Float64Array(rows * cols);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) t[j * rows + i] = a[i * cols + j];
  return t;
}

export function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]));
  return m;
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} != ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/** A random n x n orthogonal matrix: the product of n seeded Householder reflections. */
export function randomOrthogonal(n: number, seed: number): Float64Array {
  const q = new Float64Array(n * n);
  for (let i = 0; i < n; i++) q[i * n + i] = 1;
  const g = seededNormals(n * n, seed);
  for (let r = 0; r < n; r++) {
    const v = g.subarray(r * n, (r + 1) * n);
    let vv = 0;
    for (let i = 0; i < n; i++) vv += v[i] * v[i];
    // Q <- Q (I - 2 v v^T / v^T v)
    for (let i = 0; i < n; i++) {
      let qv = 0;
      for (let p = 0; p < n; p++) qv += q[i * n + p] * v[p];
      const f = (2 * qv) / vv;
      for (let p = 0; p < n; p++) q[i * n + p] -= f * v[p];
    }
  }
  return q;
}

/** Q diag(values) Q^T, symmetrised exactly. */
export function fromSpectrum(q: Float64Array, values: ArrayLike<number>, n: number): Float64Array {
  const a = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j <= i; j++) {
      let s = 0;
      for (let p = 0; p < n; p++) s += q[i * n + p] * values[p] * q[j * n + p];
      a[i * n + j] = s;
      a[j * n + i] = s;
    }
  }
  return a;
}

/** A seeded symmetric positive definite matrix X^T X / rows with X [2n, n] standard normal. */
export function randomSpd(n: number, seed: number): Float64Array {
  const rows = 2 * n;
  const x = seededNormals(rows * n, seed);
  const h = naiveMatmul(transpose(x, rows, n), x, n, rows, n);
  for (let i = 0; i < h.length; i++) h[i] /= rows;
  return h;
}

/** max |A V - V diag(values)| and max |V^T V - I|. */
export function eighErrors(a: Float64Array, values: Float64Array, vectors: Float64Array, n: number): { residual: number; orthogonality: number } {
  const av = naiveMatmul(a, vectors, n, n, n);
  let residual = 0;
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) residual = Math.max(residual, Math.abs(av[i * n + j] - vectors[i * n + j] * values[j]));
  const vtv = naiveMatmul(transpose(vectors, n, n), vectors, n, n, n);
  let orthogonality = 0;
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) orthogonality = Math.max(orthogonality, Math.abs(vtv[i * n + j] - (i === j ? 1 : 0)));
  return { residual, orthogonality };
}

/** The projector V[:, cols] V[:, cols]^T onto the span of some columns of an n x n matrix. */
export function projector(v: Float64Array, n: number, cols: number[]): Float64Array {
  const p = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) {
    let s = 0;
    for (const c of cols) s += v[i * n + c] * v[j * n + c];
    p[i * n + j] = s;
  }
  return p;
}
