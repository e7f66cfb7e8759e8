#!/usr/bin/env node
'use strict';
// WebGPU DecoderSession with the KV cache held on the device vs the host KV path (and vs a CPU
// DecoderSession unless --no-cpu), for scripts/gpu-check.sh and local runs on lavapipe:
// a batch of sequences prefills random prompts together, decodes greedily, and one sequence
// leaves halfway (the device past is re-laid from the host once). Checks logits against the
// CPU session (--tol, default 1e-4) and equal greedy tokens; prints the median decode-step
// time of each path (steps that re-laid the past excluded; informational, not a check).
//
// Usage: node scripts/gpu/webgpu-kv.js --model <dir> [--batch 4] [--prompt 12] [--steps 32]
//          [--tol 1e-4] [--no-cpu] [--threads N]       (after `npx tsc -p .`)
// Prints "PASS ..."/"FAIL ..." lines; exit 1 on a failure. Needs a WebGPU adapter.
const path = require('node:path');
const { parseArgs: parseCliArgs } = require('node:util');

const root = path.join(__dirname, '..', '..');
const { DecoderSession } = require(path.join(root, 'dist', 'runtime', 'decoder-session.js'));
const { loadModel } = require(path.join(root, 'dist', 'models', 'load.js'));

function parseArgs(argv) {
  const { values: v } = parseCliArgs({
    args: argv,
    options: {
      model: { type: 'string' },
      batch: { type: 'string', default: '4' },
      prompt: { type: 'string', default: '12' },
      steps: { type: 'string', default: '32' },
      tol: { type: 'string', default: '1e-4' },
      threads: { type: 'string' },
      'no-cpu': { type: 'boolean', default: false },
    },
  });
  if (!v.model) throw new Error('--model <dir> is required, e.g. --model models/stories260K');
  return {
    model: v.model,
    batch: Number(v.batch),
    prompt: Number(v.prompt),
    steps: Number(v.steps),
    tol: Number(v.tol),
    cpu: !v['no-cpu'],
    threads: v.threads === undefined ? undefined : Number(v.threads),
  };
}

const argmax = (a) => a.reduce((best, v, i) => (v > a[best] ? i : best), 0);
const median = (xs) => (xs.length ? xs.slice().sort((a, b) => a - b)[xs.length >> 1] : NaN);

(async () => {
  const o = parseArgs(process.argv.slice(2));
  const model = loadModel(o.model);
  const vocab = model.config.vocab_size;
  const sessions = { device: await DecoderSession.create(model, { device: 'webgpu', deviceKV: true, threads: o.threads }) };
  sessions.host = await DecoderSession.create(model, { device: 'webgpu', deviceKV: false, threads: o.threads });
  if (o.cpu) sessions.cpu = await DecoderSession.create(model, { device: 'cpu', threads: o.threads });
  const names = Object.keys(sessions);
  let seed = 12345;
  const rand = () => ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 2 ** 32);
  let seqs = Array.from({ length: o.batch }, (_, b) => ({
    caches: Object.fromEntries(names.map((n) => [n, sessions[n].newCache()])),
    next: Array.from({ length: o.prompt + b }, () => 1 + Math.floor(rand() * (vocab - 1))),
  }));
  const ms = Object.fromEntries(names.map((n) => [n, []]));
  const diff = { device: 0, host: 0 };
  let mismatches = 0;
  for (let step = 0; step <= o.steps; step++) {
    if (step === o.steps >> 1 && seqs.length > 1) seqs = seqs.slice(1); // one sequence leaves
    const got = {};
    for (const n of names) {
      const before = sessions[n].deviceKVStats.reused;
      const t0 = performance.now();
      got[n] = await sessions[n].step(seqs.map((s) => ({ cache: s.caches[n], tokens: s.next })));
      const dt = performance.now() - t0;
      // decode steps only; for the device path only those that reused the held past
      if (step > 1 && (n !== 'device' || sessions[n].deviceKVStats.reused > before)) ms[n].push(dt);
    }
    seqs.forEach((s, k) => {
      const ref = got.cpu ? got.cpu[k] : got.device[k];
      for (const n of ['device', 'host']) {
        for (let v = 0; v < ref.length; v++) diff[n] = Math.max(diff[n], Math.abs(got[n][k][v] - ref[v]));
        if (argmax(got[n][k]) !== argmax(ref)) mismatches++;
      }
      s.next = [argmax(ref)];
    });
  }
  const stats = sessions.device.deviceKVStats;
  const shape = `${model.id ?? path.basename(o.model)}, batch ${o.batch} -> ${o.batch - 1}, prompt ${o.prompt}+, ${o.steps} decode steps`;
  console.log(`webgpu-kv: ${shape}; device past reused in ${stats.reused} steps, uploaded ${JSON.stringify(stats.uploaded)}, held in ${stats.pastLocation}`);
  console.log(
    `webgpu-kv: median decode step: device KV ${median(ms.device).toFixed(2)} ms, host KV ${median(ms.host).toFixed(2)} ms` +
      (o.cpu ? `, cpu ${median(ms.cpu).toFixed(2)} ms` : ''),
  );
  let failed = false;
  const ref = o.cpu ? 'cpu' : 'device KV';
  for (const n of o.cpu ? ['device', 'host'] : ['host']) {
    const ok = diff[n] <= o.tol;
    failed ||= !ok;
    console.log(`${ok ? 'PASS' : 'FAIL'} webgpu ${n} KV vs ${ref}: max |logit diff| ${diff[n].toExponential(2)} (tolerance ${o.tol})`);
  }
  const okTokens = mismatches === 0;
  const okHeld = stats.reused > 0 && stats.pastLocation === 'gpu-buffer';
  console.log(`${okTokens ? 'PASS' : 'FAIL'} webgpu greedy tokens equal ${ref}'s (${mismatches} differ)`);
  console.log(`${okHeld ? 'PASS' : 'FAIL'} webgpu past held in GPU buffers and fed back (${stats.reused} steps)`);
  for (const s of Object.values(sessions)) await s.release();
  process.exit(failed || !okTokens || !okHeld ? 1 : 0);
})().catch((e) => {
  console.log(`FAIL webgpu-kv: ${String((e && e.message) || e).split('\n')[0]}`);
  process.exit(1);
});
