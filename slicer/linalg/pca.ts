/**
 * PCA of a calibration signal from its uncentred second moment, as SliceGPT computes it
 * (Ashkboos et al. 2024, arXiv 2401.15024, Eq. 8; official `pca_calc`; PROTOCOL.md §5.2).
 */
import { eighSymmetric, type EighBackend, type EighOptions } from './eigh.js';

/** Result of {@link pcaFromMoment}. */
export interface PcaResult {
  /** n eigenvalues of the DAMPED moment, descending (subtract `dampingAdded` for H's own). */
  eigenvalues: Float64Array;
  /** n x n row-major orthogonal matrix; column j (`Q[i*n + j]`) is the j-th principal direction. */
  Q: Float64Array;
  /** The value added to every diagonal entry: damping * mean(diag(H)). */
  dampingAdded: number;
  /** Eigensolver used. */
  backend: EighBackend;
}

/**
 * PROTOCOL §5.2 steps 2-3: copies H, adds `damping * mean(diag(H))` to its diagonal, and
 * returns the eigendecomposition of the result sorted by eigenvalue, descending.
 *
 * @param h - the n x n uncentred second moment `sum_tokens x x^T`, row-major float64,
 *   symmetric (not modified).
 * @param n - number of features (the signal's width).
 * @param damping - relative damping, >= 0 (SliceGPT uses 0.01).
 * @param options - eigensolver choice (see eighSymmetric).
 * @throws RangeError for a negative or non-finite damping and everything eighSymmetric throws.
 */
export function pcaFromMoment(h: Float64Array, n: number, damping = 0.01, options: EighOptions = {}): PcaResult {
  if (!Number.isFinite(damping) || damping < 0) {
    throw new RangeError(`pcaFromMoment: damping must be a finite number >= 0, got ${damping}`);
  }
  if (!Number.isInteger(n) || n < 1 || h.length !== n * n) {
    throw new RangeError(`pcaFromMoment: h has ${h.length} entries, expected n*n with n = ${n}`);
  }
  let trace = 0;
  for (let i = 0; i < n; i++) trace += h[i * n + i];
  const dampingAdded = (damping * trace) / n;
  const damped = Float64Array.from(h);
  for (let i = 0; i < n; i++) damped[i * n + i] += dampingAdded;
  const { values, vectors, backend } = eighSymmetric(damped, n, options);
  return { eigenvalues: values, Q: vectors, dampingAdded, backend };
}
