/** profile-step: operator labels, the aggregation of an onnxruntime profile and the weight bytes per step (no timing). */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { decodeWeightBytes, opLabel, opShares } from '../../loadtests/profile-step.js';
import { loadModel } from '../../models/load.js';
import { quantizedModelBytes, quantizeModel } from '../../models/quant/index.js';
import { sliceModelWithReport } from '../../slicer/index.js';
import { REPO_ROOT } from '../models/helpers.js';

test('MatMul is split into weight products (rank-3 activations) and attention products (rank 4)', () => {
  assert.equal(opLabel('MatMul', [{ float: [16, 1, 768] }]), 'MatMul (weights)');
  assert.equal(opLabel('MatMul', [{ float: [16, 4, 3, 64] }]), 'MatMul (attention)');
  assert.equal(opLabel('FusedMatMul', [{ float: [16, 4, 3, 64] }]), 'FusedMatMul (attention)');
  assert.equal(opLabel('Softmax', [{ float: [16, 4, 3, 97] }]), 'Softmax');
  assert.equal(opLabel('MatMul'), 'MatMul (weights)');
});

test('opShares sums kernel times per label and ignores non-kernel events', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'profile-'));
  const file = path.join(dir, 'p.json');
  const node = (op: string, dur: number, shape: number[]) => ({ cat: 'Node', name: `n_${op}_kernel_time`, dur, args: { op_name: op, input_type_shape: [{ float: shape }] } });
  fs.writeFileSync(
    file,
    JSON.stringify([
      node('MatMul', 30, [16, 1, 768]),
      node('MatMul', 10, [16, 4, 3, 64]),
      node('Softmax', 10, [16, 4, 3, 97]),
      { cat: 'Session', name: 'model_run', dur: 1000 },
      { cat: 'Node', name: 'n_MatMul_fence_before', dur: 5, args: { op_name: 'MatMul' } },
    ]),
  );
  assert.deepEqual(opShares(file), { 'MatMul (weights)': 0.6, 'MatMul (attention)': 0.2, Softmax: 0.2 });
  fs.rmSync(dir, { recursive: true, force: true });
});

test('decodeWeightBytes: float32 and quantized stories260K, dense and sliced, as the load test counts them', async () => {
  const dir = path.join(REPO_ROOT, 'models', 'stories260K');
  const dense = loadModel(dir);
  // Float32: every matmul weight at 4 bytes (the tied head counted once as a matmul) plus one embedding row.
  const matmul = [...dense.weights.entries()].filter(([n]) => !/norm|embed/.test(n)).reduce((s, [, t]) => s + t.data.length, 0) + 512 * 64;
  assert.equal(decodeWeightBytes(dense), 4 * (matmul + 64));
  const { model: sliced } = await sliceModelWithReport(loadModel(dir), { sparsity: 0.25, calibrationFile: path.join(REPO_ROOT, 'data', 'tinystories-train-sample.txt'), calWindows: 4, calSeqLen: 64 });
  const denseBytes: Record<string, number> = {};
  for (const p of ['int8', 'int4'] as const) {
    // Every matmul is quantized: the bytes are the quantized tensors' plus one float32 embedding row.
    const qDense = await quantizeModel(dense, p);
    const qSliced = await quantizeModel(sliced, p);
    denseBytes[p] = decodeWeightBytes(qDense);
    assert.equal(denseBytes[p], quantizedModelBytes(qDense) + 4 * 64, `dense ${p}`);
    assert.equal(decodeWeightBytes(qSliced), quantizedModelBytes(qSliced) + 4 * 48, `sliced ${p}`);
  }
  assert.ok(denseBytes.int4 < denseBytes.int8);
});
