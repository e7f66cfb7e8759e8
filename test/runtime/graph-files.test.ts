/**
 * Graphs whose weights stream to a file (models/onnx/builder.ts `OnnxGraph.streamingTo`,
 * runtime/graph-files.ts) against the same graphs built in memory: same initializers, same
 * logits, files removed afterwards.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import * as ort from 'onnxruntime-node';
import { onnx } from 'onnx-proto';
import { FILE_ALIGNMENT_BYTES, OnnxGraph } from '../../models/onnx/builder.js';
import { buildDecoderGraph } from '../../models/onnx/decoder-graph.js';
import { withGraphFiles } from '../../runtime/graph-files.js';
import { randn, rng, tinyModel } from '../helpers/tiny-model.js';

const SHAPE = { hidden: 32, layers: 2, heads: 4, kvHeads: 2, intermediate: 40, vocab: 50, context: 64 };
const bits = (a: Float32Array) => Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length));

/** The bytes of every initializer, by name (inline raw_data or read from its external file / buffer). */
function initializerBytes(model: Uint8Array, external: (location: string, offset: number, length: number) => Uint8Array): Map<string, string> {
  const proto = onnx.ModelProto.decode(model);
  const out = new Map<string, string>();
  for (const t of proto.graph!.initializer!) {
    if (t.dataLocation === onnx.TensorProto.DataLocation.EXTERNAL) {
      const kv = Object.fromEntries(t.externalData!.map((e) => [e.key, e.value]));
      out.set(t.name!, Buffer.from(external(kv.location!, Number(kv.offset), Number(kv.length))).toString('hex'));
    } else {
      out.set(t.name!, Buffer.from(t.rawData!).toString('hex'));
    }
  }
  return out;
}

function feeds(tokens: number[], L: number, KV: number, hd: number): Record<string, ort.Tensor> {
  const S = tokens.length;
  const bias = new Float32Array(S * S);
  for (let i = 0; i < S; i++) for (let j = i + 1; j < S; j++) bias[i * S + j] = -1e9;
  const f: Record<string, ort.Tensor> = {
    input_ids: new ort.Tensor('int64', BigInt64Array.from(tokens.map(BigInt)), [1, S]),
    position_ids: new ort.Tensor('int64', BigInt64Array.from(tokens.map((_, i) => BigInt(i))), [1, S]),
    attention_bias: new ort.Tensor('float32', bias, [1, S, S]),
  };
  for (let l = 0; l < L; l++) {
    f[`past_key_values.${l}.key`] = new ort.Tensor('float32', new Float32Array(0), [1, KV, hd, 0]);
    f[`past_key_values.${l}.value`] = new ort.Tensor('float32', new Float32Array(0), [1, KV, 0, hd]);
  }
  return f;
}

test('a decoder graph streamed to a file has the in-memory graph\'s initializers, page-aligned, and the same logits', async () => {
  const model = tinyModel(SHAPE, 21);
  const { num_hidden_layers: L, num_key_value_heads: KV, head_dim: hd } = model.config;
  const memory = buildDecoderGraph(model, { logits: 'all', attention: 'primitives' });
  const fromMemory = initializerBytes(memory.model, (_, offset, length) => memory.externalData.subarray(offset, offset + length));
  const tokens = [1, 7, 33, 2, 19, 48, 5];
  const s0 = await ort.InferenceSession.create(memory.model, { intraOpNumThreads: 1, externalData: [{ path: memory.externalDataPath, data: memory.externalData }] });
  const expected = (await s0.run(feeds(tokens, L, KV, hd))).logits.data as Float32Array;
  await s0.release();

  let dirSeen = '';
  const got = await withGraphFiles(
    (file) => buildDecoderGraph(model, { logits: 'all', attention: 'primitives', externalDataFile: file }),
    async ({ modelPath, externalBytes }) => {
      dirSeen = path.dirname(modelPath);
      const weights = fs.readFileSync(path.join(dirSeen, 'weights.bin'));
      assert.equal(weights.length, externalBytes);
      const proto = onnx.ModelProto.decode(fs.readFileSync(modelPath));
      const offsets = proto.graph!.initializer!.filter((t) => t.dataLocation === onnx.TensorProto.DataLocation.EXTERNAL)
        .map((t) => Number(t.externalData!.find((e) => e.key === 'offset')!.value));
      assert.ok(offsets.length > 0 && offsets.every((o) => o % FILE_ALIGNMENT_BYTES === 0), 'page-aligned external tensors');
      const fromFile = initializerBytes(fs.readFileSync(modelPath), (location, offset, length) => {
        assert.equal(location, 'weights.bin');
        return weights.subarray(offset, offset + length);
      });
      assert.deepEqual(fromFile, fromMemory);
      const s = await ort.InferenceSession.create(modelPath, { intraOpNumThreads: 1 });
      try {
        return (await s.run(feeds(tokens, L, KV, hd))).logits.data as Float32Array;
      } finally {
        await s.release();
      }
    },
  );
  assert.deepEqual(bits(got), bits(expected));
  assert.equal(fs.existsSync(dirSeen), false, 'the graph files are removed');
});

test('withGraphFiles removes its directory when building or opening fails', async () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'graph-files-test-'));
  try {
    await assert.rejects(withGraphFiles((file) => {
      const g = OnnxGraph.streamingTo('bad', file);
      g.initializer('w', 'float32', [300], randn(300, 1, rng(1)));
      throw new Error('emitter failed');
    }, async () => 1, root), /emitter failed/);
    await assert.rejects(withGraphFiles((file) => {
      const g = OnnxGraph.streamingTo('ok', file);
      const x = g.input('x', 'float32', [1, 300]);
      g.op('MatMul', [x, g.initializer('w', 'float32', [300, 2], randn(600, 1, rng(2)))], {}, { output: 'y' });
      g.output('y', 'float32', [1, 2]);
      return g.build();
    }, async () => {
      throw new Error('open failed');
    }, root), /open failed/);
    // A graph built in memory is refused (its weights are not in the file).
    await assert.rejects(withGraphFiles(() => new OnnxGraph('memory').build(), async () => 1, root), /not built into the given external-data file/);
    assert.deepEqual(fs.readdirSync(root), []);
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

test('a streaming graph writes each initializer as it is added, large ones whole', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'graph-stream-test-'));
  try {
    const file = path.join(dir, 'w.bin');
    const g = OnnxGraph.streamingTo('g', file);
    const a = randn(5000, 1, rng(3));
    g.initializer('a', 'float32', [5000], a);
    assert.equal(fs.statSync(file).size, 5000 * 4, 'written before build');
    const b = new Uint8Array(3000).map((_, i) => i % 251);
    g.initializer('b', 'uint8', [3000], b);
    const tiny = g.float([1, 2, 3]);
    const built = g.build();
    assert.equal(built.externalDataFile, file);
    assert.equal(built.externalBytes, Math.ceil((5000 * 4) / FILE_ALIGNMENT_BYTES) * FILE_ALIGNMENT_BYTES + 3000);
    const bytes = fs.readFileSync(file);
    assert.deepEqual(bits(new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + 20000))), bits(a));
    const proto = onnx.ModelProto.decode(built.model);
    const bInfo = proto.graph!.initializer!.find((t) => t.name === 'b')!;
    const off = Number(bInfo.externalData!.find((e) => e.key === 'offset')!.value);
    assert.equal(off % FILE_ALIGNMENT_BYTES, 0);
    assert.deepEqual(Array.from(bytes.subarray(off, off + 3000)), Array.from(b));
    assert.ok(proto.graph!.initializer!.find((t) => t.name === tiny)!.rawData!.length === 12, 'small constants stay inline');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
