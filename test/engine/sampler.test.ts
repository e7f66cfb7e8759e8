/** Sampler: greedy, penalties, top-k / top-p support, seeded reproducibility, logprobs. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { argmax, DEFAULT_SAMPLING, logSoftmax, Sampler, type SamplingParams } from '../../engine/sampler.js';

const base: SamplingParams = { temperature: 1, topP: 1, topK: 0, presencePenalty: 0, frequencyPenalty: 0 };
const logits = Float32Array.from([1, 3, 2, 3, -1]);

test('greedy picks the argmax, lowest id on ties, with its temperature-1 logprob', () => {
  const s = new Sampler({ ...base, temperature: 0 });
  const r = s.sample(logits, []);
  assert.equal(r.token, 1);
  assert.ok(Math.abs(r.logprob - logSoftmax(logits)[1]) < 1e-12);
});

test('argmax takes the lowest index on ties, also at the ends', () => {
  assert.equal(argmax(logits), 1);
  assert.equal(argmax(Float32Array.from([5, 5, 1])), 0);
  assert.equal(argmax(Float64Array.from([-Infinity, -2, -1])), 2);
});

test('without withLogprob the same token is drawn and its logprob is null, for every sampling mode', () => {
  const modes: Partial<SamplingParams>[] = [{ temperature: 0 }, { temperature: 0, presencePenalty: 1 }, { seed: 7 }, { topK: 2, seed: 7 }, { topP: 0.9, seed: 7 }];
  for (const m of modes) {
    const scored = new Sampler({ ...base, ...m });
    const bare = new Sampler({ ...base, ...m });
    for (let i = 0; i < 20; i++) {
      const a = scored.sample(logits, [1]);
      const b = bare.sample(logits, [1], false);
      assert.equal(b.token, a.token, JSON.stringify(m));
      assert.equal(b.logprob, null);
      assert.ok(Math.abs(a.logprob - logSoftmax(scored.processed(logits, [1]))[a.token]) < 1e-12);
    }
  }
});

test('frequency and presence penalties follow the OpenAI definition', () => {
  const s = new Sampler({ ...base, temperature: 0, frequencyPenalty: 0.5, presencePenalty: 0.25 });
  const x = s.processed(logits, [1, 1, 3]);
  assert.deepEqual(Array.from(x), [1, 3 - 0.5 * 2 - 0.25, 2, 3 - 0.5 - 0.25, -1]);
  assert.equal(s.sample(logits, [1, 1, 3]).token, 3);
});

test('top-k 2 only ever draws the two most likely tokens; top-p keeps the nucleus', () => {
  const k = new Sampler({ ...base, topK: 2, seed: 1 });
  const p = new Sampler({ ...base, topP: 0.5, seed: 2 });
  for (let i = 0; i < 200; i++) {
    assert.ok([1, 3].includes(k.sample(logits, []).token));
    // probabilities: tokens 1 and 3 hold 0.42 each, so top_p 0.5 keeps both and only them
    assert.ok([1, 3].includes(p.sample(logits, []).token));
  }
});

test('the same seed gives the same draws; the empirical distribution matches softmax', () => {
  const draw = (seed: number) => {
    const s = new Sampler({ ...base, seed });
    return Array.from({ length: 4000 }, () => s.sample(logits, []).token);
  };
  const a = draw(42);
  assert.deepEqual(a, draw(42));
  assert.notDeepEqual(a, draw(43));
  const probs = Array.from(logSoftmax(logits), Math.exp);
  for (let t = 0; t < logits.length; t++) {
    const freq = a.filter((x) => x === t).length / a.length;
    assert.ok(Math.abs(freq - probs[t]) < 0.03, `token ${t}: ${freq} vs ${probs[t]}`);
  }
});

test('bad parameters are refused', () => {
  assert.throws(() => new Sampler({ ...base, temperature: -1 }), /temperature must be >= 0/);
  assert.throws(() => new Sampler({ ...base, topP: 0 }), /top_p must be in \(0, 1\]/);
});

test('topIndices returns the k largest, largest first, lowest index on ties', async () => {
  const { topIndices } = await import('../../engine/sampler.js');
  assert.deepEqual(topIndices([1, 3, 2, 3, -1], 3), [1, 3, 2]);
  assert.deepEqual(topIndices([5, 4], 5), [0, 1]);
  const big = Float64Array.from({ length: 1000 }, (_, i) => Math.sin(i * 12.9898) * 43758.5453 % 1);
  const expected = Array.from(big.keys()).sort((a, b) => big[b] - big[a] || a - b).slice(0, 10);
  assert.deepEqual(topIndices(big, 10), expected);
});

test('top-p without top-k samples exactly the nucleus at high temperature too', () => {
  const s = new Sampler({ ...base, temperature: 3, topP: 0.999, seed: 3 });
  const seen = new Set<number>();
  for (let i = 0; i < 3000; i++) seen.add(s.sample(logits, []).token);
  // At temperature 3 every token carries > 0.1 % of the mass: the nucleus holds all five.
  assert.deepEqual([...seen].sort(), [0, 1, 2, 3, 4]);
});

test('sampling over a 151936-token vocabulary (Qwen2.5 size): every mode draws a token, none overflows the stack', () => {
  const logits = new Float32Array(151_936).fill(-5);
  logits[151_000] = 20; // e^25 times likelier than any other token
  for (const params of [
    { temperature: 1, topP: 1, topK: 0 }, { temperature: 0.7, topP: 0.9, topK: 0 }, { temperature: 1, topP: 1, topK: 40 },
    { temperature: 0, topP: 1, topK: 0, logitBias: { 5: 1 } },
  ]) {
    const s = new Sampler({ ...DEFAULT_SAMPLING, ...params, seed: 1 });
    const { token, logprob } = s.sample(logits, []);
    assert.equal(token, 151_000, JSON.stringify(params));
    assert.ok(logprob! > -1e-5 && logprob! <= 0, `logprob ${logprob}`); // the others hold 151935 e^-25 ~ 2e-6
  }
});
