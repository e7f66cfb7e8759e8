/**
 * Round-to-nearest block-wise quantization of a linear weight stored [out, in] = [N, K] into
 * the MatMulNBits layout (models/quant/layout.ts), and its exact inverse map (dequantize).
 *
 * Each row n of the weight is cut along K into blocks of `blockSize` weights (the last block
 * padded with zeros when K is not a multiple); each block b gets a float32 scale s and a zero
 * point z, and each weight w the code q = clamp(round(w / s) + z, 0, 2^bits - 1); the
 * dequantized weight is (q - z) * s (ContribOperators.md, MatMulNBits).
 *
 * - Asymmetric (zero points), as onnxruntime's quantizer (mlas q4_dq.cpp `range2scalezp`):
 *   the block range is widened to contain 0, s = (max - min) / (2^bits - 1),
 *   z = round(-min / s).
 * - Symmetric (z = 2^(bits-1) =: m, codes m-m .. m+m-1 around zero): onnxruntime maps the
 *   block's largest-magnitude weight to the -m end (s = -w_max / m), which clips a weight of
 *   the other sign and nearly the same magnitude by up to a whole step. Here s is the smallest
 *   magnitude that needs no clipping, max(big / m, small / (m - 1)) with big/small the larger
 *   and smaller of the positive and negative extremes, signed so that `big` uses the -m end.
 *   It equals onnxruntime's scale whenever small <= big * (m - 1) / m.
 *
 * Consequence (tested): |w - dequantize(quantize(w))| <= |s| / 2 for every weight (up to
 * float32 rounding of the product), and weights on a block's grid come back exactly.
 * Rounding is half away from zero (C `roundf`, as onnxruntime). Padding codes equal the
 * zero point, so padded weights dequantize to exactly 0.
 */
import type { WeightTensor } from '../types.js';
import { matMulNBitsLayout, QuantizationError, type BlockQuantOptions, type MatMulNBitsLayout } from './layout.js';
import { getCode, putCode } from './pack.js';

/** A weight in the MatMulNBits layout: exactly the op's B, scales and zero_points inputs. */
export interface BlockQuantizedWeight {
  readonly layout: MatMulNBitsLayout;
  readonly symmetric: boolean;
  /** B: uint8 [N, kBlocks, blobSize], row-major. */
  readonly data: Uint8Array;
  /** scales: float32 [N, kBlocks]; may be negative (symmetric blocks), 0 for an all-zero block. */
  readonly scales: Float32Array;
  /** zero_points: uint8 [N, zeroPointBytesPerRow] (packed like B); absent when symmetric. */
  readonly zeroPoints?: Uint8Array;
}

/** C `roundf`: nearest integer, halves away from zero. */
function roundHalfAway(x: number): number {
  return x < 0 ? -Math.floor(-x + 0.5) : Math.floor(x + 0.5);
}

function clamp(v: number, lo: number, hi: number): number {
  return v < lo ? lo : v > hi ? hi : v;
}

/** Scale and zero point of one block whose weights lie in [lo, hi]. */
function blockParameters(lo: number, hi: number, symmetric: boolean, L: MatMulNBitsLayout): { scale: number; zero: number } {
  const m = L.midpoint;
  if (symmetric) {
    const pos = Math.max(hi, 0);
    const neg = Math.max(-lo, 0);
    const big = Math.max(pos, neg);
    const small = Math.min(pos, neg);
    const magnitude = Math.max(big / m, small / (m - 1));
    if (magnitude === 0) return { scale: 0, zero: m };
    // The larger side takes the -m end: a positive `big` needs a negative scale.
    return { scale: Math.fround(pos >= neg ? -magnitude : magnitude), zero: m };
  }
  const min = Math.min(lo, 0);
  const max = Math.max(hi, 0);
  const scale = Math.fround((max - min) / L.maxCode);
  if (scale === 0) return { scale: 0, zero: m };
  return { scale, zero: clamp(roundHalfAway(-min / scale), 0, L.maxCode) };
}

/**
 * Quantizes a linear weight for MatMulNBits.
 * @param weight float32 [N, K] = [out, in] (models/types.ts convention: y = x W^T).
 * @returns the packed codes, scales and (asymmetric) zero points; K padding included.
 * @throws QuantizationError for bad options (models/quant/layout.ts), a weight that is not
 *   2-D or whose data length disagrees with its shape, or a weight that is not finite
 *   (NaN/Infinity cannot be quantized; the message names the first bad element).
 */
export function quantizeBlockwise(weight: WeightTensor, options: BlockQuantOptions): BlockQuantizedWeight {
  if (weight.shape.length !== 2) throw new QuantizationError(`a linear weight must be 2-D [out, in], got shape [${weight.shape.join(', ')}]`);
  const [N, K] = weight.shape;
  const L = matMulNBitsLayout(N, K, options);
  if (typeof options.symmetric !== 'boolean') throw new QuantizationError(`symmetric must be true or false, got ${String(options.symmetric)}`);
  if (weight.data.length !== N * K) throw new QuantizationError(`weight data holds ${weight.data.length} values for shape [${N}, ${K}]`);
  const { bits, blockSize, kBlocks, blobSize, zeroPointBytesPerRow } = L;
  const data = new Uint8Array(N * kBlocks * blobSize);
  const scales = new Float32Array(N * kBlocks);
  const zeroPoints = options.symmetric ? undefined : new Uint8Array(N * zeroPointBytesPerRow);
  const w = weight.data;
  for (let n = 0; n < N; n++) {
    const row = n * K;
    for (let b = 0; b < kBlocks; b++) {
      const k0 = b * blockSize;
      const k1 = Math.min(k0 + blockSize, K);
      let lo = Infinity;
      let hi = -Infinity;
      for (let k = k0; k < k1; k++) {
        const v = w[row + k];
        if (!Number.isFinite(v)) throw new QuantizationError(`weight [${n}, ${k}] is ${v}; only finite weights can be quantized`);
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
      const { scale, zero } = blockParameters(lo, hi, options.symmetric, L);
      scales[n * kBlocks + b] = scale;
      if (zeroPoints) putCode(zeroPoints, n * zeroPointBytesPerRow, b, zero, bits);
      const base = (n * kBlocks + b) * blobSize;
      for (let j = 0; j < blockSize; j++) {
        const k = k0 + j;
        const code = k < k1 && scale !== 0 ? clamp(roundHalfAway(w[row + k] / scale) + zero, 0, L.maxCode) : zero;
        putCode(data, base, j, code, bits);
      }
    }
  }
  return { layout: L, symmetric: options.symmetric, data, scales, zeroPoints };
}

/** The zero point of block b of row n. */
export function zeroPointAt(q: BlockQuantizedWeight, n: number, b: number): number {
  const L = q.layout;
  return q.zeroPoints ? getCode(q.zeroPoints, n * L.zeroPointBytesPerRow, b, L.bits) : L.midpoint;
}

/**
 * What MatMulNBits multiplies by: (code - zero_point) * scale for every weight, float32.
 * @returns float32 [N, K] (the K padding dropped).
 */
export function dequantizeBlockwise(q: BlockQuantizedWeight): WeightTensor {
  const { N, K, kBlocks, blobSize, blockSize, bits } = q.layout;
  const out = new Float32Array(N * K);
  for (let n = 0; n < N; n++) {
    for (let b = 0; b < kBlocks; b++) {
      const scale = q.scales[n * kBlocks + b];
      const zero = zeroPointAt(q, n, b);
      const base = (n * kBlocks + b) * blobSize;
      const k0 = b * blockSize;
      const k1 = Math.min(k0 + blockSize, K);
      for (let k = k0; k < k1; k++) out[n * K + k] = (getCode(q.data, base, k - k0, bits) - zero) * scale;
    }
  }
  return { shape: [N, K], data: out };
}

/**
 * Bytes a quantized weight occupies in a graph (codes + float32 scales + zero points): what a
 * decode step reads per weight, for bandwidth bounds.
 * @param scaleBytes bytes per scale: 4 for float32 activations, 2 for float16.
 */
export function quantizedWeightBytes(q: BlockQuantizedWeight, scaleBytes = 4): number {
  return q.data.byteLength + q.scales.length * scaleBytes + (q.zeroPoints?.byteLength ?? 0);
}
