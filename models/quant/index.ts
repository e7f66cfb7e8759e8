/**
 * Weight quantization for onnxruntime's quantized matmul ops: block-wise 4/8-bit for
 * `com.microsoft.MatMulNBits` (layout.ts, blockwise.ts, emit.ts) and per-channel int8 for
 * `com.microsoft.DynamicQuantizeMatMul` (per-channel.ts). Measurements and the chosen
 * defaults: docs/quantization.md.
 */
export * from './layout.js';
export * from './pack.js';
export * from './blockwise.js';
export * from './emit.js';
export * from './per-channel.js';
export * from './presets.js';
