/**
 * JavaScript backend of the symmetric eigendecomposition: ml-matrix's EigenvalueDecomposition
 * with `assumeSymmetric` (Householder tridiagonalisation + implicit QL, the EISPACK
 * tred2/tql2 pair as ported by JAMA). Always available; O(n^3), 0.4 s at n = 288 and about
 * 90 s at n = 2048 on this project's 2-core machines (docs/linear-algebra.md).
 */
import { EigenvalueDecomposition, Matrix } from 'ml-matrix';

/**
 * Eigendecomposition of a symmetric n x n row-major float64 matrix (exactly symmetric: the
 * caller symmetrises). Returns eigenvalues DESCENDING and eigenvectors as columns of a
 * row-major n x n array (`vectors[i*n + j]` = component i of eigenvector j).
 */
export function eighJs(a: Float64Array, n: number): { values: Float64Array; vectors: Float64Array } {
  const evd = new EigenvalueDecomposition(Matrix.from1DArray(n, n, a), { assumeSymmetric: true });
  const ascending = evd.realEigenvalues;
  const v = evd.eigenvectorMatrix;
  // tql2 sorts ascending; order explicitly anyway so the contract does not rest on it.
  const order = Array.from({ length: n }, (_, k) => k).sort((p, q) => ascending[q] - ascending[p] || p - q);
  const values = new Float64Array(n);
  const vectors = new Float64Array(n * n);
  for (let j = 0; j < n; j++) values[j] = ascending[order[j]];
  for (let i = 0; i < n; i++) {
    const row = v.getRow(i);
    const base = i * n;
    for (let j = 0; j < n; j++) vectors[base + j] = row[order[j]];
  }
  return { values, vectors };
}
