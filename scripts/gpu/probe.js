#!/usr/bin/env node
'use strict';
// Provider selection on this machine, for scripts/gpu-check.sh: the pre-check of each device
// (runtime/device.ts), the choice `--device auto` makes, and a real session on every GPU
// device that passes its pre-check, checked against a float64 reference on a small graph
// (y = x W + b, x [4, 64], W [64, 32]).
//
// Prints "PASS ..."/"FAIL ..." lines and, last, "gpu-devices: <devices whose session worked>".
// Exit code 0 unless a device that passed its pre-check failed to run or gave wrong values.
// Usage: node scripts/gpu/probe.js   (after `npm run build`)
const path = require('node:path');

const root = path.join(__dirname, '..', '..');
const device = require(path.join(root, 'dist', 'runtime', 'device.js'));
const ort = require('onnxruntime-node');
const { OnnxGraph } = require(path.join(root, 'dist', 'models', 'onnx', 'builder.js'));

const N = 4;
const K = 64;
const M = 32;

/** Deterministic values in [-1, 1). */
function values(count, seed) {
  const out = new Float32Array(count);
  let s = seed >>> 0;
  for (let i = 0; i < count; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s / 2 ** 31 - 1;
  }
  return out;
}

const W = values(K * M, 1);
const B = values(M, 2);
const X = values(N * K, 3);

function affineModel() {
  const g = new OnnxGraph('affine', 'weights.bin', Infinity); // self-contained: no external data
  const x = g.input('x', 'float32', ['n', K]);
  const w = g.initializer('W', 'float32', [K, M], W);
  const b = g.initializer('b', 'float32', [M], B);
  g.op('Add', [g.op('MatMul', [x, w]), b], {}, { output: 'y' });
  g.output('y', 'float32', ['n', M]);
  return g.build().model;
}

function reference() {
  const y = new Float64Array(N * M);
  for (let i = 0; i < N; i++) {
    for (let j = 0; j < M; j++) {
      let s = B[j];
      for (let k = 0; k < K; k++) s += X[i * K + k] * W[k * M + j];
      y[i * M + j] = s;
    }
  }
  return y;
}

async function main() {
  const model = affineModel();
  const want = reference();
  const logger = { info: (m) => console.log(`log: ${m}`), warn: (m) => console.log(`log: ${m}`) };
  console.log(`onnxruntime-node ${device.onnxruntimeVersion()} on ${process.platform}/${process.arch}, node ${process.version}`);

  for (const d of ['cuda', 'webgpu', 'cpu']) {
    const p = device.probeDevice(d);
    console.log(p.available ? `probe ${d}: available${p.notes.length ? ` (${p.notes.join('; ')})` : ''}` : `probe ${d}: unavailable: ${p.reason}; fix: ${p.fix}`);
  }

  let failed = false;
  const auto = await device.createSessionOnDevice(model, { device: 'auto', logger });
  console.log(`auto selected: ${auto.device} (${device.EXECUTION_PROVIDER_NAMES[auto.device]})`);
  await auto.session.release();

  const working = [];
  for (const d of ['cuda', 'webgpu', 'cpu']) {
    if (!device.probeDevice(d).available) continue;
    const t0 = process.hrtime.bigint();
    try {
      const { session } = await device.createSessionOnDevice(model, { device: d, logger });
      const out = await session.run({ x: new ort.Tensor('float32', X, [N, K]) });
      await session.release();
      const got = out.y.data;
      let err = 0;
      for (let i = 0; i < want.length; i++) err = Math.max(err, Math.abs(got[i] - want[i]));
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      // fp32 dot products of length 64 with |values| < 1 are within ~1e-6 of float64; inputs
      // rounded to TF32 (10-bit mantissa, which GPU MatMuls may use) give errors near 1e-3.
      const precision = err <= 1e-5 ? 'fp32 accuracy' : 'reduced precision, TF32-like';
      if (err <= 5e-3) {
        console.log(`PASS session ${d}: x W + b matches the float64 reference (max abs err ${err.toExponential(2)}: ${precision}; ${ms.toFixed(0)} ms incl. session creation)`);
        if (d !== 'cpu') working.push(d);
      } else {
        console.log(`FAIL session ${d}: max abs err ${err.toExponential(2)} > 5e-3 against the float64 reference`);
        failed = true;
      }
    } catch (err) {
      console.log(`FAIL session ${d}: ${err && err.message ? err.message.split('\n')[0] : err}`);
      failed = true;
    }
  }
  console.log(`gpu-devices: ${working.join(' ')}`);
  process.exitCode = failed ? 1 : 0;
}

main().catch((err) => {
  console.log(`FAIL probe: ${err && err.message ? err.message.split('\n')[0] : err}`);
  console.log('gpu-devices: ');
  process.exitCode = 1;
});
