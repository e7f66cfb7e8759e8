/**
 * Adds a `com.microsoft.MatMulNBits` node, with its weights as initializers, to an
 * {@link OnnxGraph}. The node computes Y = A dequant(B)^T (+ bias) for A [..., K] and a weight
 * stored [N, K] = [out, in], the layout of models/types.ts: no transpose needed.
 *
 * Spec: onnxruntime docs/ContribOperators.md, "com.microsoft.MatMulNBits" (inputs A, B,
 * scales, zero_points, g_idx, bias; attributes K, N, bits, block_size, accuracy_level), CPU
 * and CUDA kernels in onnxruntime/contrib_ops/{cpu,cuda}/quantization/matmul_nbits*.
 */
import type { OnnxGraph } from '../onnx/builder.js';
import { toFloat16Array } from '../safetensors.js';
import type { BlockQuantizedWeight } from './blockwise.js';
import { QuantizationError } from './layout.js';

/**
 * MatMulNBits `accuracy_level`: the least accurate A type the kernel may compute with.
 * 0 unset (float, as 1), 1 float32, 2 float16, 3 bfloat16, 4 int8 (A quantized per block of
 * block_size to int8 on the fly; onnxruntime falls back to float where it has no int8 kernel).
 */
export type AccuracyLevel = 0 | 1 | 2 | 3 | 4;

/** Options of {@link addMatMulNBits}. */
export interface MatMulNBitsNodeOptions {
  /** See {@link AccuracyLevel}; default 0. */
  accuracyLevel?: AccuracyLevel;
  /**
   * Element type of A, Y, scales (and bias): 'float32' (default) or 'float16' (GPUs). float16
   * scales round to 11 significant bits and go subnormal below 6.1e-5 (blocks of weights under
   * ~1e-3 at 8 bits lose precision there).
   */
  dtype?: 'float32' | 'float16';
  /** Optional bias [N], added to Y. */
  bias?: Float32Array;
  /** Prefix of the initializer names (`<prefix>.qweight`, `.scales`, `.qzeros`, `.bias`); default a fresh name. */
  name?: string;
  /** Name of the output value; default a fresh name. */
  output?: string;
}

/**
 * Emits `Y = MatMulNBits(A, B, scales[, zero_points][, bias])`.
 * @param g the graph to add to.
 * @param input name of A, element type `options.dtype`, shape [..., K].
 * @param q the quantized weight (models/quant/blockwise.ts), N outputs, K inputs.
 * @returns the name of Y, shape [..., N].
 * @throws QuantizationError for an accuracy_level outside 0..4 or a bias whose length is not N.
 */
export function addMatMulNBits(g: OnnxGraph, input: string, q: BlockQuantizedWeight, options: MatMulNBitsNodeOptions = {}): string {
  const { N, K, kBlocks, blobSize, bits, blockSize, zeroPointBytesPerRow } = q.layout;
  const level = options.accuracyLevel ?? 0;
  if (![0, 1, 2, 3, 4].includes(level)) throw new QuantizationError(`accuracy_level must be 0, 1, 2, 3 or 4, got ${String(level)}`);
  if (options.bias && options.bias.length !== N) throw new QuantizationError(`bias has ${options.bias.length} values; the weight has N = ${N} outputs`);
  const dtype = options.dtype ?? 'float32';
  const prefix = options.name ?? g.fresh('matmul_nbits');
  const float = (name: string, dims: number[], values: Float32Array) =>
    dtype === 'float16' ? g.initializer(name, 'float16', dims, toFloat16Array(values)) : g.initializer(name, 'float32', dims, values);

  const inputs = [input, g.initializer(`${prefix}.qweight`, 'uint8', [N, kBlocks, blobSize], q.data), float(`${prefix}.scales`, [N, kBlocks], q.scales)];
  inputs.push(q.zeroPoints ? g.initializer(`${prefix}.qzeros`, 'uint8', [N, zeroPointBytesPerRow], q.zeroPoints) : '');
  inputs.push(''); // g_idx (deprecated)
  inputs.push(options.bias ? float(`${prefix}.bias`, [N], options.bias) : '');
  while (inputs[inputs.length - 1] === '') inputs.pop();

  const attrs: Record<string, number> = { K, N, bits, block_size: blockSize };
  if (level !== 0) attrs.accuracy_level = level;
  return g.op('MatMulNBits', inputs, attrs, { domain: 'com.microsoft', output: options.output });
}
