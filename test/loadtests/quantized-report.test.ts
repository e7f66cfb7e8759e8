/**
 * Quantized variants in the load test: weight bytes per token in the MatMulNBits layout
 * (checked against the bytes of real quantized models), every slice compared with the dense
 * model of its own precision, the sparsity x precision matrix, the batch-1 bound of each
 * model's own bytes, peers matched by the precision their name says.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import { matMulNBitsBytes, weightBytesPerToken } from '../../loadtests/flops.js';
import { peerPrecision, renderMarkdown } from '../../loadtests/markdown.js';
import { modelEntries, type Selection } from '../../loadtests/models.js';
import { parsePrecisions } from '../../loadtests/options.js';
import { ReportSchema, buildReport, type ReportContext } from '../../loadtests/report.js';
import type { RunResult } from '../../loadtests/runner.js';
import type { ModelCard } from '../../loadtests/server-process.js';
import { chartSpec } from '../../loadtests/chart.js';
import { loadModel } from '../../models/load.js';
import { blockQuantJson, quantizedModelBytes, quantizeModel, QUANT_PRESETS } from '../../models/quant/index.js';
import { sliceModelWithReport } from '../../slicer/index.js';
import { REPO_ROOT } from '../models/helpers.js';

const spec = (name: 'int8' | 'int4') => {
  const p = QUANT_PRESETS[name];
  return { linear: blockQuantJson(p.linear)!, head: blockQuantJson(p.head), shortcuts: blockQuantJson(p.shortcuts) };
};

test('matMulNBitsBytes: codes, float32 scales and packed zero points per row', () => {
  // K = 100, block 32: 4 blocks (the last padded) of 16 code bytes, 4 scales, 2 zero-point bytes.
  assert.equal(matMulNBitsBytes(3, 100, { bits: 4, block_size: 32, symmetric: false }), 3 * (64 + 16 + 2));
  assert.equal(matMulNBitsBytes(3, 100, { bits: 4, block_size: 32, symmetric: true }), 3 * (64 + 16));
  assert.equal(matMulNBitsBytes(2, 256, { bits: 8, block_size: 128, symmetric: false }, 2), 2 * (256 + 4 + 2));
});

test('weightBytesPerToken equals the bytes of real quantized stories260K models (dense and sliced, int8 and int4)', async () => {
  const dir = path.join(REPO_ROOT, 'models', 'stories260K');
  const dense = loadModel(dir);
  const shape = { hidden_size: 64, intermediate_size: 172, num_hidden_layers: 5, num_attention_heads: 8, num_key_value_heads: 4, head_dim: 8, vocab_size: 512 };
  const { model: sliced } = await sliceModelWithReport(loadModel(dir), { sparsity: 0.25, calibrationFile: path.join(REPO_ROOT, 'data', 'tinystories-train-sample.txt'), calWindows: 4, calSeqLen: 64 });
  for (const p of ['int8', 'int4'] as const) {
    assert.equal(weightBytesPerToken(shape, spec(p)), quantizedModelBytes(await quantizeModel(dense, p)) + 4 * 64, `dense ${p}`);
    assert.equal(weightBytesPerToken({ ...shape, sliced_hidden_size: 48 }, spec(p)), quantizedModelBytes(await quantizeModel(sliced, p)) + 4 * 48, `sliced ${p}`);
  }
  // Float32: 4 bytes per matmul weight plus the embedding row, as before.
  const floatWeights = [...dense.weights.entries()].filter(([n]) => !/norm|embed/.test(n)).reduce((s, [, t]) => s + t.data.length, 0) + 512 * 64;
  assert.equal(weightBytesPerToken(shape, null), 4 * (floatWeights + 64));
});

const SHAPE = { hidden_size: 64, intermediate_size: 176, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 16, vocab_size: 32000 };
const card = (id: string, precision: 'none' | 'int8' | 'int4', sparsity: number): ModelCard => ({
  id,
  root: 'synth',
  ...(sparsity > 0 ? { parent: 'synth', slicing: { sparsity, hidden_size: 32, original_hidden_size: 64 } } : precision !== 'none' ? { parent: 'synth' } : {}),
  precision: precision === 'none' ? 'float32' : precision,
  ...(precision === 'none' ? {} : { quantization: { method: precision, ...spec(precision) } }),
});

function record(model: string, tpot: number) {
  return { model, concurrency: 1, start_s: 0, ok: true, ttft_s: 0.1, tpot_s: tpot, itl_s: [tpot], e2e_s: 0.1 + 3 * tpot, output_tokens: 4, prompt_tokens: 10 };
}

test('a report with int4 next to float32: slices against the dense model of their precision, the matrix, the bound of the quantized bytes, peers by precision', () => {
  const sel: Selection = {
    root: 'synth',
    byPrecision: [
      { precision: 'none', dense: card('synth', 'none', 0), sliced: [card('synth-sliced-0.5', 'none', 0.5)] },
      { precision: 'int4', dense: card('synth-int4', 'int4', 0), sliced: [card('synth-sliced-0.5-int4', 'int4', 0.5)] },
    ],
  };
  const models = modelEntries(sel, SHAPE);
  assert.deepEqual(models.map((m) => [m.id, m.precision, m.sparsity]), [['synth', 'none', 0], ['synth-sliced-0.5', 'none', 0.5], ['synth-int4', 'int4', 0], ['synth-sliced-0.5-int4', 'int4', 0.5]]);
  assert.equal(models[2].weight_bytes_per_token, weightBytesPerToken(SHAPE, spec('int4')));
  // Here d = 64 is below the head's int8 block of 128 (a padded block per row), so the head saves only 1.9x.
  assert.ok(models[2].weight_bytes_per_token! < models[0].weight_bytes_per_token! / 1.5);
  // tok/s at concurrency 1: 4 tokens / wall; float dense 4, float slice 6, int4 dense 10, int4 slice 12.
  const walls: Record<string, number> = { synth: 1, 'synth-sliced-0.5': 4 / 6, 'synth-int4': 0.4, 'synth-sliced-0.5-int4': 4 / 12 };
  const result: RunResult = {
    blocks: Object.entries(walls).map(([model, wall_s]) => ({ block: { concurrency: 1, level: 0, round: 0, model }, records: [record(model, 0.01)], wall_s })),
    skipped: [],
    wall_s: 3,
  };
  const ctx: ReportContext = {
    created: new Date('2026-12-04T12:00:00Z'),
    gitCommit: 'abc',
    model: { dir: 'x', preset: 'tiny', synthetic: true, config: null },
    requestShape: { prompt_tokens: 10, output_tokens: 4, ignore_eos: true, stream: true, temperature: 0, prefix_caching: 'defeated' },
    options: {},
    machine: { cpu_model: 'cpu', cores: 2, memory_bytes: 1, os: 'linux', node: '20', onnxruntime_node: '1.29.0', execution_provider: 'cpu', read_bandwidth_bytes_per_s: 20e9, read_bandwidth_method: 'probe', load_average_start: null, load_average_end: null },
    models,
    notes: [],
  };
  const report = buildReport(result, ctx);
  assert.ok(ReportSchema.safeParse(report).success);
  const sp = new Map(report.speedup.map((s) => [s.model, s]));
  assert.ok(Math.abs(sp.get('synth-sliced-0.5')!.measured! - 1.5) < 1e-12);
  assert.ok(Math.abs(sp.get('synth-sliced-0.5-int4')!.measured! - 1.2) < 1e-12, 'the int4 slice against dense int4, not against dense f32');
  assert.equal(sp.get('synth-sliced-0.5-int4')!.precision, 'int4');
  const b1 = report.decode_batch1.find((d) => d.model === 'synth-int4')!;
  assert.equal(b1.weight_bytes_per_token, models[2].weight_bytes_per_token);
  assert.ok(Math.abs(b1.bandwidth_bound_tokens_per_s! - 20e9 / b1.weight_bytes_per_token) < 1e-6);
  const md = renderMarkdown(report, { title: 't', chartPath: 'c.svg' });
  assert.match(md, /## Sparsity x precision/);
  assert.match(md, /\| model \| f32 c=1 \| int4 c=1 \|/);
  assert.match(md, /\| dense \| 4\.0 \| 10\.0 \(2\.50x\) \|/);
  assert.match(md, /\| sliced 50 % \| 6\.0 \| 12\.0 \(2\.00x\) \|/);
  assert.match(md, /sliced 50 % int4 at concurrency 1 reaches >= 90 % of its expected speedup over dense int4/);
  assert.match(md, /dense int4 decodes at batch 1 at >= 85 % of the bandwidth bound of its own weight bytes/);
  assert.match(md, /\| dense int4 \(`synth-int4`\) \|/);
  assert.match(JSON.stringify(chartSpec(report)), /sliced 50 % int4/);
  // A float-only report keeps the labels it always had.
  const floatOnly = buildReport(result, { ...ctx, models: models.slice(0, 2) });
  assert.doesNotMatch(renderMarkdown(floatOnly, { title: 't', chartPath: 'c.svg' }), /f32 \(`synth`\)|Sparsity x precision/);
  assert.equal(peerPrecision('llamacpp-q8_0'), 'int8');
  assert.equal(peerPrecision('llamacpp-q4_0'), 'int4');
  assert.equal(peerPrecision('llamacpp-f32'), 'none');
  assert.equal(peerPrecision('vllm'), null);
});

test('--quantize of the load generator: precisions, duplicates dropped, bad values one line', () => {
  assert.deepEqual(parsePrecisions('none, INT4,int4'), ['none', 'int4']);
  assert.throws(() => parsePrecisions('fp16'), /--quantize takes precisions none, int8, int4, comma-separated \(none = float32 weights\), e\.g\. none,int4; got "fp16"/);
});
