import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, it, test } from 'node:test';
import { JS_EIGH_HINT_WIDTH, eighBackendInfo, eighSymmetric, resolveEighBackend, slowEigensolverHint, type EighBackend } from '../../slicer/linalg/index.js';
import { loadLapack, openblasCoreTypeFor } from '../../slicer/linalg/lapack.js';
import { eighErrors, fromSpectrum, maxAbs, maxAbsDiff, projector, randomOrthogonal, randomSpd } from './helpers.js';

const lapackBuilt = loadLapack().ok;
const backends: EighBackend[] = lapackBuilt ? ['js', 'lapack'] : ['js'];

function assertDescending(values: Float64Array): void {
  for (let j = 1; j < values.length; j++) assert.ok(values[j - 1] >= values[j], `values[${j - 1}] = ${values[j - 1]} < values[${j}] = ${values[j]}`);
}

for (const backend of backends) {
  describe(`eighSymmetric (${backend})`, () => {
    it('decomposes a random SPD matrix (n = 200): residual, orthonormality, descending order', () => {
      const n = 200;
      const a = randomSpd(n, 11);
      const copy = Float64Array.from(a);
      const r = eighSymmetric(a, n, { backend });
      assert.equal(r.backend, backend);
      assert.deepEqual(a, copy, 'input must not be modified');
      assertDescending(r.values);
      const { residual, orthogonality } = eighErrors(a, r.values, r.vectors, n);
      assert.ok(residual <= 1e-12 * maxAbs(r.values), `residual ${residual}`);
      assert.ok(orthogonality <= 1e-12, `orthogonality ${orthogonality}`);
      assert.ok(r.values[n - 1] > 0, 'SPD matrix has positive eigenvalues');
    });

    it('recovers a known spectrum with repeated eigenvalues and the right eigenspaces', () => {
      const n = 12;
      const spectrum = [7, 7, 7, 3, 3, 2, 1, 0.5, 0, 0, -1, -4];
      const q = randomOrthogonal(n, 5);
      const a = fromSpectrum(q, spectrum, n);
      const r = eighSymmetric(a, n, { backend });
      assert.ok(maxAbsDiff(r.values, spectrum) <= 1e-13, `values ${Array.from(r.values)}`);
      // Within a repeated eigenvalue the basis is arbitrary; the projector onto the eigenspace is not.
      for (const cols of [[0, 1, 2], [3, 4], [8, 9]]) {
        const err = maxAbsDiff(projector(r.vectors, n, cols), projector(q, n, cols));
        assert.ok(err <= 1e-12, `eigenspace ${cols}: ${err}`);
      }
      const { residual, orthogonality } = eighErrors(a, r.values, r.vectors, n);
      assert.ok(residual <= 1e-13 && orthogonality <= 1e-13, `${residual} ${orthogonality}`);
    });

    it('sorts a diagonal matrix and returns signed unit vectors', () => {
      const a = new Float64Array([2, 0, 0, 0, -5, 0, 0, 0, 9]);
      const r = eighSymmetric(a, 3, { backend });
      assert.deepEqual(Array.from(r.values), [9, 2, -5]);
      // Columns: e3, e1, e2, each with a positive largest component (the sign convention).
      assert.deepEqual(Array.from(r.vectors), [0, 1, 0, 0, 0, 1, 1, 0, 0]);
    });

    it('matches the 2x2 closed form', () => {
      const [p, b, c] = [1.5, -2.25, 4];
      const mean = (p + c) / 2;
      const radius = Math.hypot((p - c) / 2, b);
      const r = eighSymmetric(new Float64Array([p, b, b, c]), 2, { backend });
      assert.ok(Math.abs(r.values[0] - (mean + radius)) <= 1e-14 * radius);
      assert.ok(Math.abs(r.values[1] - (mean - radius)) <= 1e-14 * radius);
      // Eigenvector of the largest eigenvalue: (b, lambda1 - p) normalised, sign so that the
      // largest-magnitude component is positive.
      let v = [b, mean + radius - p];
      const norm = Math.hypot(v[0], v[1]);
      v = v.map((x) => x / norm);
      if (v[Math.abs(v[0]) >= Math.abs(v[1]) ? 0 : 1] < 0) v = v.map((x) => -x);
      assert.ok(Math.abs(r.vectors[0] - v[0]) <= 1e-14 && Math.abs(r.vectors[2] - v[1]) <= 1e-14, `${Array.from(r.vectors)}`);
    });

    it('handles n = 1 and an all-zero matrix', () => {
      const one = eighSymmetric(new Float64Array([-3]), 1, { backend });
      assert.deepEqual([one.values[0], one.vectors[0]], [-3, 1]);
      const zero = eighSymmetric(new Float64Array(16), 4, { backend });
      assert.deepEqual(Array.from(zero.values), [0, 0, 0, 0]);
      assert.ok(eighErrors(new Float64Array(16), zero.values, zero.vectors, 4).orthogonality <= 1e-15);
    });

    it('makes the largest-magnitude component of every eigenvector positive', () => {
      const n = 30;
      const r = eighSymmetric(randomSpd(n, 3), n, { backend });
      for (let j = 0; j < n; j++) {
        let best = 0;
        for (let i = 1; i < n; i++) if (Math.abs(r.vectors[i * n + j]) > Math.abs(r.vectors[best * n + j])) best = i;
        assert.ok(r.vectors[best * n + j] > 0, `column ${j}`);
      }
    });
  });
}

describe('eighSymmetric: both backends agree', { skip: lapackBuilt ? false : 'LAPACK addon not built (npm run build:lapack)' }, () => {
  it('gives the same eigenvalues and (sign-normalised) eigenvectors for n = 256', () => {
    const n = 256;
    const a = randomSpd(n, 21);
    const js = eighSymmetric(a, n, { backend: 'js' });
    const lapack = eighSymmetric(a, n, { backend: 'lapack' });
    assert.ok(maxAbsDiff(js.values, lapack.values) <= 1e-12 * maxAbs(js.values), `values differ by ${maxAbsDiff(js.values, lapack.values)}`);
    // Eigenvalue gaps of this Wishart matrix are >= 1e-3, so the vectors are well determined.
    let minGap = Infinity;
    for (let j = 1; j < n; j++) minGap = Math.min(minGap, js.values[j - 1] - js.values[j]);
    assert.ok(minGap > 1e-4, `min gap ${minGap}`);
    assert.ok(maxAbsDiff(js.vectors, lapack.vectors) <= 1e-9, `vectors differ by ${maxAbsDiff(js.vectors, lapack.vectors)}`);
  });

  it('reports the LAPACK implementation', () => {
    const info = eighBackendInfo();
    assert.deepEqual(info.available, ['js', 'lapack']);
    assert.match(info.lapackImplementation ?? '', /\S/);
  });
});

describe('eighSymmetric: input validation', () => {
  it('rejects bad shapes, non-finite entries and asymmetric matrices', () => {
    assert.throws(() => eighSymmetric(new Float64Array(4), 0), /positive integer/);
    assert.throws(() => eighSymmetric(new Float64Array(5), 2), /5 entries, expected n\*n = 4/);
    assert.throws(() => eighSymmetric(new Float64Array([1, NaN, NaN, 1]), 2), /a\[0\]\[1\] is NaN/);
    assert.throws(() => eighSymmetric(new Float64Array([1, 2, 2.001, 1]), 2), /not symmetric/);
  });

  it('accepts rounding-level asymmetry and decomposes the symmetric part', () => {
    const r = eighSymmetric(new Float64Array([2, 1 + 1e-15, 1, 2]), 2, { backend: 'js' });
    assert.ok(Math.abs(r.values[0] - (3 + 5e-16)) <= 1e-15 && Math.abs(r.values[1] - 1) <= 1e-15);
  });
});

describe('backend selection', () => {
  it('follows SLICESERVE_EIGH and rejects unknown values', () => {
    const saved = process.env.SLICESERVE_EIGH;
    try {
      process.env.SLICESERVE_EIGH = 'js';
      assert.equal(eighSymmetric(new Float64Array([1]), 1).backend, 'js');
      process.env.SLICESERVE_EIGH = 'auto';
      assert.equal(resolveEighBackend(), lapackBuilt ? 'lapack' : 'js');
      process.env.SLICESERVE_EIGH = 'cuda';
      assert.throws(() => eighSymmetric(new Float64Array([1]), 1), /SLICESERVE_EIGH=cuda is not valid: use js, lapack or auto/);
    } finally {
      if (saved === undefined) delete process.env.SLICESERVE_EIGH;
      else process.env.SLICESERVE_EIGH = saved;
    }
  });

  it('falls back to JS silently when the addon is missing, and explains a forced lapack', () => {
    const script = `
      const { eighSymmetric } = require(${JSON.stringify(path.join(__dirname, '..', '..', 'slicer', 'linalg', 'index.js'))});
      const r = eighSymmetric(new Float64Array([2, 1, 1, 2]), 2);
      process.stdout.write(JSON.stringify({ backend: r.backend, values: Array.from(r.values, (v) => +v.toFixed(12)) }));
      try { eighSymmetric(new Float64Array([1]), 1, { backend: 'lapack' }); } catch (e) { process.stderr.write(e.message); }`;
    const env: NodeJS.ProcessEnv = { ...process.env, SLICESERVE_LAPACK_ADDON: path.join(__dirname, 'no-such-addon.node') };
    delete env.SLICESERVE_EIGH;
    const child = spawnSync(process.execPath, ['-e', script], { env, encoding: 'utf8' });
    assert.equal(child.status, 0, child.stderr);
    assert.deepEqual(JSON.parse(child.stdout), { backend: 'js', values: [3, 1] });
    assert.match(child.stderr, /^the LAPACK eigensolver is unavailable: addon not built .*npm run build:lapack/);
  });

  it('picks OpenBLAS kernels only from instruction sets the CPU reports', () => {
    const avx512 = ['avx512f', 'avx512bw', 'avx512dq', 'avx512vl', 'avx512cd', 'avx2', 'fma'];
    assert.equal(openblasCoreTypeFor(new Set(avx512)), 'SKYLAKEX');
    assert.equal(openblasCoreTypeFor(new Set(['avx2', 'fma', 'avx512f'])), 'HASWELL');
    assert.equal(openblasCoreTypeFor(new Set(['sse4_2', 'avx'])), undefined);
  });
});

test('slowEigensolverHint: a note with the cost and the LAPACK build steps from hidden_size 768 when LAPACK is unavailable', () => {
  const missing = { ok: false as const, reason: 'addon not built (native/lapack/build/Release/sliceserve_lapack.node missing; run `npm run build:lapack`)' };
  const note = slowEigensolverHint(768, 25, 'auto', missing);
  assert.ok(note);
  assert.match(note, /^slicing at hidden_size 768 with the pure-JS eigensolver: 25 eigendecompositions of ~4\.1 s each on a 2-core machine \(~2 min\)/);
  assert.match(note, /addon not built/);
  assert.match(note, /install liblapack-dev libopenblas-dev .* `npm run build:lapack`/);
  assert.match(note, /SLICESERVE_EIGH=js to silence/);
  // 2048 wide, 1 + 2 x 22 layers: minutes.
  assert.match(slowEigensolverHint(2048, 45, 'auto', missing)!, /45 eigendecompositions of ~78 s each .*\(~58 min\)/);
  assert.equal(slowEigensolverHint(767, 25, 'auto', missing), null, 'below the threshold');
  assert.equal(slowEigensolverHint(JS_EIGH_HINT_WIDTH, 25, 'js', missing), null, 'js chosen explicitly');
  const lapack = { ok: true as const, path: 'x', addon: { eigh: () => ({ values: new Float64Array(), vectors: new Float64Array() }), implementation: () => 'LAPACK' } };
  assert.equal(slowEigensolverHint(4096, 25, 'auto', lapack), null, 'LAPACK will be used');
});
