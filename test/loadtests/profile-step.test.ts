/** profile-step: operator labels and the aggregation of an onnxruntime profile (no timing). */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { opLabel, opShares } from '../../loadtests/profile-step.js';

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
