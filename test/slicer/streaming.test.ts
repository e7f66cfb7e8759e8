/**
 * The slicer in bounded memory: a model that stays on disk (a lazily loaded, sharded bf16
 * checkpoint) is sliced layer by layer with every final tensor written to the artifact as it
 * goes (slicer/driver.ts SliceSink) and the result equals slicing the same weights held in
 * memory, bit for bit; the sink sees the embedding first, each layer's tensors before the next
 * layer's, the head last, every tensor once.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { loadHuggingFaceModel, saveHuggingFaceModel } from '../../models/huggingface.js';
import { isLazy } from '../../models/lazy-tensor.js';
import { loadModel } from '../../models/load.js';
import { synthModel } from '../../models/synth.js';
import type { WeightTensor } from '../../models/types.js';
import { pcaBasis } from '../../slicer/driver.js';
import { fuseNorms } from '../../slicer/fusion.js';
import { readCalibration, rotateAndSlice, sliceModelWithReport } from '../../slicer/index.js';
import { slicedWidth } from '../../slicer/width.js';

const REPO_ROOT = path.resolve(__dirname, '..', '..', '..');
const CALIBRATION = path.join(REPO_ROOT, 'data', 'tinystories-train-sample.txt');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'slicer-streaming-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

const bits = (a: Float32Array) => Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length));
const OPTIONS = { sparsity: 0.25, calibrationFile: CALIBRATION, calWindows: 6, calSeqLen: 32 };

/** The synthetic tiny preset (hidden 64, 2 layers, a real tokenizer) as a sharded bf16 directory. */
function onDisk(): string {
  const dir = path.join(tmp, 'tiny-bf16');
  if (!fs.existsSync(dir)) saveHuggingFaceModel(synthModel('tiny', 9), dir, { dtype: 'bfloat16', maxShardBytes: 3 * 2 ** 20 });
  return dir;
}

test('slicing a model that stays on disk, written as it goes, equals slicing it in memory', async () => {
  const dir = onDisk();
  const lazy = loadModel(dir);
  const eager = loadHuggingFaceModel(dir, { lazy: false });
  const inMemory = await sliceModelWithReport(eager, OPTIONS);
  assert.equal(inMemory.report.dir, '');
  const out = path.join(tmp, 'sliced');
  const streamed = await sliceModelWithReport(lazy, { ...OPTIONS, outDir: out });
  assert.equal(streamed.report.dir, out);
  assert.ok([...streamed.model.weights.values()].every(isLazy), 'the result is the artifact, read on use');
  assert.deepEqual([...streamed.model.weights.keys()].sort(), [...inMemory.model.weights.keys()].sort());
  for (const [name, t] of inMemory.model.weights) assert.deepEqual(bits(streamed.model.weights.get(name)!.data), bits(t.data), name);
  const { created: _a, ...a } = streamed.model.config.sliceserve!;
  const { created: _b, ...b } = inMemory.model.config.sliceserve!;
  assert.deepEqual(a, b);
  assert.equal(streamed.report.parametersAfter, inMemory.report.parametersAfter);
  assert.deepEqual(fs.readdirSync(tmp).filter((n) => n.includes('.tmp-')), [], 'no temporary directory left');

  // --out must be empty unless overwriting is allowed; a failed run leaves no temporary directory.
  await assert.rejects(sliceModelWithReport(lazy, { ...OPTIONS, outDir: out }), /exists and is not empty/);
  await assert.rejects(sliceModelWithReport(lazy, { ...OPTIONS, calWindows: 100_000, outDir: path.join(tmp, 'never') }), /calibration file/);
  assert.equal(fs.existsSync(path.join(tmp, 'never')), false);
  const again = await sliceModelWithReport(lazy, { ...OPTIONS, outDir: out, overwrite: true });
  assert.deepEqual(bits(again.model.weights.get('lm_head.weight')!.data), bits(inMemory.model.weights.get('lm_head.weight')!.data));
});

test('the drivers hand every tensor to the sink once it is final: embedding, layer by layer, head', async () => {
  const model = loadModel(onDisk());
  const { windows } = readCalibration(model, OPTIONS);
  const put: string[] = [];
  const kept = new Map<string, WeightTensor>();
  const { model: sliced } = await rotateAndSlice(fuseNorms(model), {
    width: slicedWidth(0.25, model.config.hidden_size),
    sliceHead: false,
    windows,
    basis: pcaBasis(0.01),
    sink: {
      put: (name, t) => {
        put.push(name);
        const copy = { shape: [...t.shape], data: t.data.slice() };
        kept.set(name, copy);
        return copy;
      },
    },
  });
  assert.equal(new Set(put).size, put.length, 'each tensor once');
  assert.deepEqual([...put].sort(), [...sliced.weights.keys()].sort(), 'every tensor');
  assert.equal(put[0], 'model.embed_tokens.weight');
  assert.equal(put[put.length - 1], 'lm_head.weight');
  const layerOf = (name: string) => Number(/^model\.layers\.(\d+)\./.exec(name)?.[1] ?? -1);
  const layers = put.slice(1, -1).map(layerOf);
  assert.deepEqual(layers, [...layers].sort((x, y) => x - y), `layer order: ${layers.join(',')}`);
  assert.ok(layers.every((l) => l >= 0));
  for (const [name, t] of sliced.weights) assert.equal(t, kept.get(name), `${name}: the run keeps what the sink returned`);
});
