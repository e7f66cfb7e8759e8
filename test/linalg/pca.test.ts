import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { eighSymmetric, pcaFromMoment } from '../../slicer/linalg/index.js';
import { fromSpectrum, maxAbsDiff, naiveMatmul, projector, randomOrthogonal, transpose } from './helpers.js';

describe('pcaFromMoment (PROTOCOL §5.2)', () => {
  it('adds damping * mean(diag(H)) and sorts a diagonal moment descending', () => {
    const h = new Float64Array([4, 0, 0, 0, 1, 0, 0, 0, 9]);
    const copy = Float64Array.from(h);
    const r = pcaFromMoment(h, 3);
    const damping = (0.01 * (4 + 1 + 9)) / 3;
    assert.equal(r.dampingAdded, damping);
    assert.deepEqual(Array.from(r.eigenvalues), [9 + damping, 4 + damping, 1 + damping]);
    assert.deepEqual(Array.from(r.Q), [0, 1, 0, 0, 0, 1, 1, 0, 0]);
    assert.deepEqual(h, copy, 'H must not be modified');
  });

  it('finds the principal directions of a signal with a known covariance', () => {
    // X = Z diag(sqrt(s)) U^T where Z holds the first 4 columns of the 8x8 Sylvester Hadamard
    // matrix (Z^T Z = 8 I exactly), so H = X^T X = 8 U diag(s) U^T.
    const n = 4;
    const tokens = 8;
    const hadamard = (i: number, j: number): number => (popcount(i & j) % 2 === 0 ? 1 : -1);
    const s = [0.5, 8, 2, 32];
    const u = randomOrthogonal(n, 9);
    const zs = new Float64Array(tokens * n);
    for (let i = 0; i < tokens; i++) for (let j = 0; j < n; j++) zs[i * n + j] = hadamard(i, j) * Math.sqrt(s[j]);
    const x = naiveMatmul(zs, transpose(u, n, n), tokens, n, n);
    const h = naiveMatmul(transpose(x, tokens, n), x, n, tokens, n);
    const r = pcaFromMoment(h, n, 0.01, { backend: 'js' });
    const mean = (tokens * s.reduce((p, q) => p + q, 0)) / n;
    assert.ok(Math.abs(r.dampingAdded - 0.01 * mean) <= 1e-12 * mean);
    const expected = [32, 8, 2, 0.5].map((v) => tokens * v + r.dampingAdded);
    assert.ok(maxAbsDiff(r.eigenvalues, expected) <= 1e-12 * expected[0], `${Array.from(r.eigenvalues)}`);
    // Column j of Q spans the same line as the column of U with the j-th largest variance.
    const order = [3, 1, 2, 0];
    for (let j = 0; j < n; j++) {
      assert.ok(maxAbsDiff(projector(r.Q, n, [j]), projector(u, n, [order[j]])) <= 1e-12, `direction ${j}`);
    }
  });

  it('shifts every eigenvalue by dampingAdded and keeps the eigenvectors', () => {
    const n = 10;
    const q = randomOrthogonal(n, 2);
    const h = fromSpectrum(q, [10, 9, 8, 7, 6, 5, 4, 3, 2, 1], n);
    const plain = eighSymmetric(h, n);
    const damped = pcaFromMoment(h, n, 0.25);
    assert.ok(Math.abs(damped.dampingAdded - 0.25 * 5.5) <= 1e-14);
    const shifted = plain.values.map((v) => v + damped.dampingAdded);
    assert.ok(maxAbsDiff(damped.eigenvalues, shifted) <= 1e-13);
    assert.ok(maxAbsDiff(damped.Q, plain.vectors) <= 1e-12);
    const none = pcaFromMoment(h, n, 0);
    assert.equal(none.dampingAdded, 0);
    assert.ok(maxAbsDiff(none.eigenvalues, plain.values) <= 1e-13);
  });

  it('rejects a bad damping or shape', () => {
    assert.throws(() => pcaFromMoment(new Float64Array(4), 2, -0.01), /damping must be a finite number >= 0/);
    assert.throws(() => pcaFromMoment(new Float64Array(4), 2, NaN), /damping/);
    assert.throws(() => pcaFromMoment(new Float64Array(5), 2), /5 entries/);
  });
});

function popcount(v: number): number {
  let c = 0;
  for (let x = v; x; x >>= 1) c += x & 1;
  return c;
}
