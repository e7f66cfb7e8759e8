/**
 * Device-resident past KV (runtime/device-kv.ts and DecoderSession's device-KV mode): the
 * reuse-or-rebuild decision, the valid-position ranges and the attention bias built from them,
 * and the whole mode run on the CPU provider (present.* as CPU tensors) against the host path.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MASKED } from '../../models/onnx/contract.js';
import { appendValid, attentionBiasFromValid, freshValid, planDevicePast, validCount, type DevicePastState } from '../../runtime/device-kv.js';
import { DecoderSession } from '../../runtime/decoder-session.js';
import { tinyModel } from '../helpers/tiny-model.js';
import { runJoinLeaveScenario } from './kv-scenario.js';

const state: DevicePastState<string> = { rows: ['a', 'b'], past: 7, valid: [[[0, 3], [5, 7]], [[0, 7]]] };
const dec = (key: string, length: number) => ({ key, length, newTokens: 1 });

test('planDevicePast: reuses only a decode step over exactly the held rows', () => {
  assert.deepEqual(planDevicePast(undefined, [dec('a', 5)], 100), { reuse: false, reason: 'no past held' });
  assert.deepEqual(planDevicePast(state, [dec('a', 5), dec('b', 7)], 100), { reuse: true, rowOf: [0, 1] });
  // another input order: same rows, mapped
  assert.deepEqual(planDevicePast(state, [dec('b', 7), dec('a', 5)], 100), { reuse: true, rowOf: [1, 0] });
  assert.deepEqual(planDevicePast(state, [dec('a', 5)], 100), { reuse: false, reason: 'batch changed' });
  assert.deepEqual(planDevicePast(state, [dec('a', 5), dec('c', 7)], 100), { reuse: false, reason: 'batch changed' });
  assert.deepEqual(planDevicePast(state, [dec('a', 5), dec('a', 5)], 100), { reuse: false, reason: 'batch changed' });
  assert.deepEqual(planDevicePast(state, [dec('a', 5), dec('b', 7), dec('c', 0)], 100), { reuse: false, reason: 'batch changed' });
  assert.deepEqual(planDevicePast(state, [dec('a', 5), { key: 'b', length: 7, newTokens: 2 }], 100), { reuse: false, reason: 'not a decode step' });
  // 'a' holds 5 valid positions; a cache of another length was cleared or stepped elsewhere
  assert.deepEqual(planDevicePast(state, [dec('a', 0), dec('b', 7)], 100), { reuse: false, reason: 'row out of sync' });
  // past 7 + 1 against the longest after the step (8) plus the allowed padding
  assert.deepEqual(planDevicePast({ ...state, past: 10 }, [dec('a', 5), dec('b', 7)], 3), { reuse: true, rowOf: [0, 1] });
  assert.deepEqual(planDevicePast({ ...state, past: 11 }, [dec('a', 5), dec('b', 7)], 3), { reuse: false, reason: 'too much padding' });
});

test('valid ranges: a re-laid past, then present = Concat(past, new) rows', () => {
  assert.deepEqual(freshValid([3, 0, 5]), [[[0, 3]], [], [[0, 5]]]);
  // past 5, S = 2, row 0 has 1 new token (left-padded: position 6), row 1 two (5, 6), row 2 one
  assert.deepEqual(appendValid([[[0, 3]], [], [[0, 5]]], 5, 2, [1, 2, 2]), [[[0, 3], [6, 7]], [[5, 7]], [[0, 7]]]);
  // decode steps extend a row's last range when it ends where the new position lands
  assert.deepEqual(appendValid([[[0, 3], [6, 7]], [[0, 7]]], 7, 1, [1, 1]), [[[0, 3], [6, 8]], [[0, 8]]]);
  assert.equal(validCount([[0, 3], [6, 8]]), 5);
  assert.throws(() => appendValid([[]], 5, 2, [3]), /row 0 has 3 new tokens, expected 1\.\.2/);
});

test('attentionBiasFromValid: valid past, causal new positions, left-padded queries masked', () => {
  const M = 'M';
  const show = (b: Float32Array, T: number) =>
    Array.from({ length: b.length / T }, (_, q) => Array.from(b.subarray(q * T, (q + 1) * T), (v) => (v === MASKED ? M : v)));
  // past 3, S 2: row 0 valid [0, 2) with 2 new tokens, row 1 valid [1, 3) with 1 (query 0 is padding)
  const bias = attentionBiasFromValid([[[0, 2]], [[1, 3]]], 3, 2, [2, 1]);
  assert.deepEqual(show(bias, 5), [
    [0, 0, M, 0, M],
    [0, 0, M, 0, 0],
    [M, M, M, M, M],
    [M, 0, 0, M, 0],
  ]);
  assert.deepEqual(show(attentionBiasFromValid([[[0, 1], [2, 3]]], 3, 1, [1]), 4), [[0, M, 0, 0]]);
  assert.throws(() => attentionBiasFromValid([[[0, 4]]], 3, 1, [1]), /range \[0, 4\) is outside the past \[0, 3\)/);
});

test('device-KV mode on the CPU provider (present.* fed back) equals the host path while sequences join, leave and reorder', async () => {
  const SHAPE = { hidden: 32, layers: 2, heads: 4, kvHeads: 2, intermediate: 40, vocab: 50, context: 128 };
  const m = tinyModel(SHAPE, 31);
  for (const attention of ['primitives', 'onnx-op'] as const) {
    const held = await DecoderSession.create(m, { threads: 1, attention, deviceKV: true });
    const host = await DecoderSession.create(m, { threads: 1, attention });
    assert.equal(host.deviceKVStats.enabled, false);
    const res = await runJoinLeaveScenario(held, host, { steps: 40, seed: 5, vocab: SHAPE.vocab });
    assert.ok(res.maxDiff < 1e-5, `${attention}: max |diff| ${res.maxDiff}`);
    assert.equal(res.argmaxMismatches, 0);
    const stats = held.deviceKVStats;
    assert.equal(stats.reused + Object.values(stats.uploaded).reduce((a, b) => a + b, 0), 40);
    assert.ok(stats.reused >= 20, `${attention}: only ${stats.reused} of 40 steps reused the held past`);
    assert.equal(stats.uploaded['no past held'], 1);
    assert.ok((stats.uploaded['batch changed'] ?? 0) >= 1 && (stats.uploaded['not a decode step'] ?? 0) >= 1, JSON.stringify(stats));
    assert.equal(stats.uploaded['row out of sync'], 1, 'the cleared cache is re-laid');
    assert.equal(stats.pastLocation, 'cpu');
    await held.release();
    await host.release();
  }
});
