/**
 * The random residual rotation applied before quantizing (slicer/random-rotation.ts): the
 * matrices are orthogonal and seeded; on every family's sliced fixture the rotated model
 * computes the same logits with different weights; dense models are refused.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { loadModel } from '../../models/load.js';
import { layoutOf } from '../../models/registry.js';
import type { LoadedModel } from '../../models/types.js';
import { DecoderSession } from '../../runtime/decoder-session.js';
import { sliceModelWithReport } from '../../slicer/index.js';
import { randomOrthogonal, randomResidualRotation } from '../../slicer/random-rotation.js';
import { REPO_ROOT } from '../models/helpers.js';

const FIXTURES = path.join(REPO_ROOT, 'test', 'fixtures', 'transformers');
const CALIBRATION = path.join(REPO_ROOT, 'data', 'tinystories-train-sample.txt');
const TOKENS = [1, 403, 407, 261, 378, 18, 90, 311, 24, 420, 7, 151];
const variants = fs.readdirSync(FIXTURES).filter((d) => fs.existsSync(path.join(FIXTURES, d, 'config.json'))).sort();

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

async function logits(model: LoadedModel): Promise<Float32Array> {
  const s = await DecoderSession.create(model, { logits: 'all', threads: 1 });
  try {
    return Float32Array.from((await s.step([{ cache: s.newCache(), tokens: TOKENS }]))[0]);
  } finally {
    await s.release();
  }
}

test('randomOrthogonal: H H^T = I to 1e-12, seeded (same seed same matrix, another seed another)', () => {
  for (const n of [1, 7, 48, 130]) {
    const h = randomOrthogonal(n, 3);
    let err = 0;
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < n; j++) {
        let dot = 0;
        for (let k = 0; k < n; k++) dot += h[i * n + k] * h[j * n + k];
        err = Math.max(err, Math.abs(dot - (i === j ? 1 : 0)));
      }
    }
    assert.ok(err < 1e-12, `n = ${n}: ${err}`);
  }
  assert.deepEqual(randomOrthogonal(16, 5), randomOrthogonal(16, 5));
  assert.ok(maxAbsDiff(randomOrthogonal(16, 5), randomOrthogonal(16, 6)) > 0.1);
  assert.throws(() => randomOrthogonal(0, 1), RangeError);
});

for (const variant of variants) {
  test(`${variant}: the rotated slice (sparsity 0.25) keeps the logits, with different weights`, async () => {
    const dense = loadModel(path.join(FIXTURES, variant));
    const { model: sliced } = await sliceModelWithReport(dense, { sparsity: 0.25, calibrationFile: CALIBRATION, calWindows: 8, calSeqLen: 32 });
    const rotated = await randomResidualRotation(sliced, { seed: 11 });
    const layout = layoutOf(sliced.config);
    assert.ok(maxAbsDiff(rotated.weights.get(layout.embedTokens)!.data, sliced.weights.get(layout.embedTokens)!.data) > 1e-3, 'the embedding moved');
    assert.ok(maxAbsDiff(rotated.weights.get(layout.layers[0].attnShortcut)!.data, sliced.weights.get(layout.layers[0].attnShortcut)!.data) > 1e-3, 'the shortcut moved');
    const want = await logits(sliced);
    const got = await logits(rotated);
    assert.ok(maxAbsDiff(got, want) < 1e-4 * Math.max(1, ...Array.from(want, Math.abs)), `max |rotated - sliced| = ${maxAbsDiff(got, want)}`);
    await assert.rejects(randomResidualRotation(dense, { seed: 1 }), /not sliced: a random residual rotation needs fused/);
  });
}
