/**
 * Lazily loaded weights (models/lazy-tensor.ts): file-backed tensors in every readable dtype,
 * row ranges, computed tensors, and a Hugging Face directory loaded lazily (the default) against
 * the same directory read eagerly: same values, same logits, nothing read at load time.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { loadHuggingFaceModel, saveHuggingFaceModel } from '../../models/huggingface.js';
import { byteViews } from '../../models/bytes.js';
import { derivedTensor, fileTensor, isLazy, readFloat32, tensorLength, tensorRows } from '../../models/lazy-tensor.js';
import { loadModel, hashModelWeights } from '../../models/load.js';
import { fromBfloat16Array, fromFloat16Array, readSafetensors, toBfloat16Array, toFloat16Array, writeSafetensors } from '../../models/safetensors.js';
import { synthModel } from '../../models/synth.js';
import { ModelLoadError, type LoadedModel } from '../../models/types.js';
import { DecoderSession } from '../../runtime/decoder-session.js';
import { randn, rng } from '../helpers/tiny-model.js';
import { tempDir } from './helpers.js';

const bits = (a: Float32Array) => Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length));

test('file tensors read F32, F16, BF16 and F64 exactly as the eager reader, across conversion chunks', () => {
  const dir = tempDir();
  // 4 Mi + 5 elements: the F16/BF16/F64 conversion runs in 4 Mi-element chunks.
  const n = (1 << 22) + 5;
  const values = randn(n, 3, rng(7));
  values[0] = -0;
  values[1] = 65504;
  values[n - 1] = 2 ** -20;
  const f32 = path.join(dir, 'f32.safetensors');
  writeSafetensors(f32, new Map([['x', { shape: [n], data: values }]]));
  const header = 8 + (fs.readFileSync(f32).readUInt32LE(0));
  assert.deepEqual(bits(readFloat32(f32, header, n, 'F32')), bits(values));
  for (const dtype of ['F16', 'BF16'] as const) {
    const file = path.join(dir, `${dtype}.safetensors`);
    writeSafetensors(file, new Map([['x', { shape: [n], data: values }]]), { dtype });
    const lazy = readSafetensors(file, undefined, { lazy: true }).weights.get('x')!;
    assert.ok(isLazy(lazy));
    assert.equal(lazy.dtype, dtype === 'F16' ? 'float16' : 'bfloat16');
    const expected = dtype === 'F16' ? fromFloat16Array(toFloat16Array(values)) : fromBfloat16Array(toBfloat16Array(values));
    assert.deepEqual(bits(lazy.data), bits(expected), dtype);
    assert.deepEqual(bits(readSafetensors(file).weights.get('x')!.data), bits(expected), `${dtype} eager`);
  }
  // F64: rounded to nearest float32, like Float32Array.from.
  const wide = Float64Array.from({ length: 1000 }, (_, i) => Math.sin(i) * 1e3 + 1 / 3);
  const f64 = path.join(dir, 'f64.bin');
  fs.writeFileSync(f64, Buffer.concat([Buffer.alloc(16), Buffer.from(wide.buffer)]));
  assert.deepEqual(bits(fileTensor([10, 100], { file: f64, offset: 16, dtype: 'F64' }).data), bits(Float32Array.from(wide)));
});

test('a lazy tensor reads on use: fresh arrays, a changed file shows, a missing file names itself', async () => {
  const dir = tempDir();
  const file = path.join(dir, 'w.safetensors');
  const a = randn(12, 1, rng(1));
  writeSafetensors(file, new Map([['w', { shape: [3, 4], data: a }]]));
  const t = readSafetensors(file, undefined, { lazy: true }).weights.get('w')!;
  assert.equal(tensorLength(t), 12);
  const first = t.data;
  assert.deepEqual(bits(first), bits(a));
  first[0] = 123; // the caller's array: no later read sees it
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(bits(t.data), bits(a));
  // Same-sized new contents: the next read returns them (nothing was kept from the first read).
  const b = randn(12, 1, rng(2));
  writeSafetensors(file, new Map([['w', { shape: [3, 4], data: b }]]));
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(bits(t.data), bits(b));
  fs.rmSync(file);
  await new Promise((r) => setImmediate(r));
  assert.throws(() => t.data, (e: unknown) => e instanceof ModelLoadError && e.message.includes(file) && /moved or deleted/.test(e.message));
});

test('row ranges of a file tensor read only those rows; computed tensors compute on use', () => {
  const dir = tempDir();
  const file = path.join(dir, 'w.safetensors');
  const a = randn(6 * 5, 1, rng(3));
  writeSafetensors(file, new Map([['w', { shape: [6, 5], data: a }]]), { dtype: 'BF16' });
  const lazy = readSafetensors(file, undefined, { lazy: true }).weights.get('w')!;
  const rows = tensorRows(lazy, 2, 5);
  assert.ok(isLazy(rows) && rows.source?.offset === (lazy as { source?: { offset: number } }).source!.offset + 2 * 5 * 2);
  assert.deepEqual(rows.shape, [3, 5]);
  assert.deepEqual(bits(rows.data), bits(lazy.data.slice(10, 25)));
  const eager = { shape: [6, 5], data: a };
  assert.deepEqual(bits(tensorRows(eager, 1, 2).data), bits(a.slice(5, 10)));
  assert.throws(() => tensorRows(eager, 4, 7), RangeError);
  let calls = 0;
  const doubled = derivedTensor([6, 5], () => {
    calls++;
    return a.map((v) => 2 * v);
  });
  assert.equal(calls, 0);
  assert.equal(tensorLength(doubled), 30);
  assert.equal(doubled.data[7], 2 * a[7]);
  assert.equal(calls, 1);
  assert.equal(doubled.data[8], 2 * a[8]); // the last tensor read is kept until the event loop turns
  assert.equal(calls, 1);
  assert.throws(() => derivedTensor([2], () => new Float32Array(3)).data, /produced 3 values/);
});

/** stories-free fixture: the synthetic tiny preset (hidden 64, 2 layers, a real 32000-token tokenizer). */
function tinySynth(): LoadedModel {
  return synthModel('tiny', 3);
}

async function logitsOf(model: LoadedModel, tokens: number[]): Promise<Float32Array> {
  const s = await DecoderSession.create(model, { logits: 'all', threads: 1 });
  try {
    return (await s.step([{ cache: s.newCache(), tokens }]))[0].slice();
  } finally {
    await s.release();
  }
}

test('a sharded bf16 checkpoint loaded lazily gives the same weights, hash and logits as read eagerly', async () => {
  const dir = path.join(tempDir(), 'tiny-bf16');
  saveHuggingFaceModel(tinySynth(), dir, { dtype: 'bfloat16', maxShardBytes: 2 * 2 ** 20 });
  const shards = fs.readdirSync(dir).filter((f) => f.endsWith('.safetensors'));
  assert.ok(shards.length >= 3, `${shards.length} shards`);
  const lazy = loadModel(dir);
  const eager = loadHuggingFaceModel(dir, { lazy: false });
  assert.ok([...lazy.weights.values()].every(isLazy), 'loadModel keeps every tensor on disk');
  assert.ok([...lazy.weights.values()].every((t) => t.dtype === 'bfloat16'), 'in its on-disk dtype');
  assert.ok(![...eager.weights.values()].some(isLazy));
  for (const [name, t] of eager.weights) assert.deepEqual(bits(lazy.weights.get(name)!.data), bits(t.data), name);
  assert.equal(hashModelWeights(lazy), hashModelWeights(eager));
  const tokens = [1, 450, 4996, 17354, 1701, 432, 17204, 975, 278, 17366, 11203];
  assert.deepEqual(bits(await logitsOf(lazy, tokens)), bits(await logitsOf(eager, tokens)));
});

test('loading reads no tensor data: shards rewritten after load are what a lazy model sees', () => {
  const dir = path.join(tempDir(), 'tiny-f32');
  const model = tinySynth();
  saveHuggingFaceModel(model, dir);
  const lazy = loadModel(dir);
  // Same names and shapes, other values: only a model that had read nothing yet sees them.
  const other = synthModel('tiny', 4);
  writeSafetensors(path.join(dir, 'model.safetensors'), other.weights, { metadata: { format: 'pt' } });
  const name = 'model.layers.1.mlp.down_proj.weight';
  assert.deepEqual(bits(lazy.weights.get(name)!.data), bits(other.weights.get(name)!.data));
  assert.notDeepEqual(bits(lazy.weights.get(name)!.data), bits(model.weights.get(name)!.data));
});

test('byteViews covers a typed array in pieces without copying (Node caps one Uint8Array at 2^32 bytes)', () => {
  const a = Float32Array.of(1, 2, 3, 4, 5);
  const sub = a.subarray(1, 4);
  const views = [...byteViews(sub, 5)];
  assert.deepEqual(views.map((v) => v.byteLength), [5, 5, 2]);
  assert.deepEqual(Buffer.concat(views), Buffer.from(sub.buffer, sub.byteOffset, sub.byteLength));
  views[0]![3] = 0; // a view, not a copy: the high byte of 2.0 (0x40000000)
  assert.equal(a[1], 0);
  assert.deepEqual([...byteViews(new Float32Array(0))], []);
  assert.throws(() => [...byteViews(a, 0)], RangeError);
});
