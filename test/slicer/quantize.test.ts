/**
 * Quantizing for serving (slicer/quantize.ts) and the quantized artifact
 * (models/quant/artifact.ts): the cache is content-addressed and a hit gives the same logits;
 * the artifact loads through loadModel; a damaged artifact is refused naming the tensor; the
 * rotation is applied to slices (auto) and refused for dense models; bad values are one line.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { loadModel } from '../../models/load.js';
import { isQuantizedArtifact, QUANT_CONFIG_KEY, saveQuantizedArtifact } from '../../models/quant/artifact.js';
import { quantizeModel } from '../../models/quant/index.js';
import { readSafetensorsHeader } from '../../models/safetensors.js';
import type { LoadedModel } from '../../models/types.js';
import { DecoderSession } from '../../runtime/decoder-session.js';
import { sliceModelWithReport } from '../../slicer/index.js';
import { MANIFEST_FILE } from '../../slicer/cache.js';
import { randomResidualRotation, randomRotationPlan } from '../../slicer/random-rotation.js';
import { parseQuantChoice, parseQuantRotation, quantizeModelWithReport, rotatesBeforeQuantizing } from '../../slicer/quantize.js';
import { REPO_ROOT } from '../models/helpers.js';

const MODEL = path.join(REPO_ROOT, 'models', 'stories260K');
const CALIBRATION = path.join(REPO_ROOT, 'data', 'tinystories-train-sample.txt');
const TOKENS = [1, 403, 407, 261, 378, 18, 90, 311, 24, 420];
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sliceserve-quantize-'));

async function logits(model: LoadedModel): Promise<Float32Array> {
  const s = await DecoderSession.create(model, { logits: 'all', threads: 1 });
  try {
    return Float32Array.from((await s.step([{ cache: s.newCache(), tokens: TOKENS }]))[0]);
  } finally {
    await s.release();
  }
}

const slice = async () => (await sliceModelWithReport(loadModel(MODEL), { sparsity: 0.25, calibrationFile: CALIBRATION, calWindows: 16, calSeqLen: 64 })).model;

test('the quantized cache: a miss writes the artifact, a hit loads it with the same logits; loadModel reads it too', async () => {
  const cacheDir = path.join(tmp, 'cache');
  const first = await quantizeModelWithReport(await slice(), { preset: 'int4', cacheDir });
  assert.equal(first.report.cached, false);
  assert.equal(first.model.id, 'stories260K-sliced-0.25-int4');
  assert.deepEqual(first.report.rotation, { kind: 'random-orthogonal', seed: 0 }, 'auto rotates a slice');
  assert.ok(fs.existsSync(path.join(first.report.dir, 'config.json')));
  assert.match(path.basename(first.report.dir), /^stories260K-sliced-0\.25-int4-[0-9a-f]{16}$/);
  assert.deepEqual(fs.readdirSync(cacheDir).filter((n) => n.startsWith('.')), [], 'no temporary directory is left');
  const second = await quantizeModelWithReport(await slice(), { preset: 'int4', cacheDir });
  assert.equal(second.report.cached, true);
  assert.equal(second.report.dir, first.report.dir);
  assert.equal(second.report.quantizedBytes, first.report.quantizedBytes);
  const want = await logits(first.model);
  assert.deepEqual(await logits(second.model), want);
  assert.ok(isQuantizedArtifact(first.report.dir));
  const loaded = loadModel(first.report.dir);
  assert.equal(loaded.quantization!.preset, 'int4');
  assert.equal(loaded.config.sliceserve!.sliced_hidden_size, 48);
  assert.deepEqual(await logits(loaded), want);
  // Another preset or no rotation is another entry.
  const other = await quantizeModelWithReport(await slice(), { preset: 'int4', rotation: 'none', cacheDir });
  assert.notEqual(other.report.dir, first.report.dir);
  assert.equal(other.report.rotation, null);
});

test('the artifact holds exactly the MatMulNBits inputs; a damaged one is refused naming the tensor', async () => {
  const dense = loadModel(MODEL);
  const q = await quantizeModel(dense, 'int8');
  const dir = path.join(tmp, 'dense-int8');
  saveQuantizedArtifact(q, dir);
  const config = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
  assert.equal(config[QUANT_CONFIG_KEY].preset, 'int8');
  assert.equal(config[QUANT_CONFIG_KEY].tensors['model.layers.0.self_attn.q_proj.weight'].block_size, 128);
  const header = readSafetensorsHeader(path.join(dir, 'model.safetensors'));
  const byName = new Map(header.tensors.map((t) => [t.name, t]));
  assert.deepEqual(byName.get('model.layers.0.self_attn.q_proj.weight.qweight')!.shape, [64, 1, 128], 'K = 64 < block 128: one padded block');
  assert.equal(byName.get('model.layers.0.self_attn.q_proj.weight.qweight')!.dtype, 'U8');
  assert.deepEqual(byName.get('model.layers.0.self_attn.q_proj.weight.scales')!.shape, [64, 1]);
  assert.ok(!byName.has('model.layers.0.self_attn.q_proj.weight'), 'no float copy of a quantized weight');
  assert.equal(byName.get('model.embed_tokens.weight')!.dtype, 'F32');
  assert.deepEqual(await logits(loadModel(dir)), await logits(q));
  assert.throws(() => saveQuantizedArtifact(q, dir), /exists and is not empty/);
  // Drop a tensor from the config's list of quantized tensors: the file then holds unexpected parts.
  const broken = path.join(tmp, 'broken');
  fs.cpSync(dir, broken, { recursive: true });
  const c2 = JSON.parse(fs.readFileSync(path.join(broken, 'config.json'), 'utf8'));
  delete c2[QUANT_CONFIG_KEY].tensors['model.layers.3.mlp.down_proj.weight'];
  fs.writeFileSync(path.join(broken, 'config.json'), JSON.stringify(c2));
  assert.throws(() => loadModel(broken), /unexpected tensor model\.layers\.3\.mlp\.down_proj\.weight\.qweight/);
  c2[QUANT_CONFIG_KEY].tensors['model.layers.3.mlp.down_proj.weight'] = { ...config[QUANT_CONFIG_KEY].tensors['model.layers.3.mlp.down_proj.weight'], block_size: 32 };
  fs.writeFileSync(path.join(broken, 'config.json'), JSON.stringify(c2));
  assert.throws(() => loadModel(broken), /model\.layers\.3\.mlp\.down_proj\.weight\.qweight is U8 \[64, 2, 128\], expected U8 \[64, 6, 32\]/);
});

test('rotation: auto rotates slices only; random on a dense model, unknown values and double quantization are one-line errors', async () => {
  const dense = loadModel(MODEL);
  assert.equal(rotatesBeforeQuantizing(dense, 'auto'), false);
  assert.throws(() => rotatesBeforeQuantizing(dense, 'random'), /--quant-rotation random needs a sliced model and stories260K is dense/);
  const d = await quantizeModelWithReport(loadModel(MODEL), { preset: 'int8' });
  assert.equal(d.report.rotation, null);
  assert.equal(d.report.dir, '');
  await assert.rejects(quantizeModelWithReport(d.model, { preset: 'int4' }), /already quantized \(int8\)/);
  await assert.rejects(sliceModelWithReport(d.model, { sparsity: 0.25, calibrationFile: CALIBRATION }), /stories260K-int8 is quantized \(int8\); slice its float model, then quantize the slice/);
  assert.equal(parseQuantChoice('INT4'), 'int4');
  assert.equal(parseQuantChoice('none'), 'none');
  assert.throws(() => parseQuantChoice('int3'), /expected none, int8, int4 \(none = float weights\), got "int3"/);
  assert.throws(() => parseQuantRotation('hadamard'), /expected auto, random, none, got "hadamard"/);
});

test('consume (the default): the float tensors leave the input model as they are rotated and quantized', async () => {
  const sliced = await slice();
  const before = sliced.weights.size;
  const { model } = await quantizeModelWithReport(sliced, { preset: 'int4' });
  assert.ok(sliced.weights.size < before / 2, `${sliced.weights.size} of ${before} float tensors left in the input`);
  assert.ok(model.quantization!.tensors.size > 0);
});

test('rotating each tensor just before quantizing it gives the same quantized weights as quantizing the rotated model', async () => {
  const sliced = await slice();
  const streamed = await quantizeModel(sliced, 'int4', { transform: randomRotationPlan(sliced, 0) });
  const whole = await quantizeModel(await randomResidualRotation(sliced, { seed: 0 }), 'int4');
  assert.deepEqual([...streamed.quantization!.tensors.keys()].sort(), [...whole.quantization!.tensors.keys()].sort());
  for (const [name, t] of whole.quantization!.tensors) {
    const s = streamed.quantization!.tensors.get(name)!;
    assert.deepEqual(s.q.data, t.q.data, `${name} codes`);
    assert.deepEqual(s.q.scales, t.q.scales, `${name} scales`);
  }
  for (const [name, t] of whole.weights) assert.deepEqual(streamed.weights.get(name)!.data, t.data, name);
});

test('a corrupt quantized cache entry is moved to .corrupt/ with a warning and quantized again', async () => {
  const cacheDir = path.join(tmp, 'cache-corrupt');
  const first = await quantizeModelWithReport(loadModel(MODEL), { preset: 'int8', cacheDir });
  assert.ok(fs.existsSync(path.join(first.report.dir, MANIFEST_FILE)), 'the entry has a manifest of hashes');
  const want = await logits(first.model);
  const file = path.join(first.report.dir, 'model.safetensors');
  const bytes = fs.readFileSync(file);
  bytes[bytes.length - 1] ^= 0xff;
  fs.writeFileSync(file, bytes);
  const warnings: string[] = [];
  const again = await quantizeModelWithReport(loadModel(MODEL), { preset: 'int8', cacheDir, onWarning: (m) => warnings.push(m) });
  assert.equal(again.report.cached, false, 'quantized again, not loaded');
  assert.equal(warnings.length, 1);
  assert.match(warnings[0], /cannot be used \(model\.safetensors has SHA-256 .* was written\); moved to .*\.corrupt/);
  assert.equal(fs.readdirSync(path.join(cacheDir, '.corrupt')).length, 1);
  assert.deepEqual(await logits(again.model), want);
  const third = await quantizeModelWithReport(loadModel(MODEL), { preset: 'int8', cacheDir });
  assert.equal(third.report.cached, true);
});
