import assert from 'node:assert/strict';
import { test } from 'node:test';
import { mean, percentile, summarize } from '../../loadtests/stats.js';

// Rule under test: linear interpolation between closest ranks (numpy's default),
// h = (n - 1) p / 100, value = x[floor h] + (h - floor h) (x[floor h + 1] - x[floor h]).

test('percentile interpolates between closest ranks', () => {
  const x = [1, 2, 3, 4];
  assert.equal(percentile(x, 50), 2.5); // h = 1.5
  assert.ok(Math.abs(percentile(x, 90) - 3.7) < 1e-12); // h = 2.7
  assert.ok(Math.abs(percentile(x, 99) - 3.97) < 1e-12); // h = 2.97
  assert.equal(percentile(x, 0), 1);
  assert.equal(percentile(x, 100), 4);
  const y = [15, 20, 35, 40, 50];
  assert.equal(percentile(y, 50), 35); // h = 2 exactly
  assert.ok(Math.abs(percentile(y, 90) - 46) < 1e-12); // h = 3.6: 40 + 0.6 * 10
  assert.ok(Math.abs(percentile(y, 99) - 49.6) < 1e-12); // h = 3.96
});

test('percentile of one sample is that sample; bad input throws', () => {
  assert.equal(percentile([7], 99), 7);
  assert.throws(() => percentile([], 50), RangeError);
  assert.throws(() => percentile([1, 2], 101), RangeError);
  assert.throws(() => percentile([1, 2], -1), RangeError);
  assert.throws(() => percentile([1, 2], NaN), RangeError);
});

test('summarize sorts first and reports mean, percentiles, extremes', () => {
  const s = summarize([40, 15, 50, 35, 20])!;
  assert.deepEqual({ n: s.n, mean: s.mean, p50: s.p50, min: s.min, max: s.max }, { n: 5, mean: 32, p50: 35, min: 15, max: 50 });
  assert.ok(Math.abs(s.p90 - 46) < 1e-12);
  assert.equal(summarize([]), null);
  assert.ok(Number.isNaN(mean([])));
  // 1..100: p99 at h = 98.01 -> 99.01
  const hundred = Array.from({ length: 100 }, (_, i) => i + 1);
  assert.ok(Math.abs(summarize(hundred)!.p99 - 99.01) < 1e-9);
  assert.equal(summarize(hundred)!.p50, 50.5);
});
