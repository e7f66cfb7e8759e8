#!/usr/bin/env node
'use strict';
// One WebGPU session on whatever Vulkan driver is selected (lavapipe or a GPU): y = x * 2 + 1
// over 8 values, fetched to the host and compared exactly. Exit 0 and "webgpu-smoke: ok" when
// it works; exit 1 with onnxruntime's first error line otherwise. Needs dist/ (npx tsc -p .).
// Used by scripts/lavapipe-setup.sh.
const path = require('node:path');
const ort = require('onnxruntime-node');
const { OnnxGraph } = require(path.join(__dirname, '..', '..', 'dist', 'models', 'onnx', 'builder.js'));

(async () => {
  const g = new OnnxGraph('webgpu-smoke', 'smoke.bin', Infinity);
  const x = g.input('x', 'float32', [8]);
  const y = g.op('Add', [g.op('Mul', [x, g.initializer('two', 'float32', [1], Float32Array.of(2))]), g.initializer('one', 'float32', [1], Float32Array.of(1))]);
  g.op('Identity', [y], {}, { output: 'y' });
  g.output('y', 'float32', [8]);
  const session = await ort.InferenceSession.create(g.build().model, { executionProviders: ['webgpu'] });
  const input = Float32Array.from({ length: 8 }, (_, i) => i - 3);
  const out = (await session.run({ x: new ort.Tensor('float32', input, [8]) })).y.data;
  const bad = Array.from(input).findIndex((v, i) => out[i] !== v * 2 + 1);
  await session.release();
  if (bad >= 0) throw new Error(`wrong value at ${bad}: ${out[bad]} instead of ${input[bad] * 2 + 1}`);
  console.log('webgpu-smoke: ok (y = 2x + 1 on 8 values, exact)');
})().catch((e) => {
  console.error(`webgpu-smoke: FAILED: ${String((e && e.message) || e).split('\n')[0]}`);
  process.exit(1);
});
