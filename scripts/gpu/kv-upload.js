#!/usr/bin/env node
'use strict';
// What the host round trip of the KV cache costs per decode step on a device (issue 6: the
// Node API has no IO binding, so a host-held cache is uploaded as past_key_values.* every
// step; DecoderSession fetches back only step_key_values.*, one position per sequence).
//
// Feeds 2 x num_hidden_layers past tensors [batch, num_key_value_heads, past, head_dim]
// (float32, the model's shape) from the host to a one-node-per-input graph that reduces each
// to a scalar (so the device does almost no work), and times session.run at each past length
// against the same run at past 1; the difference is the upload. Prints ms per step, MB and
// GB/s. Informational (scripts/gpu-check.sh runs it on cuda); also runs on webgpu, and on cpu
// (where nothing is copied: the difference is then the reduction reading the cache).
//
// Usage: node scripts/gpu/kv-upload.js --model <dir with config.json> [--device cuda]
//          [--batch 8] [--past 128,512,1024] [--runs 20]        (after `npx tsc -p .`)
const fs = require('node:fs');
const path = require('node:path');
const { parseArgs: parseCliArgs } = require('node:util');

const root = path.join(__dirname, '..', '..');
const { OnnxGraph } = require(path.join(root, 'dist', 'models', 'onnx', 'builder.js'));
const { createSessionOnDevice } = require(path.join(root, 'dist', 'runtime', 'device.js'));
const ort = require('onnxruntime-node');

function parseArgs(argv) {
  const { values: v } = parseCliArgs({
    args: argv,
    options: {
      model: { type: 'string' },
      device: { type: 'string', default: 'cuda' },
      batch: { type: 'string', default: '8' },
      past: { type: 'string', default: '128,512,1024' },
      runs: { type: 'string', default: '20' },
    },
  });
  if (!v.model) throw new Error('--model <dir> is required (a directory with config.json)');
  return { model: v.model, device: v.device, batch: Number(v.batch), past: v.past.split(',').map(Number), runs: Number(v.runs) };
}

/** num_hidden_layers, num_key_value_heads, head_dim from a Hugging Face config.json. */
function kvShape(dir) {
  const c = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
  const kv = c.num_key_value_heads ?? c.num_attention_heads;
  return { layers: c.num_hidden_layers, kvHeads: kv, headDim: c.head_dim ?? c.hidden_size / c.num_attention_heads };
}

function graph(n) {
  const g = new OnnxGraph('kv-upload', 'none.bin', Infinity);
  const sums = [];
  for (let i = 0; i < n; i++) sums.push(g.op('ReduceMax', [g.input(`past_${i}`, 'float32', ['batch', 'kv', 'past', 'hd'])], { keepdims: 0 }));
  g.op('Sum', sums, {}, { output: 'out' });
  g.output('out', 'float32', []);
  return g.build().model;
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const { layers, kvHeads, headDim } = kvShape(o.model);
  const n = 2 * layers;
  const { session, device } = await createSessionOnDevice(graph(n), { device: o.device, sessionOptions: { graphOptimizationLevel: 'all' } });
  const time = async (past) => {
    const feeds = {};
    for (let i = 0; i < n; i++) feeds[`past_${i}`] = new ort.Tensor('float32', new Float32Array(o.batch * kvHeads * past * headDim).fill(i), [o.batch, kvHeads, past, headDim]);
    const t = [];
    for (let r = 0; r < o.runs + 3; r++) {
      const t0 = performance.now();
      await session.run(feeds);
      if (r >= 3) t.push(performance.now() - t0);
    }
    t.sort((a, b) => a - b);
    return t[t.length >> 1];
  };
  const base = await time(1);
  console.log(`kv-upload on ${device}: ${layers} layers x key+value [${o.batch}, ${kvHeads}, past, ${headDim}] float32; run at past 1: ${base.toFixed(2)} ms`);
  for (const past of o.past) {
    const ms = await time(past);
    const mb = (n * o.batch * kvHeads * past * headDim * 4) / 1e6;
    const upload = Math.max(ms - base, 0);
    console.log(`past ${past}: ${mb.toFixed(1)} MB per step, run ${ms.toFixed(2)} ms, upload ~${upload.toFixed(2)} ms (${upload > 0 ? (mb / upload).toFixed(1) : '-'} GB/s)`);
  }
  await session.release();
}

main().catch((err) => {
  console.error(`kv-upload: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
