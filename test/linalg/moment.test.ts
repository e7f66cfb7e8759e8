import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MomentAccumulator, seededNormals } from '../../slicer/linalg/index.js';
import { maxAbs, maxAbsDiff, naiveMatmul, transpose } from './helpers.js';

/** Reference X^T X summed over batches, from the float64 values of the inputs. */
function reference(batches: ArrayLike<number>[], d: number): Float64Array {
  const h = new Float64Array(d * d);
  for (const x of batches) {
    const tokens = x.length / d;
    const m = naiveMatmul(transpose(x, tokens, d), x, d, tokens, d);
    for (let i = 0; i < h.length; i++) h[i] += m[i];
  }
  return h;
}

function assertSymmetric(h: Float64Array, d: number): void {
  for (let i = 0; i < d; i++) for (let j = 0; j < i; j++) assert.equal(h[i * d + j], h[j * d + i], `H[${i}][${j}]`);
}

describe('MomentAccumulator', () => {
  it('accumulates float64 batches of different lengths (JS and onnxruntime paths)', async () => {
    const d = 40;
    const batches = [1, 300, 0, 77].map((t, i) => seededNormals(t * d, 100 + i));
    const acc = new MomentAccumulator(d);
    for (const x of batches) await acc.add(x, x.length / d);
    assert.equal(acc.count, 378);
    const h = await acc.moment();
    const ref = reference(batches, d);
    assert.ok(maxAbsDiff(h, ref) <= 1e-12 * maxAbs(ref), `${maxAbsDiff(h, ref)}`);
    assertSymmetric(h, d);
  });

  it('converts float32 input exactly to float64 before multiplying', async () => {
    const d = 64;
    // Values with 24 significant bits: their products need more than float32 to be exact.
    const x = Float32Array.from(seededNormals(500 * d, 7), (v) => v * 1000 + 1 / 3);
    const acc = new MomentAccumulator(d);
    await acc.add(x, 500);
    const ref = reference([Float64Array.from(x)], d);
    const h = await acc.moment();
    assert.ok(maxAbsDiff(h, ref) <= 1e-12 * maxAbs(ref), `${maxAbsDiff(h, ref)}`);
  });

  it('gives the same moment when the signal is split into chunks', async () => {
    const d = 24;
    const x = seededNormals(1000 * d, 3);
    const whole = new MomentAccumulator(d);
    await whole.add(x, 1000);
    const chunked = new MomentAccumulator(d, { maxChunkElements: 7 * d + 5 }); // 7 rows per call
    await chunked.add(Float32Array.from(x), 1000);
    const ref = reference([Float64Array.from(Float32Array.from(x))], d);
    assert.ok(maxAbsDiff(await chunked.moment(), ref) <= 1e-12 * maxAbs(ref));
    assert.ok(maxAbsDiff(await whole.moment(), reference([x], d)) <= 1e-12 * maxAbs(ref));
  });

  it('applies batches in order when add is not awaited, and moment() waits for them', async () => {
    const d = 16;
    const batches = [200, 3, 150].map((t, i) => seededNormals(t * d, 40 + i));
    const acc = new MomentAccumulator(d);
    const pending = batches.map((x) => acc.add(x, x.length / d));
    const h = await acc.moment();
    assert.equal(acc.count, 353);
    await Promise.all(pending);
    const ref = reference(batches, d);
    assert.ok(maxAbsDiff(h, ref) <= 1e-12 * maxAbs(ref));
  });

  it('rejects a batch of the wrong length without losing the others', async () => {
    const d = 8;
    const acc = new MomentAccumulator(d);
    const good = seededNormals(10 * d, 1);
    const first = acc.add(good, 10);
    await assert.rejects(acc.add(new Float64Array(d * 3 + 1), 3), /x has 25 entries, expected tokens \* d = 3 \* 8/);
    await first;
    assert.equal(acc.count, 10);
    assert.ok(maxAbsDiff(await acc.moment(), reference([good], d)) <= 1e-12 * maxAbs(reference([good], d)));
    assert.throws(() => new MomentAccumulator(0), /d must be a positive integer/);
    assert.throws(() => new MomentAccumulator(4, { maxChunkElements: 0 }), /maxChunkElements/);
  });

  it('returns a copy of H', async () => {
    const acc = new MomentAccumulator(2);
    await acc.add(new Float64Array([1, 2, 3, 4]), 2);
    const h = await acc.moment();
    assert.deepEqual(Array.from(h), [10, 14, 14, 20]);
    h[0] = 99;
    assert.equal((await acc.moment())[0], 10);
  });
});
