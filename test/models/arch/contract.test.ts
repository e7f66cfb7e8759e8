/**
 * The family contract: one suite that every registered architecture passes, on its fixtures
 * (test/fixtures/transformers/<variant>/, checkpoints written by transformers). Adding a family
 * adds a fixture, not tests: the first test fails until the new family has one.
 *
 * Per variant: the config and weights survive a save/load round trip; the tensors are exactly
 * the layout's; KV-cache decode equals full recompute; a batch of different lengths equals each
 * sequence served alone; norm fusion and a random orthogonal rotation without slicing keep the
 * logits (SliceGPT §3.1-3.2, computational invariance); PCA slicing at sparsity 0 keeps the
 * perplexity within 1e-4; slices at 0.25 and 0.5 have the documented shapes, save, load and
 * generate. The logits of the fixture and of its saved slices equal the independent float64
 * reference forward (test/reference/), which itself equals transformers' goldens.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { generate } from '../../../engine/generate.js';
import { saveHuggingFaceModel } from '../../../models/huggingface.js';
import { hashModelWeights, loadModel } from '../../../models/load.js';
import { architectureOf, layoutOf, supportedArchitectures } from '../../../models/registry.js';
import { buildTokenStream, cutWindows } from '../../../models/tokenizer/index.js';
import type { LoadedModel } from '../../../models/types.js';
import { expectedWeightShapes } from '../../../models/validate.js';
import { DecoderSession } from '../../../runtime/decoder-session.js';
import { perplexity } from '../../../runtime/perplexity.js';
import { loadSlicedArtifact, saveSlicedArtifact } from '../../../slicer/artifact.js';
import { fuseNorms } from '../../../slicer/fusion.js';
import { rotateAndSlice, sliceModelWithReport } from '../../../slicer/index.js';
import { randomOrthogonalBasis } from '../../helpers/random-basis.js';
import { ReferenceModel } from '../../reference/forward.js';
import { REPO_ROOT } from '../helpers.js';

const FIXTURES = path.join(REPO_ROOT, 'test', 'fixtures', 'transformers');
const CALIBRATION = path.join(REPO_ROOT, 'data', 'tinystories-train-sample.txt');
const EVAL_FILE = path.join(REPO_ROOT, 'data', 'tinystories-valid-sample.txt');
const TOKENS = [1, 403, 407, 261, 378, 18, 90, 311, 24, 420, 7, 151, 44, 300, 12, 5];
const variants = fs.readdirSync(FIXTURES).filter((d) => fs.existsSync(path.join(FIXTURES, d, 'config.json'))).sort();
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sliceserve-contract-'));
const SAMPLING = { temperature: 0, topP: 1, topK: 0, presencePenalty: 0, frequencyPenalty: 0 };

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

async function withSession<T>(model: LoadedModel, logits: 'all' | 'last', f: (s: DecoderSession) => Promise<T>): Promise<T> {
  const s = await DecoderSession.create(model, { logits, threads: 1 });
  try {
    return await f(s);
  } finally {
    await s.release();
  }
}

const allLogits = (model: LoadedModel, tokens = TOKENS) => withSession(model, 'all', async (s) => Float32Array.from((await s.step([{ cache: s.newCache(), tokens }]))[0]));

/** The reference forward's logits of `tokens`, flattened [T * vocab] like a session's. */
function referenceLogits(dir: string, tokens = TOKENS): Float64Array {
  const rows = new ReferenceModel(dir).logits(tokens);
  const out = new Float64Array(rows.length * rows[0].length);
  rows.forEach((r, t) => out.set(r, t * r.length));
  return out;
}

function evalWindows(model: LoadedModel): number[][] {
  return cutWindows(Array.from(buildTokenStream(fs.readFileSync(EVAL_FILE), model.tokenizer).tokens), 64, 4);
}

const ppl = (model: LoadedModel, windows: number[][]) => withSession(model, 'all', async (s) => (await perplexity(s, windows)).perplexity);

test('every registered architecture has a fixture', () => {
  const covered = new Set(variants.map((v) => JSON.parse(fs.readFileSync(path.join(FIXTURES, v, 'config.json'), 'utf8')).architectures[0]));
  for (const arch of supportedArchitectures()) assert.ok(covered.has(arch), `${arch} has no fixture in test/fixtures/transformers`);
});

for (const variant of variants) {
  const dir = path.join(FIXTURES, variant);

  test(`${variant}: config and weights round trip; the tensors are exactly the layout's`, () => {
    const model = loadModel(dir);
    const shapes = expectedWeightShapes(model.config);
    assert.deepEqual([...model.weights.keys()].sort(), [...shapes.keys()].sort());
    for (const [name, shape] of shapes) assert.deepEqual(model.weights.get(name)!.shape, shape, name);
    const out = path.join(tmp, `${variant}-saved`);
    saveHuggingFaceModel(model, out, { overwrite: true });
    const again = loadModel(out);
    const { source: _a, ...fields } = again.config;
    const { source: _b, ...expected } = model.config;
    assert.deepEqual(fields, expected);
    assert.equal(hashModelWeights(again), hashModelWeights(model));
    assert.equal(architectureOf(again.config).family, architectureOf(model.config).family);
  });

  test(`${variant}: logits equal the independent reference forward, which equals transformers'`, async () => {
    const goldens = fs.existsSync(path.join(dir, 'expected-logits.f32'));
    const tokens = goldens ? (JSON.parse(fs.readFileSync(path.join(dir, 'expected.json'), 'utf8')) as { tokens: number[] }).tokens : TOKENS;
    const reference = referenceLogits(dir, tokens);
    if (goldens) {
      const buf = fs.readFileSync(path.join(dir, 'expected-logits.f32'));
      // Float64 everywhere but transformers' float32 RoPE tables: at most 2.5e-6 on these fixtures.
      const toGolden = maxAbsDiff(reference, new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength)));
      assert.ok(toGolden < 2e-5, `reference vs transformers: ${toGolden}`);
    }
    const toProduct = maxAbsDiff(await allLogits(loadModel(dir), tokens), reference);
    assert.ok(toProduct < 1e-4, `DecoderSession vs reference: ${toProduct}`);
  });

  test(`${variant}: KV-cache decode equals full recompute; batching different lengths equals serving alone`, async () => {
    const model = loadModel(dir);
    const full = await allLogits(model);
    const V = model.config.vocab_size;
    await withSession(model, 'last', async (s) => {
      const cache = s.newCache();
      await s.step([{ cache, tokens: TOKENS.slice(0, 4) }]);
      for (let t = 4; t < TOKENS.length; t++) {
        const got = (await s.step([{ cache, tokens: [TOKENS[t]] }]))[0];
        assert.ok(maxAbsDiff(got, full.subarray(t * V, (t + 1) * V)) < 1e-4, `position ${t}`);
      }
      // Three sequences of different lengths, prefilled together, then decoded together.
      const prompts = [TOKENS.slice(0, 9), TOKENS.slice(2, 5), TOKENS.slice(5, 16)];
      const alone = await Promise.all(prompts.map((p) => allLogits(model, [...p, 77, 88])));
      const caches = prompts.map(() => s.newCache());
      const pre = await s.step(prompts.map((p, b) => ({ cache: caches[b], tokens: p })));
      const d1 = await s.step(caches.map((cache) => ({ cache, tokens: [77] })));
      const d2 = await s.step(caches.map((cache) => ({ cache, tokens: [88] })));
      prompts.forEach((p, b) => {
        const n = p.length;
        assert.ok(maxAbsDiff(pre[b], alone[b].subarray((n - 1) * V, n * V)) < 1e-4, `prefill ${b}`);
        assert.ok(maxAbsDiff(d1[b], alone[b].subarray(n * V, (n + 1) * V)) < 1e-4, `decode 1 of ${b}`);
        assert.ok(maxAbsDiff(d2[b], alone[b].subarray((n + 1) * V, (n + 2) * V)) < 1e-4, `decode 2 of ${b}`);
      });
    });
  });

  test(`${variant}: fusion and a random rotation without slicing keep the logits`, async () => {
    const model = loadModel(dir);
    const dense = await allLogits(model);
    const fused = fuseNorms(model);
    assert.ok(maxAbsDiff(await allLogits(fused), dense) < 1e-4, 'fused');
    const layout = layoutOf(fused.config);
    for (const layer of layout.layers) assert.deepEqual([layer.inputNorm, layer.postAttentionNorm ?? {}], [{}, {}], 'fused norms are weightless');
    const windows = cutWindows(Array.from(buildTokenStream(fs.readFileSync(CALIBRATION), model.tokenizer).tokens), 16, 2);
    const { model: rotated } = await rotateAndSlice(fused, { width: model.config.hidden_size, sliceHead: false, windows, basis: randomOrthogonalBasis(7) });
    assert.ok(maxAbsDiff(rotated.weights.get(layout.embedTokens)!.data, fused.weights.get(layout.embedTokens)!.data) > 0.05, 'the weights moved');
    assert.ok(maxAbsDiff(await allLogits(rotated), dense) < 1e-4, 'rotated');
  });

  test(`${variant}: PCA slicing at sparsity 0 keeps the perplexity; 0.25 and 0.5 save, load and generate`, async () => {
    const model = loadModel(dir);
    const windows = evalWindows(model);
    const densePpl = await ppl(model, windows);
    const options = { calibrationFile: CALIBRATION, calWindows: 8, calSeqLen: 32 };
    const zero = await sliceModelWithReport(model, { ...options, sparsity: 0 });
    assert.ok(Math.abs(await ppl(zero.model, windows) - densePpl) < 1e-4 * densePpl, 'sparsity 0');
    const d = model.config.hidden_size;
    for (const [sparsity, width] of [[0.25, 0.75 * d], [0.5, 0.5 * d]] as const) {
      const { model: sliced, report } = await sliceModelWithReport(model, { ...options, sparsity });
      assert.equal(report.width, width);
      assert.equal(sliced.config.sliceserve!.sliced_hidden_size, width);
      assert.deepEqual(sliced.weights.get(layoutOf(sliced.config).embedTokens)!.shape, [model.config.vocab_size, width]);
      const out = path.join(tmp, `${variant}-${sparsity}`);
      await saveSlicedArtifact(sliced, out, true);
      const loaded = await loadSlicedArtifact(out);
      assert.deepEqual(JSON.parse(fs.readFileSync(path.join(out, 'config.json'), 'utf8')).architectures, model.config.architectures);
      const slicedLogits = await allLogits(loaded);
      assert.ok(maxAbsDiff(slicedLogits, await allLogits(sliced)) === 0, 'artifact round trip');
      const toReference = maxAbsDiff(slicedLogits, referenceLogits(out));
      assert.ok(toReference < 1e-4, `DecoderSession vs the reference forward of the saved slice: ${toReference}`);
      const p = await ppl(loaded, windows);
      assert.ok(Number.isFinite(p) && p > 1, `perplexity ${p}`);
      const r = await withSession(loaded, 'last', (s) => generate(s, loaded.tokenizer, TOKENS.slice(0, 5), { maxTokens: 6, sampling: SAMPLING, stopAtEos: false }));
      assert.equal(r.tokens.length, 6);
    }
  });
}
