/**
 * The ONNX graph against the plain TypeScript reference forward, on random models with odd
 * shapes (GQA with 2 query heads per KV head, head_dim 8 and 6), dense and sliced; and the KV
 * cache / batching invariants of DecoderSession.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { LoadedModel } from '../../models/types.js';
import { W } from '../helpers/llama-names.js';
import * as ort from 'onnxruntime-node';
import { keyCacheLayout } from '../../models/onnx/contract.js';
import { buildDecoderGraph } from '../../models/onnx/decoder-graph.js';
import { referenceForward } from '../helpers/llama-reference.js';
import { DecoderSession, relayoutRows, residentCapacity } from '../../runtime/decoder-session.js';
import { randn, rng, tinyModel } from '../helpers/tiny-model.js';

const SHAPE = { hidden: 32, layers: 2, heads: 4, kvHeads: 2, intermediate: 40, vocab: 50, context: 64 };

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

async function allLogits(model: LoadedModel, tokens: number[]): Promise<Float32Array> {
  const s = await DecoderSession.create(model, { logits: 'all', threads: 1 });
  try {
    return (await s.step([{ cache: s.newCache(), tokens }]))[0];
  } finally {
    await s.release();
  }
}

/** Slices a dense tiny model with random (not PCA) orthogonal-free projections: any shapes. */
function randomSliced(dense: LoadedModel, dPrime: number, seed: number): LoadedModel {
  const r = rng(seed);
  const d = dense.config.hidden_size;
  const weights = new Map(dense.weights);
  const L = dense.config.num_hidden_layers;
  const cols = (name: string, width: number) => {
    const t = weights.get(name)!;
    const [o] = t.shape;
    weights.set(name, { shape: [o, width], data: randn(o * width, 0.3, r) });
  };
  const rows = (name: string, width: number) => {
    const t = weights.get(name)!;
    weights.set(name, { shape: [width, t.shape[1]], data: randn(width * t.shape[1], 0.3, r) });
  };
  weights.set(W.embed, { shape: [dense.config.vocab_size, dPrime], data: randn(dense.config.vocab_size * dPrime, 1, r) });
  for (let l = 0; l < L; l++) {
    weights.delete(W.attnNorm(l));
    weights.delete(W.mlpNorm(l));
    for (const n of [W.q(l), W.k(l), W.v(l)]) cols(n, dPrime);
    rows(W.o(l), dPrime);
    for (const n of [W.gate(l), W.up(l)]) cols(n, dPrime);
    const out = l === L - 1 ? d : dPrime;
    rows(W.down(l), out);
    weights.set(W.attnShortcut(l), { shape: [dPrime, dPrime], data: randn(dPrime * dPrime, 0.3, r) });
    weights.set(W.mlpShortcut(l), { shape: [dPrime, out], data: randn(dPrime * out, 0.3, r) });
  }
  weights.set(W.lmHead, { shape: [dense.config.vocab_size, d], data: randn(dense.config.vocab_size * d, 0.2, r) });
  weights.delete(W.finalNorm);
  return { ...dense, weights, config: { ...dense.config, tie_word_embeddings: false, fused_norms: true } };
}

test('graph logits equal the reference forward (dense, GQA, untied head)', async () => {
  const m = tinyModel(SHAPE, 3);
  const tokens = [1, 5, 7, 9, 3, 44, 12];
  const got = await allLogits(m, tokens);
  const ref = referenceForward(m, tokens);
  assert.ok(maxAbsDiff(got, ref.flatMap((r) => Array.from(r))) < 1e-4);
});

test('graph logits equal the reference forward (tied head, head_dim 6)', async () => {
  const m = tinyModel({ ...SHAPE, hidden: 24, tied: true }, 4);
  assert.equal(m.config.head_dim, 6);
  const tokens = [1, 2, 3, 4, 5];
  const got = await allLogits(m, tokens);
  assert.ok(maxAbsDiff(got, referenceForward(m, tokens).flatMap((r) => Array.from(r))) < 1e-4);
});

test('sliced shapes: residual narrower than the norm divisor, shortcuts, full-width last layer', async () => {
  const m = randomSliced(tinyModel(SHAPE, 5), 24, 9);
  const tokens = [3, 1, 4, 1, 5, 9, 2, 6];
  const got = await allLogits(m, tokens);
  assert.ok(maxAbsDiff(got, referenceForward(m, tokens).flatMap((r) => Array.from(r))) < 1e-4);
});

test('KV-cache decode equals full recompute, token by token', async () => {
  const m = tinyModel(SHAPE, 6);
  const tokens = [1, 8, 13, 21, 34, 2, 17, 19, 23];
  const full = await allLogits(m, tokens);
  const s = await DecoderSession.create(m, { threads: 1 });
  const cache = s.newCache();
  const V = SHAPE.vocab;
  let last = (await s.step([{ cache, tokens: tokens.slice(0, 4) }]))[0];
  assert.ok(maxAbsDiff(last, full.subarray(3 * V, 4 * V)) < 1e-4);
  for (let t = 4; t < tokens.length; t++) {
    last = (await s.step([{ cache, tokens: [tokens[t]] }]))[0];
    assert.ok(maxAbsDiff(last, full.subarray(t * V, (t + 1) * V)) < 1e-4, `position ${t}`);
  }
  assert.equal(cache.length, tokens.length);
  await s.release();
});

test('a sequence batched with others (different past and new lengths) gets its solo logits', async () => {
  const m = tinyModel(SHAPE, 7);
  const s = await DecoderSession.create(m, { threads: 1 });
  const prompts = [[1, 2, 3], [1, 9, 8, 7, 6, 5], [1, 40]];
  const solo: Float32Array[] = [];
  for (const p of prompts) {
    const c = s.newCache();
    await s.step([{ cache: c, tokens: p.slice(0, -1) }]);
    solo.push((await s.step([{ cache: c, tokens: [p[p.length - 1], 11, 12].slice(0, 1 + (p.length % 3)) }]))[0]);
  }
  const caches = prompts.map(() => s.newCache());
  for (let i = 0; i < prompts.length; i++) await s.step([{ cache: caches[i], tokens: prompts[i].slice(0, -1) }]);
  const batched = await s.step(prompts.map((p, i) => ({ cache: caches[i], tokens: [p[p.length - 1], 11, 12].slice(0, 1 + (p.length % 3)) })));
  for (let i = 0; i < prompts.length; i++) assert.ok(maxAbsDiff(batched[i], solo[i]) < 1e-5, `sequence ${i}`);
  await s.release();
});

test('step refuses to run past the context length', async () => {
  const m = tinyModel({ ...SHAPE, context: 8 }, 8);
  const s = await DecoderSession.create(m, { threads: 1 });
  const c = s.newCache();
  await s.step([{ cache: c, tokens: [1, 2, 3, 4, 5, 6, 7, 8] }]);
  await assert.rejects(s.step([{ cache: c, tokens: [9] }]), /exceeds the context length 8/);
  await s.release();
});

test('float16 graph: logits within 2e-2 of float32 on stories260K, greedy text identical', async () => {
  const { loadModel } = await import('../../models/load.js');
  const { generate } = await import('../../engine/generate.js');
  const model = loadModel('models/stories260K');
  const f32 = await DecoderSession.create(model, { threads: 1 });
  const f16 = await DecoderSession.create(model, { threads: 1, dtype: 'float16' });
  const tokens = model.tokenizer.encode('Once upon a time');
  const a = (await f32.step([{ cache: f32.newCache(), tokens }]))[0];
  const b = (await f16.step([{ cache: f16.newCache(), tokens }]))[0];
  const err = maxAbsDiff(a, b);
  // float16 keeps ~11 significant bits: |logit| up to ~18 gives steps of ~1e-2.
  assert.ok(err < 2e-2, `max |fp16 - fp32| = ${err}`);
  assert.ok(err > 0, 'the float16 graph really runs in float16');
  const greedy = { temperature: 0, topP: 1, topK: 0, presencePenalty: 0, frequencyPenalty: 0 };
  const t32 = await generate(f32, model.tokenizer, tokens, { maxTokens: 30, sampling: greedy });
  const t16 = await generate(f16, model.tokenizer, tokens, { maxTokens: 30, sampling: greedy });
  assert.equal(t16.text, t32.text);
  await f32.release();
  await f16.release();
});

test('resident KV rows: sequences joining, leaving, reordering and growing past the capacity keep their solo logits', async () => {
  const m = tinyModel({ ...SHAPE, context: 128 }, 9);
  const batched = await DecoderSession.create(m, { threads: 1 });
  const solo = await DecoderSession.create(m, { threads: 1 });
  const r = rng(21);
  const n = 6;
  const bCaches = Array.from({ length: n }, () => batched.newCache());
  const sCaches = Array.from({ length: n }, () => solo.newCache());
  const tok = () => Math.floor(r() * SHAPE.vocab);
  // Prefill everyone (fresh sequences: no past), in two groups.
  for (const group of [[0, 1, 2], [3, 4, 5]]) {
    const prompts = group.map((i) => Array.from({ length: 2 + i }, tok));
    const got = await batched.step(group.map((i, k) => ({ cache: bCaches[i], tokens: prompts[k] })));
    for (let k = 0; k < group.length; k++) {
      const want = (await solo.step([{ cache: sCaches[group[k]], tokens: prompts[k] }]))[0];
      assert.ok(maxAbsDiff(got[k], want) < 1e-5);
    }
  }
  // 40 steps of random subsets in random orders, 1-3 new tokens each: rows are kept, moved,
  // copied in, and the capacity (16-position headroom) is exceeded several times.
  for (let step = 0; step < 40; step++) {
    const members = Array.from({ length: n }, (_, i) => i).filter(() => r() < 0.7);
    if (members.length === 0) continue;
    members.sort(() => r() - 0.5);
    const news = members.map(() => Array.from({ length: 1 + Math.floor(r() * 3) }, tok));
    const got = await batched.step(members.map((i, k) => ({ cache: bCaches[i], tokens: news[k] })));
    for (let k = 0; k < members.length; k++) {
      const want = (await solo.step([{ cache: sCaches[members[k]], tokens: news[k] }]))[0];
      assert.ok(maxAbsDiff(got[k], want) < 1e-5, `step ${step}, sequence ${members[k]}`);
    }
  }
  assert.ok(bCaches.some((cc) => cc.length > 40), 'sequences grew well past the first capacity');
  await batched.release();
  await solo.release();
});

test('resident KV rows shrink to the batch once its longest sequence leaves, logits unchanged', async () => {
  for (const attention of ['onnx-op', 'primitives'] as const) {
    const m = tinyModel({ ...SHAPE, context: 128 }, 12);
    const batched = await DecoderSession.create(m, { threads: 1, attention });
    const solo = await DecoderSession.create(m, { threads: 1, attention });
    const r = rng(5);
    const tok = () => Math.floor(r() * SHAPE.vocab);
    const [long, short] = [batched.newCache(), batched.newCache()];
    const [soloLong, soloShort] = [solo.newCache(), solo.newCache()];
    const longPrompt = Array.from({ length: 70 }, tok);
    const shortPrompt = Array.from({ length: 3 }, tok);
    await batched.step([{ cache: long, tokens: longPrompt }, { cache: short, tokens: shortPrompt }]);
    await solo.step([{ cache: soloLong, tokens: longPrompt }]);
    await solo.step([{ cache: soloShort, tokens: shortPrompt }]);
    // Both decode: the past holds the long sequence (71 positions needed).
    let next = [tok(), tok()];
    await batched.step([{ cache: long, tokens: [next[0]] }, { cache: short, tokens: [next[1]] }]);
    await solo.step([{ cache: soloLong, tokens: [next[0]] }]);
    await solo.step([{ cache: soloShort, tokens: [next[1]] }]);
    assert.equal(batched.pastCapacity, residentCapacity(71, 128));
    // The long one leaves: the short one (5 positions needed) gets a past sized for itself.
    for (let i = 0; i < 3; i++) {
      next = [tok()];
      const got = (await batched.step([{ cache: short, tokens: next }]))[0];
      const want = (await solo.step([{ cache: soloShort, tokens: next }]))[0];
      assert.ok(maxAbsDiff(got, want) < 1e-5, `${attention}, step ${i}`);
      assert.equal(batched.pastCapacity, residentCapacity(short.length, 128), `${attention}: capacity after the long sequence left`);
    }
    assert.ok(batched.pastCapacity < residentCapacity(71, 128));
    await batched.release();
    await solo.release();
  }
});

test('stepGreedy: the graph\'s greedy_token equals the argmax of step\'s logits, and both grow the caches alike', async () => {
  const m = tinyModel({ ...SHAPE, context: 128 }, 14);
  const viaLogits = await DecoderSession.create(m, { threads: 1 });
  const viaGreedy = await DecoderSession.create(m, { threads: 1 });
  const argmax = (a: Float32Array) => a.reduce((best, v, i) => (v > a[best] ? i : best), 0);
  const r = rng(8);
  const n = 4;
  const a = Array.from({ length: n }, () => viaLogits.newCache());
  const g = Array.from({ length: n }, () => viaGreedy.newCache());
  const next = Array.from({ length: n }, (_, i) => Array.from({ length: 2 + 3 * i }, () => Math.floor(r() * SHAPE.vocab)));
  for (let step = 0; step < 12; step++) {
    // A different subset and order each step (rows move), prompts of different lengths first.
    const members = step === 0 ? [0, 1, 2, 3] : [0, 1, 2, 3].filter((i) => (i + step) % 3 !== 0).reverse();
    const logits = await viaLogits.step(members.map((i) => ({ cache: a[i], tokens: next[i] })));
    const tokens = await viaGreedy.stepGreedy(members.map((i) => ({ cache: g[i], tokens: next[i] })));
    assert.deepEqual(tokens, logits.map(argmax), `step ${step}`);
    members.forEach((i, k) => {
      assert.equal(g[i].length, a[i].length);
      next[i] = [tokens[k]];
    });
  }
  const perplexity = await DecoderSession.create(m, { threads: 1, logits: 'all' });
  await assert.rejects(perplexity.stepGreedy([{ cache: perplexity.newCache(), tokens: [1, 2] }]), /logits: 'last'/);
  for (const s of [viaLogits, viaGreedy, perplexity]) await s.release();
});

test('relayoutRows moves the kept rows to a new capacity in place (growing and shrinking, both key layouts)', () => {
  const r = rng(3);
  const [KV, hd, rows] = [2, 3, 5];
  for (const transposed of [false, true])
  for (const [oldCap, newCap] of [[8, 12], [12, 8], [4, 32], [32, 4]]) {
    const buf = new Float32Array(rows * KV * hd * Math.max(oldCap, newCap)).map(() => r());
    const before = buf.slice();
    const kept = [4, 0, 2].map((row) => ({ row, length: Math.min(oldCap, newCap) - row % 3 }));
    relayoutRows(buf, kept, oldCap, newCap, KV, hd, transposed);
    // Element (row, h, position, d) of a buffer of capacity cap, in either layout.
    const at = (cap: number, row: number, h: number, t: number, d: number) => (transposed ? ((row * KV + h) * hd + d) * cap + t : ((row * KV + h) * cap + t) * hd + d);
    for (const { row, length } of kept) {
      for (let h = 0; h < KV; h++) for (let t = 0; t < length; t++) for (let d = 0; d < hd; d++) {
        assert.equal(buf[at(newCap, row, h, t, d)], before[at(oldCap, row, h, t, d)], `transposed ${transposed}, ${oldCap} -> ${newCap}, row ${row} h ${h} t ${t} d ${d}`);
      }
    }
  }
});

test('a sequence that leaves the batch and rejoins, and a cleared cache prefilled again, keep their solo logits', async () => {
  const m = tinyModel({ ...SHAPE, context: 128 }, 15);
  const batched = await DecoderSession.create(m, { threads: 1 });
  const solo = await DecoderSession.create(m, { threads: 1 });
  const r = rng(6);
  const tok = () => Math.floor(r() * SHAPE.vocab);
  const b = [batched.newCache(), batched.newCache(), batched.newCache()];
  const s = [solo.newCache(), solo.newCache(), solo.newCache()];
  const both = async (members: number[], tokens: number[][], label: string) => {
    const got = await batched.step(members.map((i, k) => ({ cache: b[i], tokens: tokens[k] })));
    for (let k = 0; k < members.length; k++) {
      const want = (await solo.step([{ cache: s[members[k]], tokens: tokens[k] }]))[0];
      assert.ok(maxAbsDiff(got[k], want) < 1e-5, `${label}: sequence ${members[k]}`);
    }
  };
  await both([0, 1, 2], [[1, 2, 3], [4, 5], [6, 7, 8, 9]], 'prefill');
  for (let i = 0; i < 5; i++) await both([0, 1, 2], [[tok()], [tok()], [tok()]], `decode ${i}`);
  // Sequence 1 leaves for a while (its newest entries lived only in its row).
  for (let i = 0; i < 20; i++) await both([2, 0], [[tok()], [tok()]], `without 1, step ${i}`);
  await both([1, 0, 2], [[tok()], [tok()], [tok()]], 'sequence 1 rejoins');
  // Sequence 0's cache is cleared and prefilled alone (no past), then decodes with the others.
  b[0].clear();
  s[0].clear();
  await both([0], [[3, 1, 4, 1]], 'cleared cache prefilled');
  for (let i = 0; i < 3; i++) await both([0, 1, 2], [[tok()], [tok()], [tok()]], `after the clear, step ${i}`);
  await batched.release();
  await solo.release();
});

test('both attention kernels (opset-23 Attention, MatMul/Softmax split over past and new keys) match the reference, with a KV cache, dense and sliced', async () => {
  for (const m of [tinyModel(SHAPE, 10), randomSliced(tinyModel(SHAPE, 11), 24, 12)])
  for (const attention of ['onnx-op', 'primitives'] as const) {
    const tokens = [1, 8, 13, 21, 34, 2, 17, 19];
    const ref = referenceForward(m, tokens);
    const s = await DecoderSession.create(m, { threads: 1, attention });
    const cache = s.newCache();
    await s.step([{ cache, tokens: tokens.slice(0, 3) }]);
    for (let t = 3; t < tokens.length; t++) {
      const got = (await s.step([{ cache, tokens: [tokens[t]] }]))[0];
      assert.ok(maxAbsDiff(got, ref[t]) < 1e-4, `${attention}, position ${t}`);
    }
    await s.release();
  }
});

test('present.* fed back as past_key_values (the onnxruntime-genai loop) in each kernel\'s key layout', async () => {
  const m = tinyModel(SHAPE, 13);
  const tokens = [1, 8, 13, 21, 34, 2];
  const ref = referenceForward(m, tokens);
  const { num_hidden_layers: L, num_key_value_heads: KV, head_dim: hd } = m.config;
  for (const attention of ['onnx-op', 'primitives'] as const) {
    const built = buildDecoderGraph(m, { logits: 'last', attention });
    const session = await ort.InferenceSession.create(built.model, { externalData: [{ path: built.externalDataPath, data: built.externalData }], intraOpNumThreads: 1 });
    const transposed = keyCacheLayout(attention) === 'transposed';
    const empty = (kind: 'key' | 'value') => new ort.Tensor('float32', new Float32Array(0), kind === 'key' && transposed ? [1, KV, hd, 0] : [1, KV, 0, hd]);
    let past: Record<string, ort.Tensor> = {};
    for (let l = 0; l < L; l++) for (const kind of ['key', 'value'] as const) past[`past_key_values.${l}.${kind}`] = empty(kind);
    for (let t = 0; t < tokens.length; t++) {
      const out = await session.run({
        input_ids: new ort.Tensor('int64', BigInt64Array.of(BigInt(tokens[t])), [1, 1]),
        position_ids: new ort.Tensor('int64', BigInt64Array.of(BigInt(t)), [1, 1]),
        attention_bias: new ort.Tensor('float32', new Float32Array(t + 1), [1, 1, t + 1]),
        ...past,
      });
      assert.ok(maxAbsDiff(out.logits.data as Float32Array, ref[t]) < 1e-4, `${attention}, position ${t}`);
      const key = out['present.0.key'];
      assert.deepEqual(key.dims, transposed ? [1, KV, hd, t + 1] : [1, KV, t + 1, hd]);
      past = {};
      for (let l = 0; l < L; l++) for (const kind of ['key', 'value'] as const) past[`past_key_values.${l}.${kind}`] = out[`present.${l}.${kind}`];
    }
    await session.release();
  }
});
