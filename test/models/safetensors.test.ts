import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import {
  bfloat16BitsToFloat32, float16BitsToFloat32, float32ToBfloat16Bits, float32ToFloat16Bits,
  fromBfloat16Array, fromFloat16Array, readSafetensors, readSafetensorsHeader, readShardedSafetensors,
  ShardedSafetensorsWriter, toBfloat16Array, toFloat16Array, writeSafetensors, writeShardedSafetensors,
} from '../../models/safetensors.js';
import type { WeightMap } from '../../models/types.js';
import { randn, rng } from '../helpers/tiny-model.js';
import { assertLoadError, tempDir, writeRawSafetensors } from './helpers.js';

const bitsOf = (a: Float32Array) => Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length));

test('float16: known bit patterns, subnormals, overflow and round-to-nearest-even', () => {
  const cases: [number, number][] = [
    [1.0, 0x3c00], [-2.5, 0xc100], [65504, 0x7bff], [0.1, 0x2e66], [-0, 0x8000], [0, 0x0000],
    [2 ** -14, 0x0400], // smallest normal
    [2 ** -24, 0x0001], // smallest subnormal
    [1023 * 2 ** -24, 0x03ff], // largest subnormal
    [2 ** -25, 0x0000], // halfway between 0 and 2^-24: ties to even (0)
    [1.5 * 2 ** -25, 0x0001],
    [3 * 2 ** -25, 0x0002], // halfway between subnormals 1 and 2: ties to even (2)
    [1 + 2 ** -11, 0x3c00], // halfway between 1 and 1 + 2^-10: ties to even
    [1 + 3 * 2 ** -11, 0x3c02], // halfway between 0x3c01 and 0x3c02: ties to even
    [1 + 2 ** -11 + 2 ** -20, 0x3c01], // just above halfway rounds up
    [65519, 0x7bff], [65520, 0x7c00], // 65520 is halfway to 65536: even is Infinity
    [1e6, 0x7c00], [-Infinity, 0xfc00], [2 ** -30, 0x0000],
  ];
  for (const [value, bits] of cases) {
    assert.equal(float32ToFloat16Bits(value), bits, `${value} -> 0x${float32ToFloat16Bits(value).toString(16)}`);
  }
  assert.ok(Number.isNaN(float16BitsToFloat32(float32ToFloat16Bits(NaN))));
  assert.equal(float16BitsToFloat32(0x3c00), 1);
  assert.equal(float16BitsToFloat32(0xc100), -2.5);
  assert.equal(float16BitsToFloat32(0x7bff), 65504);
  assert.equal(float16BitsToFloat32(0x0001), 2 ** -24);
  assert.equal(float16BitsToFloat32(0x03ff), 1023 * 2 ** -24);
  assert.equal(float16BitsToFloat32(0xfc00), -Infinity);
  assert.ok(Object.is(float16BitsToFloat32(0x8000), -0));
  // Every finite float16 survives a round trip through float32.
  for (let h = 0; h < 65536; h++) {
    if (((h >>> 10) & 0x1f) === 0x1f) continue;
    assert.equal(float32ToFloat16Bits(float16BitsToFloat32(h)), h);
  }
});

test('bfloat16: known bit patterns and round-to-nearest-even', () => {
  const cases: [number, number][] = [
    [1.0, 0x3f80], [-2.5, 0xc020], [65504, 0x4780], [-0, 0x8000],
    [1 + 2 ** -8, 0x3f80], // halfway between 1 and 1 + 2^-7: ties to even
    [1 + 3 * 2 ** -8, 0x3f82], // halfway between 0x3f81 and 0x3f82: ties to even
    [1 + 2 ** -8 + 2 ** -20, 0x3f81],
    [2 ** -133, 0x0001], // float32 subnormal 0x00010000
    [Infinity, 0x7f80], [3.4e38, 0x7f80], // rounds past the largest bfloat16
  ];
  for (const [value, bits] of cases) {
    assert.equal(float32ToBfloat16Bits(value), bits, `${value} -> 0x${float32ToBfloat16Bits(value).toString(16)}`);
  }
  assert.ok(Number.isNaN(bfloat16BitsToFloat32(float32ToBfloat16Bits(NaN))));
  assert.equal(bfloat16BitsToFloat32(0x3f80), 1);
  assert.equal(bfloat16BitsToFloat32(0xc020), -2.5);
  assert.equal(bfloat16BitsToFloat32(0x0001), 2 ** -133);
  // The array versions agree with the scalar ones.
  const values = randn(1000, 10, rng(3));
  assert.deepEqual(Array.from(toBfloat16Array(values)), Array.from(values, float32ToBfloat16Bits));
  assert.deepEqual(Array.from(toFloat16Array(values)), Array.from(values, float32ToFloat16Bits));
});

function sampleWeights(): WeightMap {
  const special = Float32Array.from([0, -0, 1, -2.5, 65504, 2 ** -24, 2 ** -149, 3.4e38, Infinity, -Infinity, NaN, 1 / 3]);
  return new Map([
    ['b.weight', { shape: [3, 5], data: randn(15, 1, rng(1)) }],
    ['a.special', { shape: [12], data: special }],
    ['c.empty', { shape: [0, 4], data: new Float32Array(0) }],
    ['d.scalar', { shape: [], data: Float32Array.from([7.25]) }],
  ]);
}

test('float32 write/read round trip is bit-exact, with metadata and an 8-byte-aligned header', () => {
  const file = path.join(tempDir(), 'x.safetensors');
  const weights = sampleWeights();
  const bytes = writeSafetensors(file, weights, { metadata: { format: 'pt', note: 'hi' } });
  assert.equal(fs.statSync(file).size, bytes);
  const header = readSafetensorsHeader(file);
  assert.equal(header.dataStart % 8, 0);
  assert.deepEqual(header.metadata, { format: 'pt', note: 'hi' });
  assert.deepEqual(header.tensors.map((t) => t.name), ['a.special', 'b.weight', 'c.empty', 'd.scalar']);
  const read = readSafetensors(file);
  assert.deepEqual([...read.weights.keys()].sort(), [...weights.keys()].sort());
  for (const [name, t] of weights) {
    const r = read.weights.get(name)!;
    assert.deepEqual(r.shape, t.shape, name);
    assert.deepEqual(bitsOf(r.data), bitsOf(t.data), name);
    assert.equal(read.dtypes.get(name), 'F32');
  }
});

test('float16 and bfloat16 files hold the rounded values and read back exactly those', () => {
  const dir = tempDir();
  const weights = sampleWeights();
  for (const [dtype, encode, decode] of [['F16', toFloat16Array, fromFloat16Array], ['BF16', toBfloat16Array, fromBfloat16Array]] as const) {
    const file = path.join(dir, `${dtype}.safetensors`);
    writeSafetensors(file, weights, { dtype });
    const header = readSafetensorsHeader(file);
    assert.ok(header.tensors.every((t) => t.dtype === dtype));
    assert.equal(header.fileSize - header.dataStart, 2 * (12 + 15 + 0 + 1));
    const read = readSafetensors(file);
    for (const [name, t] of weights) {
      const expected = decode(encode(t.data));
      assert.deepEqual(bitsOf(read.weights.get(name)!.data), bitsOf(expected), `${dtype} ${name}`);
    }
    // 1/3 is not representable: the stored value is the nearest one, not the original.
    const third = read.weights.get('a.special')!.data[11]!;
    assert.notEqual(third, Math.fround(1 / 3));
    assert.ok(Math.abs(third - 1 / 3) <= (dtype === 'F16' ? 2 ** -12 : 2 ** -9));
  }
});

test('F64 tensors are read and rounded to float32', () => {
  const file = path.join(tempDir(), 'f64.safetensors');
  const values = Float64Array.from([1 / 3, -1e-300, 2.5, 1e300]);
  writeRawSafetensors(file, { x: { dtype: 'F64', shape: [2, 2], data_offsets: [0, 32] } }, new Uint8Array(values.buffer));
  const read = readSafetensors(file);
  assert.deepEqual(read.weights.get('x')!.shape, [2, 2]);
  assert.deepEqual(Array.from(read.weights.get('x')!.data), [Math.fround(1 / 3), -0, 2.5, Infinity]);
  assert.equal(read.dtypes.get('x'), 'F64');
});

test('corrupt files are rejected with the file name and the problem', () => {
  const dir = tempDir();
  const file = (name: string) => path.join(dir, name);
  const data = new Uint8Array(16);

  fs.writeFileSync(file('short'), Buffer.from([1, 2, 3]));
  assertLoadError(() => readSafetensors(file('short')), file('short'), 'only 3 bytes');

  writeRawSafetensors(file('huge'), {}, data, 1n << 40n);
  assertLoadError(() => readSafetensors(file('huge')), file('huge'), 'header length 1099511627776', 'exceeds');

  writeRawSafetensors(file('past-end'), {}, data, 1000n);
  assertLoadError(() => readSafetensors(file('past-end')), file('past-end'), 'runs past the end of the file');

  writeRawSafetensors(file('not-json'), '{"x": {"dtype": "F32",', data);
  assertLoadError(() => readSafetensors(file('not-json')), file('not-json'), 'not valid JSON');

  writeRawSafetensors(file('array'), '[1, 2]', data);
  assertLoadError(() => readSafetensors(file('array')), file('array'), 'not a JSON object');

  writeRawSafetensors(file('range'), { x: { dtype: 'F32', shape: [8], data_offsets: [0, 32] } }, data);
  assertLoadError(() => readSafetensors(file('range')), file('range'), 'tensor x', 'out of range', '16 bytes');

  writeRawSafetensors(file('overlap'), {
    x: { dtype: 'F32', shape: [3], data_offsets: [0, 12] },
    y: { dtype: 'F32', shape: [2], data_offsets: [8, 16] },
  }, data);
  assertLoadError(() => readSafetensors(file('overlap')), file('overlap'), 'x [0, 12]', 'y [8, 16]', 'overlap');

  writeRawSafetensors(file('size'), { x: { dtype: 'F16', shape: [3], data_offsets: [0, 16] } }, data);
  assertLoadError(() => readSafetensors(file('size')), file('size'), 'tensor x', 'needs 6 bytes', 'span 16');

  writeRawSafetensors(file('gap'), { x: { dtype: 'F32', shape: [2], data_offsets: [8, 16] } }, data);
  assertLoadError(() => readSafetensors(file('gap')), file('gap'), 'bytes [0, 8)', 'no tensor');

  writeRawSafetensors(file('trailing'), { x: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } }, data);
  assertLoadError(() => readSafetensors(file('trailing')), file('trailing'), '8 bytes after the last tensor');

  writeRawSafetensors(file('dtype'), { x: { dtype: 'F17', shape: [4], data_offsets: [0, 16] } }, data);
  assertLoadError(() => readSafetensors(file('dtype')), file('dtype'), 'tensor x', 'unknown dtype "F17"');

  writeRawSafetensors(file('int'), { x: { dtype: 'I64', shape: [2], data_offsets: [0, 16] } }, data);
  assertLoadError(() => readSafetensors(file('int')), file('int'), 'tensor x has dtype I64');

  writeRawSafetensors(file('shape'), { x: { dtype: 'F32', shape: [-4], data_offsets: [0, 16] } }, data);
  assertLoadError(() => readSafetensors(file('shape')), file('shape'), 'tensor x', 'shape [-4]');

  writeRawSafetensors(file('meta'), { __metadata__: { n: 3 }, x: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, data);
  assertLoadError(() => readSafetensors(file('meta')), file('meta'), '__metadata__');

  assertLoadError(() => readSafetensors(file('missing')), file('missing'), 'file not found');
});

test('sharded write and read: shards under the size limit, an index, and identical tensors', () => {
  const dir = tempDir();
  const weights: WeightMap = new Map();
  for (let i = 0; i < 6; i++) weights.set(`layer.${i}.weight`, { shape: [10, 10], data: randn(100, 1, rng(10 + i)) });
  const files = writeShardedSafetensors(dir, weights, { maxShardBytes: 250 * 4, dtype: 'F32' });
  assert.deepEqual(files, [
    'model-00001-of-00003.safetensors', 'model-00002-of-00003.safetensors', 'model-00003-of-00003.safetensors',
    'model.safetensors.index.json',
  ]);
  const index = JSON.parse(fs.readFileSync(path.join(dir, 'model.safetensors.index.json'), 'utf8'));
  assert.equal(index.metadata.total_size, 6 * 400);
  assert.equal(index.weight_map['layer.2.weight'], 'model-00002-of-00003.safetensors');
  const read = readShardedSafetensors(path.join(dir, 'model.safetensors.index.json'));
  assert.equal(read.weights.size, 6);
  for (const [name, t] of weights) assert.deepEqual(bitsOf(read.weights.get(name)!.data), bitsOf(t.data), name);

  // Everything fits: one model.safetensors and no index.
  const single = tempDir();
  assert.deepEqual(writeShardedSafetensors(single, weights), ['model.safetensors']);
});

test('sharded index errors name the index or the shard', () => {
  const dir = tempDir();
  const weights: WeightMap = new Map([
    ['a', { shape: [4], data: new Float32Array(4) }],
    ['b', { shape: [4], data: new Float32Array(4) }],
  ]);
  writeShardedSafetensors(dir, weights, { maxShardBytes: 16 });
  const index = path.join(dir, 'model.safetensors.index.json');
  const json = JSON.parse(fs.readFileSync(index, 'utf8'));

  json.weight_map.c = 'model-00009-of-00009.safetensors';
  fs.writeFileSync(index, JSON.stringify(json));
  assertLoadError(() => readShardedSafetensors(index), index, 'shard model-00009-of-00009.safetensors', 'does not exist');

  json.weight_map.c = 'model-00001-of-00002.safetensors';
  fs.writeFileSync(index, JSON.stringify(json));
  assertLoadError(() => readShardedSafetensors(index), path.join(dir, 'model-00001-of-00002.safetensors'), 'tensor c', 'not stored in this shard');

  json.weight_map.c = '../elsewhere.safetensors';
  fs.writeFileSync(index, JSON.stringify(json));
  assertLoadError(() => readShardedSafetensors(index), index, 'not a plain file name');

  fs.writeFileSync(index, '{"weight_map": 3}');
  assertLoadError(() => readShardedSafetensors(index), index, 'weight_map');
});

test('writing rejects a tensor whose data does not match its shape', () => {
  const file = path.join(tempDir(), 'bad.safetensors');
  assert.throws(() => writeSafetensors(file, new Map([['x', { shape: [2, 3], data: new Float32Array(5) }]])), /tensor x has shape \[2, 3\] but 5 values/);
});

test('the streaming writer puts tensors written in any order where the planned header says, byte for byte', () => {
  const weights: WeightMap = new Map();
  for (let i = 0; i < 6; i++) weights.set(`layer.${i}.weight`, { shape: [10, 10], data: randn(100, 1, rng(20 + i)) });
  weights.set('a.bias', { shape: [7], data: randn(7, 1, rng(30)) });
  const sorted = tempDir();
  writeShardedSafetensors(sorted, weights, { maxShardBytes: 250 * 4, dtype: 'BF16' });
  const shuffled = tempDir();
  const writer = new ShardedSafetensorsWriter(shuffled, new Map([...weights].map(([n, t]) => [n, t.shape])), { maxShardBytes: 250 * 4, dtype: 'BF16' });
  assert.deepEqual(writer.missing, [...weights.keys()].sort());
  for (const name of [...weights.keys()].reverse()) {
    writer.write(name, weights.get(name)!);
    // Read back (lazily, from the shard) as soon as it is written.
    const back = writer.readBack(name);
    assert.deepEqual(bitsOf(back.data), bitsOf(fromBfloat16Array(toBfloat16Array(weights.get(name)!.data))), name);
  }
  assert.deepEqual(writer.finish(), fs.readdirSync(sorted).sort());
  for (const f of fs.readdirSync(sorted)) assert.deepEqual(fs.readFileSync(path.join(shuffled, f)), fs.readFileSync(path.join(sorted, f)), f);
});

test('the streaming writer refuses unplanned names and other shapes, and a finish with tensors missing', () => {
  const dir = tempDir();
  const writer = new ShardedSafetensorsWriter(dir, new Map([['a', [2, 3]], ['b', [4]]]));
  assert.throws(() => writer.write('c', { shape: [1], data: new Float32Array(1) }), /tensor c is not part of the planned checkpoint/);
  assert.throws(() => writer.write('a', { shape: [3, 2], data: new Float32Array(6) }), /tensor a has shape \[3, 2\], planned \[2, 3\]/);
  assert.throws(() => writer.write('a', { shape: [2, 3], data: new Float32Array(5) }), /tensor a has shape \[2, 3\] but 5 values/);
  writer.write('b', { shape: [4], data: Float32Array.of(1, 2, 3, 4) });
  assert.throws(() => writer.finish(), /1 planned tensor\(s\) were never written: a/);
  assert.throws(() => new ShardedSafetensorsWriter(dir, new Map([['__metadata__', [1]]])), /invalid tensor name/);
});
