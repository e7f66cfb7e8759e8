import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { JS_MATMUL_MAX_MACS, matmulF64, matmulF64Js, seededNormals } from '../../slicer/linalg/index.js';
import { maxAbs, maxAbsDiff, naiveMatmul, transpose } from './helpers.js';

/** Stores op^{-1}: the array that, read with `trans`, gives the logical [rows, cols] matrix. */
function stored(logical: Float64Array, rows: number, cols: number, trans: boolean): { data: Float64Array; shape: [number, number] } {
  return trans ? { data: transpose(logical, rows, cols), shape: [cols, rows] } : { data: logical, shape: [rows, cols] };
}

describe('matmulF64', () => {
  for (const [m, k, n] of [
    [3, 5, 4], // JS path
    [37, 129, 23], // onnxruntime path (odd sizes)
    [300, 64, 300],
  ] as const) {
    for (const transA of [false, true]) {
      for (const transB of [false, true]) {
        it(`[${m}x${k}] x [${k}x${n}] transA=${transA} transB=${transB} matches the triple loop`, async () => {
          const a = seededNormals(m * k, m + 7 * k);
          const b = seededNormals(k * n, n + 13 * k);
          const ref = naiveMatmul(a, b, m, k, n);
          const sa = stored(a, m, k, transA);
          const sb = stored(b, k, n, transB);
          const c = await matmulF64(sa.data, sa.shape, sb.data, sb.shape, { transA, transB });
          assert.equal(c.length, m * n);
          const err = maxAbsDiff(c, ref);
          assert.ok(err <= 1e-12 * maxAbs(ref), `max abs error ${err} (max |C| ${maxAbs(ref)})`);
          const js = matmulF64Js(sa.data, sa.shape, sb.data, sb.shape, { transA, transB });
          assert.ok(maxAbsDiff(js, ref) <= 1e-12 * maxAbs(ref));
        });
      }
    }
  }

  it('is exact on small integers on both sides of the JS threshold', async () => {
    assert.deepEqual(Array.from(await matmulF64(new Float64Array([1, 2, 3, 4]), [2, 2], new Float64Array([5, 6, 7, 8]), [2, 2])), [19, 22, 43, 50]);
    const side = Math.ceil(Math.cbrt(JS_MATMUL_MAX_MACS)) + 1; // goes through onnxruntime
    const a = Float64Array.from({ length: side * side }, (_, i) => (i % 7) - 3);
    const b = Float64Array.from({ length: side * side }, (_, i) => (i % 5) - 2);
    assert.deepEqual(await matmulF64(a, [side, side], b, [side, side]), naiveMatmul(a, b, side, side, side));
  });

  it('computes the uncentred second moment X^T X of a [tokens, d] signal', async () => {
    const [tokens, d] = [512, 48];
    const x = seededNormals(tokens * d, 99);
    const h = await matmulF64(x, [tokens, d], x, [tokens, d], { transA: true });
    const ref = naiveMatmul(transpose(x, tokens, d), x, d, tokens, d);
    assert.ok(maxAbsDiff(h, ref) <= 1e-12 * maxAbs(ref));
  });

  it('handles empty dimensions', async () => {
    assert.deepEqual(await matmulF64(new Float64Array(0), [0, 3], new Float64Array(6), [3, 2]), new Float64Array(0));
    assert.deepEqual(await matmulF64(new Float64Array(0), [2, 0], new Float64Array(0), [0, 3]), new Float64Array(6));
  });

  it('rejects mismatched shapes', async () => {
    await assert.rejects(matmulF64(new Float64Array(6), [2, 3], new Float64Array(6), [2, 3]), /inner dimensions differ: op\(A\) is \[2, 3\], op\(B\) is \[2, 3\]/);
    await assert.rejects(matmulF64(new Float64Array(5), [2, 3], new Float64Array(6), [3, 2]), /a has 5 entries, shape \[2, 3\] needs 6/);
    await assert.rejects(matmulF64(new Float64Array(6), [2, 3], new Float64Array(6), [3, 2.5] as unknown as [number, number]), /bShape must be two non-negative integers/);
  });
});
