/**
 * SliceGPT on the real stories260K, with the protocol of PROTOCOL.md: perplexity of the
 * sliced model against the reference figure, sparsity 0 through the full pipeline, the
 * artifact round trip, the cache, and bad input (issue 3 acceptance).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { perplexity } from '../../runtime/perplexity.js';
import { loadModel } from '../../models/load.js';
import { writeSafetensors, readSafetensors } from '../../models/safetensors.js';
import { buildTokenStream, cutWindows } from '../../models/tokenizer/index.js';
import type { LoadedModel } from '../../models/types.js';
import { DecoderSession } from '../../runtime/decoder-session.js';
import { loadSlicedArtifact, saveSlicedArtifact } from '../../slicer/artifact.js';
import { countParameters, sliceModelWithReport, slicedWidth } from '../../slicer/index.js';
import { TINY_STORIES_FILE } from '../models/helpers.js';

const CALIBRATION = 'data/tinystories-train-sample.txt';
const REFERENCE_DENSE_PPL = 3.844233;
const REFERENCE_PPL_025 = 14.6917;

let dense: LoadedModel;
let windows: number[][];
let tmp: string;
before(() => {
  dense = loadModel('models/stories260K');
  windows = cutWindows(Array.from(buildTokenStream(fs.readFileSync('data/tinystories-valid-sample.txt'), dense.tokenizer).tokens), 256, 64);
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sliceserve-slice-'));
});
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

async function ppl(model: LoadedModel): Promise<number> {
  const s = await DecoderSession.create(model, { logits: 'all' });
  try {
    return (await perplexity(s, windows, 16)).perplexity;
  } finally {
    await s.release();
  }
}

async function lastLogits(model: LoadedModel, tokens: number[]): Promise<Float32Array> {
  const s = await DecoderSession.create(model, { threads: 1 });
  try {
    return (await s.step([{ cache: s.newCache(), tokens }]))[0];
  } finally {
    await s.release();
  }
}

test("d' follows the official rounding (PROTOCOL.md §5.4)", () => {
  const table: [number, number, number][] = [[0.1, 56, 57], [0.2, 48, 51], [0.25, 48, 48], [0.3, 40, 44], [0.4, 32, 38], [0.5, 32, 32]];
  for (const [s, r8, r1] of table) {
    assert.equal(slicedWidth(s, 64, 8), r8, `sparsity ${s}, round 8`);
    assert.equal(slicedWidth(s, 64, 1), r1, `sparsity ${s}, round 1`);
  }
});

test('the dense perplexity equals the reference (16,320 tokens)', async () => {
  const s = await DecoderSession.create(dense, { logits: 'all' });
  const r = await perplexity(s, windows, 16);
  await s.release();
  assert.equal(r.tokens, 16320);
  assert.ok(Math.abs(r.perplexity / REFERENCE_DENSE_PPL - 1) < 5e-3, `ppl ${r.perplexity}`);
});

test('sparsity 0.25: reference perplexity within 1 %, parameters, artifact round trip, cache', async () => {
  const cacheDir = path.join(tmp, 'cache');
  const first = await sliceModelWithReport(dense, { sparsity: 0.25, calibrationFile: CALIBRATION, cacheDir });
  assert.equal(first.report.cached, false);
  assert.equal(first.report.width, 48);
  assert.equal(first.report.parametersBefore, 260032);
  // embedding 512*48 + head 512*64 + per layer (q,k,v,o,gate,up,down at d'=48, last down 64 rows) + shortcuts
  assert.equal(countParameters(first.model.weights), first.report.parametersAfter);
  assert.equal(first.model.id, 'stories260K-sliced-0.25');
  assert.equal(first.model.config.sliceserve?.sliced_hidden_size, 48);
  const p = await ppl(first.model);
  assert.ok(Math.abs(p / REFERENCE_PPL_025 - 1) < 0.01, `sliced ppl ${p}`);

  // Second call: from the cache, identical weights, identical logits.
  const second = await sliceModelWithReport(dense, { sparsity: 0.25, calibrationFile: CALIBRATION, cacheDir });
  assert.equal(second.report.cached, true);
  const tokens = dense.tokenizer.encode('Once upon a time');
  assert.deepEqual(Array.from(await lastLogits(second.model, tokens)), Array.from(await lastLogits(first.model, tokens)));

  // slice -> save -> load -> same logits as in memory.
  const out = path.join(tmp, 'artifact');
  await saveSlicedArtifact(first.model, out);
  const loaded = await loadSlicedArtifact(out);
  assert.deepEqual(loaded.config.sliceserve, first.model.config.sliceserve);
  assert.deepEqual(Array.from(await lastLogits(loaded, tokens)), Array.from(await lastLogits(first.model, tokens)));

  // A corrupted artifact: a missing tensor, then a wrong shape. Clear errors naming the tensor.
  const file = path.join(out, 'model.safetensors');
  const weights = readSafetensors(file).weights;
  const broken = new Map(weights);
  broken.delete('model.layers.2.mlp_shortcut_Q');
  writeSafetensors(file, broken);
  await assert.rejects(loadSlicedArtifact(out), /model\.layers\.2\.mlp_shortcut_Q/);
  const wrong = new Map(weights);
  wrong.set('model.layers.1.self_attn.o_proj.weight', { shape: [40, 64], data: new Float32Array(40 * 64) });
  writeSafetensors(file, wrong);
  await assert.rejects(loadSlicedArtifact(out), /o_proj/);
});

test('sparsity 0 through the full pipeline gives the dense perplexity within 1e-4 relative', async () => {
  const { model, report } = await sliceModelWithReport(dense, { sparsity: 0, calibrationFile: CALIBRATION });
  assert.equal(report.width, 64);
  assert.equal(report.parametersAfter, 333056); // PROTOCOL.md §6
  const p = await ppl(model);
  assert.ok(Math.abs(p / REFERENCE_DENSE_PPL - 1) < 1e-4, `ppl ${p}`);
});

test('bad input: sparsity, short calibration file, missing file, already-sliced model', async () => {
  for (const sparsity of [-0.1, 1, 1.5, Number.NaN]) {
    await assert.rejects(sliceModelWithReport(dense, { sparsity, calibrationFile: CALIBRATION }), /sparsity must be in \[0, 1\)/);
  }
  // A calibration text far too short: the first 2 kB of the bundled one (nothing outside the repository).
  const tiny = path.join(tmp, 'tinystories-sample-tiny.txt');
  fs.writeFileSync(tiny, fs.readFileSync(CALIBRATION).subarray(0, 2048));
  await assert.rejects(
    sliceModelWithReport(dense, { sparsity: 0.25, calibrationFile: TINY_STORIES_FILE }),
    /tinystories-sample-tiny\.txt has \d+ tokens; 128 windows of 256 need 32768/,
  );
  await assert.rejects(sliceModelWithReport(dense, { sparsity: 0.25, calibrationFile: path.join(tmp, 'nope.txt') }), /cannot read the calibration file .*nope\.txt: ENOENT/);
  const { model } = await sliceModelWithReport(dense, { sparsity: 0.5, calibrationFile: CALIBRATION, calWindows: 4, calSeqLen: 64 });
  await assert.rejects(sliceModelWithReport(model, { sparsity: 0.5, calibrationFile: CALIBRATION }), /already sliced/);
});
