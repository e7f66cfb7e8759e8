import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import {
  findLlama2cFiles, llama2cFloatCount, loadLlama2cModel, permuteRopeRows, readLlama2cHeader, unpermuteRopeRows,
} from '../../models/llama2c.js';
import { W } from '../helpers/llama-names.js';
import { randn, rng } from '../helpers/tiny-model.js';
import {
  STORIES_BIN, STORIES_DIR, TOK512, assertLoadError, matVec, ropeAdjacent, ropeHalf, tempDir, writeLlama2cCheckpoint,
  type RawLlama2cHeader,
} from './helpers.js';

test('stories260K: header, config and Hugging Face weight names', () => {
  const h = readLlama2cHeader(STORIES_BIN);
  assert.deepEqual(h, { dim: 64, hiddenDim: 172, nLayers: 5, nHeads: 8, nKvHeads: 4, vocabSize: 512, seqLen: 512, sharedClassifier: true });
  assert.equal(28 + 4 * llama2cFloatCount(h), 1056540);
  const model = loadLlama2cModel(STORIES_DIR);
  assert.equal(model.id, 'stories260K');
  assert.equal(model.format, 'llama2c');
  assert.equal(model.dir, path.resolve(STORIES_DIR));
  assert.deepEqual(model.config, {
    architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: 64, intermediate_size: 172,
    num_hidden_layers: 5, num_attention_heads: 8, num_key_value_heads: 4, head_dim: 8, vocab_size: 512,
    max_position_embeddings: 512, norm: 'rms', norm_eps: 1e-5, block: 'sequential', gated_mlp: true, hidden_act: 'silu',
    positions: { kind: 'rotary', rope_theta: 10000, rotary_dim: 8, rope_scaling: null }, qk_norm: null,
    sliding_window: null, layer_types: Array(5).fill('full_attention'), tie_word_embeddings: true,
    bos_token_id: 1, eos_token_id: 2, eos_token_ids: [2, 1],
  });
  // llama2.c's run.c ends a sample at BOS (the story separator); EOS 2 stays the primary id.
  assert.deepEqual([model.tokenizer.eosTokenId, model.tokenizer.eosTokenIds], [2, [2, 1]]);
  assert.equal(model.weights.size, 1 + 5 * 9 + 1);
  assert.equal(model.weights.has(W.lmHead), false);
  const parameters = [...model.weights.values()].reduce((n, t) => n + t.data.length, 0);
  assert.equal(parameters, 260032); // PROTOCOL.md section 6
  assert.deepEqual(model.weights.get(W.q(0))!.shape, [64, 64]);
  assert.deepEqual(model.weights.get(W.k(4))!.shape, [32, 64]);
  assert.deepEqual(model.weights.get(W.down(2))!.shape, [64, 172]);
  assert.deepEqual(model.weights.get(W.attnNorm(3))!.shape, [64]);
  assert.deepEqual(model.tokenizer.encode('Once upon a time'), [1, 403, 407, 261, 378]);
});

test('stories260K: tensors come from the documented offsets, wq/wk rows permuted per head', () => {
  const model = loadLlama2cModel(STORIES_BIN);
  const file = fs.readFileSync(STORIES_BIN);
  const floats = new Float32Array(file.buffer.slice(file.byteOffset + 28, file.byteOffset + file.length));
  const [d, L, V, kv, hidden, hd] = [64, 5, 512, 32, 172, 8];
  let offset = 0;
  const take = (n: number) => { const s = floats.subarray(offset, offset + n); offset += n; return s; };
  assert.deepEqual(model.weights.get(W.embed)!.data, take(V * d));
  const rmsAtt = take(L * d);
  const wq = take(L * d * d);
  const wk = take(L * kv * d);
  const wv = take(L * kv * d);
  const wo = take(L * d * d);
  const rmsFfn = take(L * d);
  const w1 = take(L * hidden * d);
  const w2 = take(L * d * hidden);
  const w3 = take(L * hidden * d);
  const rmsFinal = take(d);
  for (let l = 0; l < L; l++) {
    assert.deepEqual(model.weights.get(W.attnNorm(l))!.data, rmsAtt.subarray(l * d, (l + 1) * d));
    assert.deepEqual(model.weights.get(W.v(l))!.data, wv.subarray(l * kv * d, (l + 1) * kv * d));
    assert.deepEqual(model.weights.get(W.o(l))!.data, wo.subarray(l * d * d, (l + 1) * d * d));
    assert.deepEqual(model.weights.get(W.mlpNorm(l))!.data, rmsFfn.subarray(l * d, (l + 1) * d));
    assert.deepEqual(model.weights.get(W.gate(l))!.data, w1.subarray(l * hidden * d, (l + 1) * hidden * d));
    assert.deepEqual(model.weights.get(W.down(l))!.data, w2.subarray(l * d * hidden, (l + 1) * d * hidden));
    assert.deepEqual(model.weights.get(W.up(l))!.data, w3.subarray(l * hidden * d, (l + 1) * hidden * d));
    // HF row h*hd + a*hd/2 + i is llama2.c row h*hd + 2i + a.
    const q = model.weights.get(W.q(l))!.data;
    const k = model.weights.get(W.k(l))!.data;
    for (const [hf, raw, heads] of [[q, wq.subarray(l * d * d), 8], [k, wk.subarray(l * kv * d), 4]] as const) {
      for (let h = 0; h < heads; h++) {
        for (let i = 0; i < hd / 2; i++) {
          for (let a = 0; a < 2; a++) {
            const hfRow = h * hd + a * (hd / 2) + i;
            const rawRow = h * hd + 2 * i + a;
            assert.deepEqual(hf.subarray(hfRow * d, (hfRow + 1) * d), raw.subarray(rawRow * d, (rawRow + 1) * d));
          }
        }
      }
    }
  }
  assert.deepEqual(model.weights.get(W.finalNorm)!.data, rmsFinal);
  assert.equal(offset + 2 * 512 * 4, floats.length); // then only the two RoPE tables
});

test('permuteRopeRows is a permutation of rows, undone by unpermuteRopeRows', () => {
  const [heads, hd, cols] = [3, 6, 2];
  // Row r holds [r, -r]: after permuting, every row index appears exactly once.
  const w = Float32Array.from({ length: heads * hd * cols }, (_, i) => (i % cols === 0 ? 1 : -1) * Math.floor(i / cols));
  const p = permuteRopeRows(w, heads, hd, cols);
  const rows = Array.from({ length: heads * hd }, (_, r) => p[r * cols]!);
  assert.deepEqual([...rows].sort((a, b) => a - b), Array.from({ length: heads * hd }, (_, r) => r));
  assert.deepEqual(rows.slice(0, hd), [0, 2, 4, 1, 3, 5]);
  assert.deepEqual(rows.slice(hd, 2 * hd), [6, 8, 10, 7, 9, 11]);
  for (let r = 0; r < heads * hd; r++) assert.equal(p[r * cols + 1], -p[r * cols]!);
  assert.deepEqual(unpermuteRopeRows(p, heads, hd, cols), w);
  assert.throws(() => permuteRopeRows(new Float32Array(10), 1, 5, 2), /even head_dim/);
});

test('half-layout RoPE on permuted rows equals adjacent-pair RoPE on the original rows', () => {
  // One attention layer: 4 query heads, 2 KV heads (GQA), head_dim 8, dim 32.
  const [heads, kvHeads, hd, d] = [4, 2, 8, 32];
  const r = rng(7);
  const wq = randn(heads * hd * d, 0.3, r);
  const wk = randn(kvHeads * hd * d, 0.3, r);
  const wqHf = permuteRopeRows(wq, heads, hd, d);
  const wkHf = permuteRopeRows(wk, kvHeads, hd, d);
  // The row permutation of one head, on a float64 vector: out[a*hd/2 + i] = v[2i + a].
  const perm = (v: Float64Array) => Float64Array.from({ length: hd }, (_, j) => v[2 * (j % (hd / 2)) + Math.floor(j / (hd / 2))]!);
  for (const [posQ, posK] of [[0, 0], [1, 0], [5, 3], [17, 17], [300, 42]] as const) {
    const xq = Float64Array.from(randn(d, 1, r));
    const xk = Float64Array.from(randn(d, 1, r));
    const q = matVec(wq, heads * hd, d, xq);
    const k = matVec(wk, kvHeads * hd, d, xk);
    const qHf = matVec(wqHf, heads * hd, d, xq);
    const kHf = matVec(wkHf, kvHeads * hd, d, xk);
    for (let h = 0; h < heads; h++) {
      const g = Math.floor(h / (heads / kvHeads));
      const qa = ropeAdjacent(q.subarray(h * hd, (h + 1) * hd), posQ);
      const ka = ropeAdjacent(k.subarray(g * hd, (g + 1) * hd), posK);
      const qh = ropeHalf(qHf.subarray(h * hd, (h + 1) * hd), posQ);
      const kh = ropeHalf(kHf.subarray(g * hd, (g + 1) * hd), posK);
      // Same rotated vectors up to the row permutation...
      perm(qa).forEach((v, i) => assert.ok(Math.abs(v - qh[i]!) < 1e-9, `q head ${h} pos ${posQ} [${i}]`));
      perm(ka).forEach((v, i) => assert.ok(Math.abs(v - kh[i]!) < 1e-9, `k head ${g} pos ${posK} [${i}]`));
      // ...so the attention scores are identical.
      const dot = (a: Float64Array, b: Float64Array) => a.reduce((s, v, i) => s + v * b[i]!, 0);
      assert.ok(Math.abs(dot(qa, ka) - dot(qh, kh)) < 1e-9);
    }
    // Sanity: without the permutation the two layouts disagree.
    const wrong = ropeHalf(q.subarray(0, hd), posQ + 1);
    const right = ropeAdjacent(q.subarray(0, hd), posQ + 1);
    assert.ok(wrong.some((v, i) => Math.abs(v - right[i]!) > 1e-6));
  }
});

/** A tiny checkpoint whose every float is its own index (so each tensor's source is visible). */
function tinyCheckpoint(dir: string, h: RawLlama2cHeader): Float32Array {
  const count = llama2cFloatCount({ ...h, vocabSize: Math.abs(h.vocabSize), sharedClassifier: h.vocabSize > 0 });
  const floats = Float32Array.from({ length: count }, (_, i) => i);
  writeLlama2cCheckpoint(path.join(dir, 'model.bin'), h, floats);
  fs.copyFileSync(TOK512, path.join(dir, 'tok512.bin'));
  return floats;
}

test('an untied classifier (negative vocab_size) becomes lm_head.weight', () => {
  const dir = tempDir();
  const h = { dim: 16, hiddenDim: 24, nLayers: 2, nHeads: 4, nKvHeads: 2, vocabSize: -512, seqLen: 32 };
  const floats = tinyCheckpoint(dir, h);
  const model = loadLlama2cModel(dir);
  assert.equal(model.config.tie_word_embeddings, false);
  const head = model.weights.get(W.lmHead)!;
  assert.deepEqual(head.shape, [512, 16]);
  assert.deepEqual(head.data, floats.subarray(floats.length - 512 * 16));
  assert.equal(model.weights.get(W.finalNorm)!.data[0], floats.length - 512 * 16 - 32 * 4 - 16);
  assert.equal(model.config.max_position_embeddings, 32);
});

test('bad llama2.c inputs name the file and the problem', () => {
  const dir = tempDir();
  const bytes = fs.readFileSync(STORIES_BIN);

  assertLoadError(() => loadLlama2cModel(path.join(dir, 'absent')), path.join(dir, 'absent'), 'no such file');

  const noTok = path.join(dir, 'no-tokenizer');
  fs.mkdirSync(noTok);
  fs.copyFileSync(STORIES_BIN, path.join(noTok, 'stories260K.bin'));
  assertLoadError(() => loadLlama2cModel(noTok), noTok, 'no llama2.c tokenizer', 'stories260K.bin');

  const truncated = path.join(dir, 'truncated');
  fs.mkdirSync(truncated);
  fs.writeFileSync(path.join(truncated, 'stories260K.bin'), bytes.subarray(0, 500000));
  fs.copyFileSync(TOK512, path.join(truncated, 'tok512.bin'));
  assertLoadError(() => loadLlama2cModel(truncated), path.join(truncated, 'stories260K.bin'), 'truncated', '500000 bytes', 'implies 1056540');

  const longer = path.join(dir, 'longer');
  fs.mkdirSync(longer);
  fs.writeFileSync(path.join(longer, 'stories260K.bin'), Buffer.concat([bytes, Buffer.alloc(8)]));
  fs.copyFileSync(TOK512, path.join(longer, 'tok512.bin'));
  assertLoadError(() => loadLlama2cModel(longer), path.join(longer, 'stories260K.bin'), '1056548 bytes', 'implies 1056540');

  const nonsense = path.join(dir, 'nonsense');
  fs.mkdirSync(nonsense);
  const garbage = Buffer.from(bytes);
  garbage.writeInt32LE(-5, 0);
  fs.writeFileSync(path.join(nonsense, 'm.bin'), garbage);
  fs.copyFileSync(TOK512, path.join(nonsense, 'tok512.bin'));
  assertLoadError(() => loadLlama2cModel(nonsense), path.join(nonsense, 'm.bin'), 'not a llama2.c checkpoint', 'dim=-5');
  garbage.writeInt32LE(64, 0);
  garbage.writeInt32LE(3, 16); // n_kv_heads 3 does not divide 8 heads
  fs.writeFileSync(path.join(nonsense, 'm.bin'), garbage);
  assertLoadError(() => loadLlama2cModel(nonsense), path.join(nonsense, 'm.bin'), 'n_kv_heads=3', 'multiple of n_kv_heads');
  garbage.writeInt32LE(0x616b3432, 0);
  garbage.writeInt32LE(2, 4);
  fs.writeFileSync(path.join(nonsense, 'm.bin'), garbage);
  assertLoadError(() => loadLlama2cModel(nonsense), path.join(nonsense, 'm.bin'), 'version 2 is not supported');
  fs.writeFileSync(path.join(nonsense, 'm.bin'), Buffer.alloc(10));
  assertLoadError(() => loadLlama2cModel(nonsense), path.join(nonsense, 'm.bin'), '10 bytes', '28-byte');

  const two = path.join(dir, 'two');
  fs.mkdirSync(two);
  for (const n of ['a.bin', 'b.bin', 'tok512.bin']) fs.copyFileSync(n === 'tok512.bin' ? TOK512 : STORIES_BIN, path.join(two, n));
  assertLoadError(() => findLlama2cFiles(two), two, 'several llama2.c checkpoints (a.bin, b.bin)');
  assert.equal(loadLlama2cModel(path.join(two, 'b.bin')).id, 'two'); // a .bin path picks one

  // The tokenizer must have exactly vocab_size entries.
  const mismatch = path.join(dir, 'mismatch');
  fs.mkdirSync(mismatch);
  tinyCheckpoint(mismatch, { dim: 16, hiddenDim: 24, nLayers: 1, nHeads: 4, nKvHeads: 2, vocabSize: 600, seqLen: 8 });
  assertLoadError(() => loadLlama2cModel(mismatch), path.join(mismatch, 'tok512.bin'), 'truncated', 'vocab_size is 600');
});
