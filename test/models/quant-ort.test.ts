// MatMulNBits graphs from models/quant/ run by onnxruntime's CPU kernels and compared with a
// float64 matmul with the dequantized weights (what the op is specified to compute).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import * as ort from 'onnxruntime-node';
import { OnnxGraph } from '../../models/onnx/builder.js';
import { addDynamicQuantizeMatMul, addMatMulNBits, dequantizeBlockwise, dequantizePerChannelInt8, quantizePerChannelInt8, quantizeBlockwise, QuantizationError, type AccuracyLevel, type BlockQuantizedWeight, type QuantBits } from '../../models/quant/index.js';
import { float16BitsToFloat32, toFloat16Array } from '../../models/safetensors.js';
import type { WeightTensor } from '../../models/types.js';
import { seededNormals } from '../../slicer/linalg/index.js';

function gaussian(shape: [number, number], seed: number, scale: number): WeightTensor {
  const g = seededNormals(shape[0] * shape[1], seed);
  return { shape, data: Float32Array.from(g, (v, i) => scale * v * (i % 53 === 7 ? 12 : 1)) };
}

/** Y = A W^T in float64, A [M, K], W [N, K]. */
function reference(a: Float32Array, M: number, w: WeightTensor, bias?: Float32Array): Float64Array {
  const [N, K] = w.shape;
  const y = new Float64Array(M * N);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let s = bias ? bias[n] : 0;
      for (let k = 0; k < K; k++) s += a[m * K + k] * w.data[n * K + k];
      y[m * N + n] = s;
    }
  }
  return y;
}

function relativeError(y: ArrayLike<number>, ref: Float64Array): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < ref.length; i++) {
    num += (y[i] - ref[i]) ** 2;
    den += ref[i] ** 2;
  }
  return Math.sqrt(num / den);
}

async function session(q: BlockQuantizedWeight, opts: { accuracyLevel: AccuracyLevel; dtype?: 'float32' | 'float16'; bias?: Float32Array; rank3?: boolean }): Promise<ort.InferenceSession> {
  const dtype = opts.dtype ?? 'float32';
  const g = new OnnxGraph('matmul_nbits_test', 'weights.bin', Infinity);
  const x = g.input('x', dtype, opts.rank3 ? ['batch', 'seq', q.layout.K] : ['batch', q.layout.K]);
  g.output(addMatMulNBits(g, x, q, { accuracyLevel: opts.accuracyLevel, dtype, bias: opts.bias, output: 'y' }), dtype, opts.rank3 ? ['batch', 'seq', q.layout.N] : ['batch', q.layout.N]);
  const built = g.build();
  return ort.InferenceSession.create(built.model, { intraOpNumThreads: 1, graphOptimizationLevel: 'all' });
}

async function run(s: ort.InferenceSession, a: Float32Array, dims: number[]): Promise<Float32Array> {
  const out = await s.run({ x: new ort.Tensor('float32', a, dims) });
  return out.y.data as Float32Array;
}

describe('MatMulNBits on onnxruntime equals a float64 matmul with the dequantized weights', () => {
  const [N, K] = [24, 100]; // K = 100: padded for every block size
  for (const bits of [4, 8] as QuantBits[]) {
    for (const blockSize of [16, 32, 128, 256]) {
      for (const symmetric of [true, false]) {
        for (const accuracyLevel of [0, 4] as AccuracyLevel[]) {
          const label = `bits ${bits}, block ${blockSize}, ${symmetric ? 'symmetric' : 'asymmetric'}, accuracy_level ${accuracyLevel}`;
          it(`${label}, batch 1 and 16`, async () => {
            const w = gaussian([N, K], bits * 7 + blockSize, 0.05);
            const q = quantizeBlockwise(w, { bits, blockSize, symmetric });
            const deq = dequantizeBlockwise(q);
            const s = await session(q, { accuracyLevel });
            try {
              for (const M of [1, 16]) {
                const a = Float32Array.from(seededNormals(M * K, M + blockSize));
                const y = await run(s, a, [M, K]);
                const err = relativeError(y, reference(a, M, deq));
                // accuracy_level 4 quantizes A to int8 per block: ~0.3 % relative; float paths ~1e-7.
                const tol = accuracyLevel === 4 ? 1.5e-2 : 1e-5;
                assert.ok(err <= tol, `batch ${M}: relative error ${err.toExponential(2)} > ${tol}`);
                if (bits === 4) {
                  // The comparison can fail: against the unquantized weights the error is far larger.
                  const vsOriginal = relativeError(y, reference(a, M, w));
                  assert.ok(vsOriginal > 2 * err && vsOriginal > 2e-2, `error vs the unquantized weights ${vsOriginal}`);
                }
              }
            } finally {
              await s.release();
            }
          });
        }
      }
    }
  }

  it('K a multiple of the block size, rank-3 input [batch, seq, K] and a bias', async () => {
    const w = gaussian([40, 128], 5, 0.02);
    const bias = Float32Array.from(seededNormals(40, 6));
    for (const symmetric of [true, false]) {
      const q = quantizeBlockwise(w, { bits: 4, blockSize: 32, symmetric });
      const s = await session(q, { accuracyLevel: 0, bias, rank3: true });
      try {
        const a = Float32Array.from(seededNormals(2 * 3 * 128, 8));
        const y = await run(s, a, [2, 3, 128]);
        assert.equal(y.length, 2 * 3 * 40);
        assert.ok(relativeError(y, reference(a, 6, dequantizeBlockwise(q), bias)) <= 1e-5);
      } finally {
        await s.release();
      }
    }
  });

  it('float16 activations and scales (the GPU dtype) on the CPU kernel', async () => {
    const w = gaussian([32, 96], 11, 0.05);
    const q = quantizeBlockwise(w, { bits: 4, blockSize: 32, symmetric: false });
    const s = await session(q, { accuracyLevel: 0, dtype: 'float16' });
    try {
      const a32 = Float32Array.from(seededNormals(4 * 96, 12));
      const a16 = toFloat16Array(a32);
      const out = await s.run({ x: new ort.Tensor('float16', a16, [4, 96]) });
      const y = Array.from(out.y.data as Uint16Array, float16BitsToFloat32);
      const aRounded = Float32Array.from(a16, float16BitsToFloat32);
      // float16 scales and output: ~1e-3 relative.
      assert.ok(relativeError(y, reference(aRounded, 4, dequantizeBlockwise(q))) <= 3e-3);
    } finally {
      await s.release();
    }
  });

  it('the emitter refuses an accuracy_level outside 0..4 and a bias of the wrong length', () => {
    const q = quantizeBlockwise(gaussian([4, 32], 1, 1), { bits: 8, blockSize: 32, symmetric: true });
    const g = new OnnxGraph('bad');
    const x = g.input('x', 'float32', [1, 32]);
    assert.throws(() => addMatMulNBits(g, x, q, { accuracyLevel: 5 as AccuracyLevel }), (e: unknown) => e instanceof QuantizationError && /accuracy_level/.test(e.message));
    assert.throws(() => addMatMulNBits(g, x, q, { bias: new Float32Array(3) }), /N = 4/);
    assert.throws(() => g.initializer('bad_u8', 'uint8', [2, 3], new Uint8Array(5)), /5 uint8 elements for dims \[2, 3\]/);
  });
});

describe('per-channel int8 for DynamicQuantizeMatMul', () => {
  it('round trip within scale/2, B stored [K, N], and the op equals the dequantized matmul up to its uint8 A quantization', async () => {
    const w = gaussian([24, 100], 21, 0.05);
    const q = quantizePerChannelInt8(w);
    const deq = dequantizePerChannelInt8(q);
    for (let n = 0; n < 24; n++) {
      for (let k = 0; k < 100; k++) {
        assert.ok(Math.abs(w.data[n * 100 + k] - deq.data[n * 100 + k]) <= q.scales[n] * (0.5 + 1e-6));
        assert.equal(Math.fround(q.data[k * 24 + n] * q.scales[n]), deq.data[n * 100 + k]);
      }
    }
    const bias = Float32Array.from(seededNormals(24, 22));
    const g = new OnnxGraph('dqmm', 'weights.bin', Infinity);
    const x = g.input('x', 'float32', ['batch', 100]);
    g.output(addDynamicQuantizeMatMul(g, x, q, { bias, output: 'y' }), 'float32', ['batch', 24]);
    const s = await ort.InferenceSession.create(g.build().model, { intraOpNumThreads: 1 });
    try {
      for (const M of [1, 16]) {
        const a = Float32Array.from(seededNormals(M * 100, 23 + M));
        const y = await run(s, a, [M, 100]);
        // A is quantized per tensor to uint8: ~0.5-1 % relative.
        assert.ok(relativeError(y, reference(a, M, deq, bias)) <= 2e-2);
      }
    } finally {
      await s.release();
    }
  });
});
