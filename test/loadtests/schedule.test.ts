import assert from 'node:assert/strict';
import { test } from 'node:test';
import { planBlocks, splitRequests } from '../../loadtests/schedule.js';
import { makePrompt } from '../../loadtests/prompts.js';

test('blocks are interleaved round-robin, rotated by one per round and per level', () => {
  const order = planBlocks(['A', 'B', 'C'], [1, 4], 2).map((b) => `${b.concurrency}${b.model}${b.round}`);
  assert.deepEqual(order, [
    '1A0', '1B0', '1C0', // level 0, round 0: no rotation
    '1B1', '1C1', '1A1', // round 1: rotated by one
    '4B0', '4C0', '4A0', // level 1, round 0: rotated by one
    '4C1', '4A1', '4B1',
  ]);
});

test('every model gets the same number of blocks and each position equally often over a full rotation', () => {
  const blocks = planBlocks(['d', 's1', 's2'], [1, 2, 4], 3);
  assert.equal(blocks.length, 27);
  for (const level of [0, 1, 2]) {
    const firsts = blocks.filter((b) => b.level === level).filter((_, i) => i % 3 === 0).map((b) => b.model);
    assert.deepEqual([...firsts].sort(), ['d', 's1', 's2'], `level ${level}: each model leads one round`);
  }
});

test('plan errors', () => {
  assert.throws(() => planBlocks([], [1], 1), RangeError);
  assert.throws(() => planBlocks(['a'], [], 1), RangeError);
  assert.throws(() => planBlocks(['a'], [1], 0), RangeError);
});

test('splitRequests spreads a level over rounds, remainder first', () => {
  assert.deepEqual(splitRequests(10, 3), [4, 3, 3]);
  assert.deepEqual(splitRequests(64, 2), [32, 32]);
  assert.deepEqual(splitRequests(1, 2), [1, 0]);
});

test('prompts: exact length, BOS first, ids in range, deterministic per (seed, index), distinct across indices', () => {
  const opts = { promptTokens: 66, vocabSize: 32000, bosTokenId: 1, seed: 7 };
  const p0 = makePrompt(0, opts);
  assert.equal(p0.length, 66);
  assert.equal(p0[0], 1);
  assert.ok(p0.slice(1).every((id) => Number.isInteger(id) && id >= 3 && id < 32000));
  assert.deepEqual(makePrompt(0, opts), p0);
  const firsts = new Set(Array.from({ length: 200 }, (_, i) => makePrompt(i, opts).slice(1, 4).join(',')));
  assert.equal(firsts.size, 200, 'no two prompts share their first three tokens after BOS');
  assert.notDeepEqual(makePrompt(0, { ...opts, seed: 8 }), p0);
  assert.throws(() => makePrompt(0, { ...opts, vocabSize: 3 }), RangeError);
  assert.throws(() => makePrompt(0, { ...opts, promptTokens: 0 }), RangeError);
});
