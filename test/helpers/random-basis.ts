/** A random orthogonal basis for the slicer, for invariance tests (no slicing must keep the logits). */
import { Matrix, QrDecomposition } from 'ml-matrix';
import type { BasisFn } from '../../slicer/driver.js';
import { randn, rng } from './tiny-model.js';

/**
 * A BasisFn that ignores the signal and returns Q from the QR decomposition of a seeded
 * n x n Gaussian matrix (row-major, orthogonal); successive calls draw new matrices.
 */
export function randomOrthogonalBasis(seed: number): BasisFn {
  const r = rng(seed);
  return async (_signal, _tokens, n) => {
    const g = randn(n * n, 1, r);
    const q = new QrDecomposition(new Matrix(Array.from({ length: n }, (_, i) => Array.from(g.subarray(i * n, (i + 1) * n))))).orthogonalMatrix;
    return Float64Array.from(q.to1DArray());
  };
}
