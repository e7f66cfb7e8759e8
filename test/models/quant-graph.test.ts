/**
 * The quantized decoder graph (models/onnx/ with models/quant/model.ts), for every registered
 * family on its transformers fixture, dense and sliced: each quantized tensor becomes one
 * MatMulNBits; at accuracy_level 0 the logits equal those of the float graph over the
 * dequantized weights (what MatMulNBits multiplies by); KV-cache decode equals recompute at the
 * presets' accuracy_level 4; float16 graphs agree with float32 ones. On stories260K: int8 greedy
 * text equals float32 greedy text.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { onnx } from 'onnx-proto';
import { generate } from '../../engine/generate.js';
import { loadModel } from '../../models/load.js';
import { buildDecoderGraph } from '../../models/onnx/decoder-graph.js';
import { countModelParameters, countParameters } from '../../models/parameters.js';
import { dequantizedModel, quantizationPlan, QUANT_PRESETS, quantizeModel, QuantizationError, type QuantPresetName } from '../../models/quant/index.js';
import { layoutOf } from '../../models/registry.js';
import type { LoadedModel } from '../../models/types.js';
import { DecoderSession } from '../../runtime/decoder-session.js';
import { sliceModelWithReport } from '../../slicer/index.js';
import { REPO_ROOT } from './helpers.js';

const FIXTURES = path.join(REPO_ROOT, 'test', 'fixtures', 'transformers');
const CALIBRATION = path.join(REPO_ROOT, 'data', 'tinystories-train-sample.txt');
const TOKENS = [1, 403, 407, 261, 378, 18, 90, 311, 24, 420, 7, 151, 44, 300, 12, 5];
const variants = fs.readdirSync(FIXTURES).filter((d) => fs.existsSync(path.join(FIXTURES, d, 'config.json'))).sort();
const GREEDY = { temperature: 0, topP: 1, topK: 0, presencePenalty: 0, frequencyPenalty: 0 };
const PRESETS: QuantPresetName[] = ['int8', 'int4'];

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]));
  return m;
}

async function withSession<T>(model: LoadedModel, logits: 'all' | 'last', f: (s: DecoderSession) => Promise<T>, dtype: 'float32' | 'float16' = 'float32'): Promise<T> {
  const s = await DecoderSession.create(model, { logits, threads: 1, dtype });
  try {
    return await f(s);
  } finally {
    await s.release();
  }
}

const allLogits = (model: LoadedModel, dtype: 'float32' | 'float16' = 'float32') =>
  withSession(model, 'all', async (s) => Float32Array.from((await s.step([{ cache: s.newCache(), tokens: TOKENS }]))[0]), dtype);

/** Op types of the decoder graph, counted. */
function opCounts(model: LoadedModel): Map<string, number> {
  const proto = onnx.ModelProto.decode(buildDecoderGraph(model, { logits: 'all' }).model);
  const counts = new Map<string, number>();
  for (const n of proto.graph!.node!) counts.set(n.opType!, (counts.get(n.opType!) ?? 0) + 1);
  return counts;
}

for (const variant of variants) {
  const dir = path.join(FIXTURES, variant);

  test(`${variant}: quantized graphs (dense and sliced 0.25, int8 and int4) equal the float graph over the dequantized weights`, async () => {
    const dense = loadModel(dir);
    const { model: sliced } = await sliceModelWithReport(dense, { sparsity: 0.25, calibrationFile: CALIBRATION, calWindows: 8, calSeqLen: 32 });
    for (const [kind, model] of [['dense', dense], ['sliced', sliced]] as const) {
      const f32 = await allLogits(model);
      for (const preset of PRESETS) {
        const what = `${kind} ${preset}`;
        const q = await quantizeModel(model, preset, { accuracyLevel: 0 });
        assert.equal(q.id, `${model.id}-${preset}`);
        const layout = layoutOf(model.config);
        const tiedHead = model.weights.has(layout.lmHead.weight) ? 0 : model.weights.get(layout.embedTokens)!.data.length;
        assert.equal(countModelParameters(q), countParameters(model.weights) + tiedHead, `${what}: parameters (a tied head is quantized as a tensor of its own)`);
        // One MatMulNBits per fused projection (qkv, o, gate_up or fc1, down), per shortcut, and the head; no float MatMul on a weight.
        const L = model.config.num_hidden_layers;
        const shortcuts = kind === 'sliced' ? (model.config.block === 'parallel' ? L : 2 * L) : 0;
        assert.equal(opCounts(q).get('MatMulNBits') ?? 0, 4 * L + shortcuts + 1, `${what}: MatMulNBits nodes`);
        assert.equal(quantizationPlan(model, QUANT_PRESETS[preset]).length, (model.config.gated_mlp ? 7 : 6) * L + shortcuts + 1);
        const got = await allLogits(q);
        const want = await allLogits(dequantizedModel(q));
        const scale = Math.max(1, maxAbs(want));
        assert.ok(maxAbsDiff(got, want) < 2e-5 * scale, `${what}: max |quantized - dequantized reference| = ${maxAbsDiff(got, want)} (logits up to ${scale})`);
        // The quantization moved the logits (the comparison is not float vs float).
        assert.ok(maxAbsDiff(got, f32) > 1e-6, `${what}: the weights were quantized`);
      }
    }
  });

  test(`${variant}: a quantized model (int4 preset, accuracy_level 4) decodes with the KV cache as it recomputes`, async () => {
    const dense = loadModel(dir);
    const q = await quantizeModel(dense, 'int4');
    assert.equal(q.quantization!.options.accuracyLevel, 4);
    const full = await allLogits(q);
    const V = dense.config.vocab_size;
    await withSession(q, 'last', async (s) => {
      const cache = s.newCache();
      await s.step([{ cache, tokens: TOKENS.slice(0, 4) }]);
      for (let t = 4; t < TOKENS.length; t++) {
        const got = (await s.step([{ cache, tokens: [TOKENS[t]] }]))[0];
        const want = full.subarray(t * V, (t + 1) * V);
        assert.ok(maxAbsDiff(got, want) < 1e-4 * Math.max(1, maxAbs(want)), `position ${t}: ${maxAbsDiff(got, want)}`);
      }
    });
  });
}

test('stories260K: accuracy_level 4 stays close to the dequantized reference; float16 quantized graphs agree with float32', async () => {
  const dense = loadModel(path.join(REPO_ROOT, 'models', 'stories260K'));
  for (const preset of PRESETS) {
    const q = await quantizeModel(dense, preset);
    const got = await allLogits(q);
    const want = await allLogits(dequantizedModel(q));
    // accuracy_level 4 quantizes A to int8 per block: a small error, not float rounding.
    const rel = maxAbsDiff(got, want) / maxAbs(want);
    assert.ok(rel < 0.03, `${preset}: relative logit error ${rel} at accuracy_level 4`);
    const half = await allLogits(q, 'float16');
    assert.ok(maxAbsDiff(half, got) < 0.05 * maxAbs(got), `${preset}: float16 vs float32 ${maxAbsDiff(half, got)}`);
  }
});

/**
 * The golden prompts: the repository's greedy-test prompts and the first six words of the first
 * 20 validation stories (docs/quantization.md reports the same count).
 */
function goldenPrompts(): string[] {
  const stories = fs.readFileSync(path.join(REPO_ROOT, 'data', 'tinystories-valid-sample.txt'), 'utf8').split('<|endoftext|>').map((s) => s.trim()).filter(Boolean);
  return ['Once upon a time', 'The cat', 'Tom had a dog', 'Lily and Ben went to the park', ...stories.slice(0, 20).map((s) => s.split(/\s+/).slice(0, 6).join(' '))];
}

test('stories260K: int8 greedy text equals float32 greedy text on "Once upon a time" and on at least 19 of the 24 golden prompts', async () => {
  const dense = loadModel(path.join(REPO_ROOT, 'models', 'stories260K'));
  const q = await quantizeModel(dense, 'int8');
  const prompts = goldenPrompts();
  const greedy = (m: LoadedModel) => withSession(m, 'last', async (s) => {
    const out: string[] = [];
    for (const p of prompts) out.push((await generate(s, m.tokenizer, m.tokenizer.encode(p), { maxTokens: 60, sampling: GREEDY })).text);
    return out;
  });
  const [a, b] = [await greedy(dense), await greedy(q)];
  assert.equal(b[0], a[0], 'Once upon a time');
  const same = a.filter((t, i) => t === b[i]).length;
  assert.ok(same >= 19, `${same} of ${prompts.length} prompts give the same 60 greedy tokens`);
});

test('quantizeModel refuses an already-quantized model, an unknown preset and non-finite weights, naming the tensor', async () => {
  const dense = loadModel(path.join(REPO_ROOT, 'models', 'stories260K'));
  const q = await quantizeModel(dense, 'int8');
  await assert.rejects(quantizeModel(q, 'int4'), (e: unknown) => e instanceof QuantizationError && /already quantized \(int8\)/.test(e.message));
  await assert.rejects(quantizeModel(dense, 'int3' as QuantPresetName), /unknown quantization "int3"; use int8 or int4/);
  const bad = new Map(dense.weights);
  const name = 'model.layers.2.mlp.up_proj.weight';
  const w = bad.get(name)!;
  const data = Float32Array.from(w.data);
  data[5] = NaN;
  bad.set(name, { shape: w.shape, data });
  await assert.rejects(quantizeModel({ ...dense, weights: bad }, 'int4'), (e: unknown) => e instanceof QuantizationError && e.message.startsWith(`${name}: weight [0, 5] is NaN`));
});

test('consume: the float tensors leave the source map as they are quantized; the embedding of a tied head stays', async () => {
  const dense = loadModel(path.join(REPO_ROOT, 'models', 'stories260K'));
  const names = [...dense.weights.keys()];
  const q = await quantizeModel(dense, 'int4', { consume: true });
  const layout = layoutOf(dense.config);
  assert.ok(dense.weights.has(layout.embedTokens));
  assert.ok(!dense.weights.has('model.layers.0.self_attn.q_proj.weight'));
  assert.ok(q.quantization!.tensors.has(layout.lmHead.weight), 'the tied head is quantized under the head name');
  assert.equal(q.quantization!.tensors.get(layout.lmHead.weight)!.q.layout.bits, 8, 'int4 keeps the head at 8 bits');
  for (const n of names) assert.ok(q.weights.has(n) !== q.quantization!.tensors.has(n) || n === layout.embedTokens, n);
});
