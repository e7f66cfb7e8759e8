/**
 * Computational invariance (SliceGPT §3.1-3.2; SLICEGPT.md §1-2; PROTOCOL.md §5.5): norm fusion
 * alone, and rotation by any orthogonal matrices without slicing, leave the logits unchanged.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { LoadedModel } from '../../models/types.js';
import { fuseNorms } from '../../slicer/fusion.js';
import { DecoderSession } from '../../runtime/decoder-session.js';
import { pcaBasis } from '../../slicer/driver.js';
import { rotateAndSliceSequential } from '../../slicer/sequential.js';
import { randomOrthogonalBasis } from '../helpers/random-basis.js';
import { rng, tinyModel } from '../helpers/tiny-model.js';

const SHAPE = { hidden: 32, layers: 3, heads: 4, kvHeads: 2, intermediate: 48, vocab: 60, context: 64 };
const TOKENS = [1, 17, 4, 33, 58, 2, 9, 41, 12, 7, 30, 3];

async function logits(model: LoadedModel, tokens = TOKENS): Promise<Float32Array> {
  const s = await DecoderSession.create(model, { logits: 'all', threads: 1 });
  try {
    return (await s.step([{ cache: s.newCache(), tokens }]))[0];
  } finally {
    await s.release();
  }
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

function calibrationWindows(count: number, len: number, seed: number): number[][] {
  const r = rng(seed);
  return Array.from({ length: count }, () => Array.from({ length: len }, () => Math.floor(r() * SHAPE.vocab)));
}

test('norm fusion alone leaves the logits unchanged (tied and untied heads)', async () => {
  for (const tied of [false, true]) {
    const dense = tinyModel({ ...SHAPE, tied }, 11);
    const fused = fuseNorms(dense);
    assert.equal(fused.weights.has('model.norm.weight'), false);
    assert.equal(fused.weights.has('lm_head.weight'), true);
    assert.ok(maxAbsDiff(await logits(dense), await logits(fused)) < 1e-4, `tied=${tied}`);
  }
});

test('rotating by random orthogonal matrices without slicing leaves the logits unchanged', async () => {
  const dense = tinyModel(SHAPE, 12);
  const fused = fuseNorms(dense);
  const { model } = await rotateAndSliceSequential(fused, {
    width: SHAPE.hidden,
    sliceHead: false,
    windows: calibrationWindows(2, 16, 1),
    basis: randomOrthogonalBasis(5),
  });
  // The weights really moved: the embedding is not the fused one any more.
  assert.ok(maxAbsDiff(model.weights.get('model.embed_tokens.weight')!.data, fused.weights.get('model.embed_tokens.weight')!.data) > 0.1);
  assert.ok(maxAbsDiff(await logits(dense), await logits(model)) < 1e-4);
});

test('PCA rotation at full width (sparsity 0) leaves the logits unchanged', async () => {
  const dense = tinyModel(SHAPE, 13);
  const { model } = await rotateAndSliceSequential(fuseNorms(dense), {
    width: SHAPE.hidden,
    sliceHead: true,
    windows: calibrationWindows(4, 16, 2),
    basis: pcaBasis(),
  });
  assert.deepEqual(model.weights.get('lm_head.weight')!.shape, [SHAPE.vocab, SHAPE.hidden]);
  assert.ok(maxAbsDiff(await logits(dense), await logits(model)) < 1e-4);
});

test('slicing produces the documented shapes and the sliced stream is decorrelated', async () => {
  const dense = tinyModel(SHAPE, 14);
  const dp = 24;
  const eig = new Map<string, Float64Array>();
  const windows = calibrationWindows(4, 16, 3);
  const { model } = await rotateAndSliceSequential(fuseNorms(dense), {
    width: dp,
    sliceHead: false,
    windows,
    basis: pcaBasis(0.01, (pos, values, damping) => eig.set(pos, values.map((v) => v - damping))),
  });
  const shape = (n: string) => model.weights.get(n)!.shape;
  assert.deepEqual(shape('model.embed_tokens.weight'), [SHAPE.vocab, dp]);
  assert.deepEqual(shape('model.layers.0.self_attn.q_proj.weight'), [SHAPE.hidden, dp]);
  assert.deepEqual(shape('model.layers.0.self_attn.o_proj.weight'), [dp, SHAPE.hidden]);
  assert.deepEqual(shape('model.layers.0.attn_shortcut_Q'), [dp, dp]);
  assert.deepEqual(shape('model.layers.2.mlp.down_proj.weight'), [SHAPE.hidden, SHAPE.intermediate]);
  assert.deepEqual(shape('model.layers.2.mlp_shortcut_Q'), [dp, SHAPE.hidden]);
  assert.deepEqual(shape('lm_head.weight'), [SHAPE.vocab, SHAPE.hidden]);
  // PROTOCOL.md §5.3 self-check on the embedding position: the sliced embedding output's
  // second moment is diagonal with the leading eigenvalues of the PCA that produced it.
  const E = model.weights.get('model.embed_tokens.weight')!.data;
  const m = new Float64Array(dp * dp);
  for (const t of windows.flat()) for (let i = 0; i < dp; i++) for (let j = 0; j < dp; j++) m[i * dp + j] += E[t * dp + i] * E[t * dp + j];
  const lead = eig.get('embedding')!;
  for (let i = 0; i < dp; i++) {
    assert.ok(Math.abs(m[i * dp + i] - lead[i]) < 1e-3 * lead[0], `diagonal ${i}`);
    for (let j = 0; j < dp; j++) if (i !== j) assert.ok(Math.abs(m[i * dp + j]) < 1e-3 * lead[0], `off-diagonal ${i},${j}`);
  }
});
