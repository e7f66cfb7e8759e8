/**
 * The quality cost recorded with a slice (slicer/quality.ts): the slice's and the dense model's
 * perplexity on held-out text with the protocol of PROTOCOL.md §3-4, equal to the reference
 * figures on the 64 x 256 evaluation windows of stories260K; kept in the artifact and the
 * cache; refused on the calibration text or a text too short.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { loadModel } from '../../models/load.js';
import type { LoadedModel } from '../../models/types.js';
import { loadSlicedArtifact, saveSlicedArtifact } from '../../slicer/artifact.js';
import { sliceModelWithReport } from '../../slicer/index.js';
import { heldOutQuality } from '../../slicer/quality.js';

const CALIBRATION = 'data/tinystories-train-sample.txt';
const EVAL = 'data/tinystories-valid-sample.txt';
/** stories260K on the first 64 windows of 256 tokens of the evaluation text (test/slicer/stories260k.test.ts). */
const REFERENCE_DENSE_PPL = 3.844233;
const REFERENCE_PPL_025 = 14.6917;

let dense: LoadedModel;
let tmp: string;
before(() => {
  dense = loadModel('models/stories260K');
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sliceserve-quality-'));
});
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

test('a slice records its and the dense perplexity on the held-out text: the reference figures', async () => {
  const cacheDir = path.join(tmp, 'cache');
  const warnings: string[] = [];
  const options = { sparsity: 0.25, calibrationFile: CALIBRATION, cacheDir, heldOutFile: EVAL, heldOutWindows: 64, warn: (m: string) => warnings.push(m) };
  const { model, report } = await sliceModelWithReport(dense, options);
  const q = model.config.sliceserve?.quality;
  assert.ok(q);
  assert.equal(q.file, 'tinystories-valid-sample.txt');
  assert.equal(q.sha256, 'c86f734a3a07fffb8a52f4a7970ac7dbeaf4eaf6a031dc8742a8de92fbbb9446', 'data/SOURCES.md');
  assert.deepEqual([q.windows, q.seq_len, q.tokens], [64, 256, 16320]);
  assert.ok(Math.abs(q.dense_perplexity / REFERENCE_DENSE_PPL - 1) < 5e-3, `dense ${q.dense_perplexity}`);
  assert.ok(Math.abs(q.perplexity / REFERENCE_PPL_025 - 1) < 0.01, `sliced ${q.perplexity}`);
  assert.ok(report.timings.held_out_s > 0);
  assert.deepEqual(warnings, [], 'hidden_size 64: no eigensolver note');

  // Saved with the artifact, and a slice from the cache carries the same record.
  const out = path.join(tmp, 'artifact');
  await saveSlicedArtifact(model, out);
  assert.deepEqual((await loadSlicedArtifact(out)).config.sliceserve?.quality, q);
  const cached = await sliceModelWithReport(dense, options);
  assert.equal(cached.report.cached, true);
  assert.deepEqual(cached.model.config.sliceserve?.quality, q);
});

test('no held-out file, or 0 windows: nothing measured', async () => {
  const a = await sliceModelWithReport(dense, { sparsity: 0.5, calibrationFile: CALIBRATION, calWindows: 4, calSeqLen: 64 });
  assert.equal(a.model.config.sliceserve?.quality, undefined);
  assert.equal(a.report.timings.held_out_s < 0.05, true);
  const b = await sliceModelWithReport(dense, { sparsity: 0.5, calibrationFile: CALIBRATION, calWindows: 4, calSeqLen: 64, heldOutFile: EVAL, heldOutWindows: 0 });
  assert.equal(b.model.config.sliceserve?.quality, undefined);
});

test('held-out windows use the calibration window length; bad held-out input is refused', async () => {
  const small = await sliceModelWithReport(dense, { sparsity: 0.5, calibrationFile: CALIBRATION, calWindows: 4, calSeqLen: 64, heldOutFile: EVAL, heldOutWindows: 3 });
  assert.deepEqual(
    (({ windows, seq_len, tokens }) => ({ windows, seq_len, tokens }))(small.model.config.sliceserve!.quality!),
    { windows: 3, seq_len: 64, tokens: 3 * 63 },
  );
  const base = { sparsity: 0.5, calibrationFile: CALIBRATION, calWindows: 4, calSeqLen: 64, heldOutWindows: 4 };
  const copy = path.join(tmp, 'copy-of-calibration.txt');
  fs.copyFileSync(CALIBRATION, copy);
  await assert.rejects(sliceModelWithReport(dense, { ...base, heldOutFile: copy }), /held-out file .*copy-of-calibration\.txt is the calibration text: .*pass another file/);
  const short = path.join(tmp, 'short.txt');
  fs.writeFileSync(short, 'Once upon a time there was a cat.');
  await assert.rejects(sliceModelWithReport(dense, { ...base, heldOutFile: short }), /the held-out file .*short\.txt has \d+ tokens; 4 windows of 64 need 256/);
  await assert.rejects(sliceModelWithReport(dense, { ...base, heldOutFile: path.join(tmp, 'none.txt') }), /cannot read the held-out file .*none\.txt: ENOENT/);
  await assert.rejects(heldOutQuality(dense, small.model, { file: EVAL, windows: 1, seqLen: 4096, calibrationSha256: '' }), /held-out windows of 4096 tokens exceed the context length 512/);
});
