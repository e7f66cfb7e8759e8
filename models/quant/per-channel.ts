/**
 * Per-output-channel symmetric int8 weights for onnxruntime's `com.microsoft.DynamicQuantizeMatMul`
 * (A is quantized to uint8 per tensor at run time; B is int8 with one scale per column).
 *
 * Spec: onnxruntime docs/ContribOperators.md, "com.microsoft.DynamicQuantizeMatMul": inputs
 * A (float), B (int8 [K, N]), b_scale (float [N] = per column), b_zero_point (optional,
 * default 0), bias (optional [N]); Y = A ((B - b_zero_point) * b_scale). B is [K, N], i.e. the
 * TRANSPOSE of the [out, in] weight.
 *
 * Codes use [-127, 127] (s = max |w| / 127 per output channel, zero point 0), so
 * |w - dequantize(w)| <= s / 2.
 */
import type { OnnxGraph } from '../onnx/builder.js';
import type { WeightTensor } from '../types.js';
import { QuantizationError } from './layout.js';

/** An int8 weight in the DynamicQuantizeMatMul layout. */
export interface PerChannelInt8Weight {
  /** Input features. */
  readonly K: number;
  /** Output features. */
  readonly N: number;
  /** B: int8 [K, N], row-major (the transpose of the [out, in] weight). */
  readonly data: Int8Array;
  /** b_scale: float32 [N], >= 0 (0 for an all-zero output channel). */
  readonly scales: Float32Array;
}

/**
 * Quantizes a linear weight per output channel to int8.
 * @param weight float32 [N, K] = [out, in].
 * @throws QuantizationError for a weight that is not 2-D, whose data length disagrees with
 *   its shape, or that holds NaN/Infinity.
 */
export function quantizePerChannelInt8(weight: WeightTensor): PerChannelInt8Weight {
  if (weight.shape.length !== 2) throw new QuantizationError(`a linear weight must be 2-D [out, in], got shape [${weight.shape.join(', ')}]`);
  const [N, K] = weight.shape;
  if (weight.data.length !== N * K) throw new QuantizationError(`weight data holds ${weight.data.length} values for shape [${N}, ${K}]`);
  const data = new Int8Array(K * N);
  const scales = new Float32Array(N);
  for (let n = 0; n < N; n++) {
    let amax = 0;
    for (let k = 0; k < K; k++) {
      const v = weight.data[n * K + k];
      if (!Number.isFinite(v)) throw new QuantizationError(`weight [${n}, ${k}] is ${v}; only finite weights can be quantized`);
      amax = Math.max(amax, Math.abs(v));
    }
    const s = Math.fround(amax / 127);
    scales[n] = s;
    if (s === 0) continue;
    for (let k = 0; k < K; k++) {
      const r = weight.data[n * K + k] / s;
      const code = r < 0 ? -Math.floor(-r + 0.5) : Math.floor(r + 0.5);
      data[k * N + n] = Math.max(-127, Math.min(127, code));
    }
  }
  return { K, N, data, scales };
}

/** code * scale for every weight: float32 [N, K] (the [out, in] layout). */
export function dequantizePerChannelInt8(q: PerChannelInt8Weight): WeightTensor {
  const { K, N } = q;
  const out = new Float32Array(N * K);
  for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) out[n * K + k] = q.data[k * N + n] * q.scales[n];
  return { shape: [N, K], data: out };
}

/**
 * Emits `Y = DynamicQuantizeMatMul(A, B, b_scale[, , bias])` (float32 only: the op's T1).
 * @param input name of A, float32 [..., K].
 * @param options.name initializer prefix (`<name>.qweight`, `.scales`, `.bias`); default fresh.
 * @returns the name of Y, float32 [..., N].
 * @throws QuantizationError for a bias whose length is not N.
 */
export function addDynamicQuantizeMatMul(g: OnnxGraph, input: string, q: PerChannelInt8Weight, options: { bias?: Float32Array; name?: string; output?: string } = {}): string {
  if (options.bias && options.bias.length !== q.N) throw new QuantizationError(`bias has ${options.bias.length} values; the weight has N = ${q.N} outputs`);
  const prefix = options.name ?? g.fresh('dq_matmul');
  const inputs = [input, g.initializer(`${prefix}.qweight`, 'int8', [q.K, q.N], q.data), g.initializer(`${prefix}.scales`, 'float32', [q.N], q.scales)];
  if (options.bias) inputs.push('', g.initializer(`${prefix}.bias`, 'float32', [q.N], options.bias));
  return g.op('DynamicQuantizeMatMul', inputs, {}, { domain: 'com.microsoft', output: options.output });
}
