/**
 * The tensor layout of onnxruntime's `com.microsoft.MatMulNBits` (block-wise weight-only
 * quantization along K), and the option checks shared by the quantizer and the emitter.
 *
 * Spec: onnxruntime docs/ContribOperators.md, "com.microsoft.MatMulNBits", and its CPU input
 * check (onnxruntime/contrib_ops/cpu/quantization/matmul_nbits_helper.h):
 * - B: uint8 [N, k_blocks, blob_size], k_blocks = ceil(K / block_size),
 *   blob_size = block_size * bits / 8; codes packed along K, the first code of a byte in its
 *   LOW bits;
 * - scales: [N, k_blocks], the element type of A;
 * - zero_points (optional): uint8 [N, ceil(k_blocks * bits / 8)], packed like B (per row of
 *   N, along the blocks); absent means the default zero point 2^(bits-1);
 * - block_size a power of two >= 16; dequantized weight = (code - zero_point) * scale.
 */

/** Bit widths this module quantizes to (MatMulNBits also defines 2; not offered here). */
export type QuantBits = 4 | 8;

/** The bit widths of {@link QuantBits}, for option parsing. */
export const QUANT_BITS: readonly QuantBits[] = [4, 8];

/** Smallest block size MatMulNBits accepts. */
export const MIN_BLOCK_SIZE = 16;
/** Largest block size offered (onnxruntime's optimised CPU kernels stop at 256). */
export const MAX_BLOCK_SIZE = 256;

/** How a weight is quantized. */
export interface BlockQuantOptions {
  /** Bits per weight: 4 or 8. */
  bits: QuantBits;
  /** Weights per block along K (the input features): a power of two in [16, 256]. */
  blockSize: number;
  /**
   * true: one scale per block, the zero point fixed at 2^(bits-1) (no zero_points input);
   * false: one scale and one integer zero point per block (asymmetric, min/max).
   */
  symmetric: boolean;
}

/** {@link BlockQuantOptions} as JSON carries them (/v1/models `quantization`, load-test reports): snake_case. */
export interface BlockQuantJson {
  bits: number;
  block_size: number;
  symmetric: boolean;
}

/** The JSON form of block options, or null for a kind of weight kept in float (a preset's `null`). */
export function blockQuantJson(o: BlockQuantOptions | null): BlockQuantJson | null {
  return o ? { bits: o.bits, block_size: o.blockSize, symmetric: o.symmetric } : null;
}

/** Sizes of the MatMulNBits inputs for a weight of N outputs and K inputs. */
export interface MatMulNBitsLayout {
  /** Output features (rows of the weight stored [out, in]). */
  N: number;
  /** Input features (columns of the weight stored [out, in]). */
  K: number;
  bits: QuantBits;
  blockSize: number;
  /** ceil(K / blockSize). */
  kBlocks: number;
  /** Bytes per block: blockSize * bits / 8. */
  blobSize: number;
  /** Bytes of zero points per row of N: ceil(kBlocks * bits / 8). */
  zeroPointBytesPerRow: number;
  /** Codes per byte: 8 / bits. */
  codesPerByte: number;
  /** The default (symmetric) zero point 2^(bits-1). */
  midpoint: number;
  /** The largest code, 2^bits - 1. */
  maxCode: number;
}

/** Bad quantization input (options, shapes, values). The message names the problem and the fix. */
export class QuantizationError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'QuantizationError';
  }
}

/**
 * Checks `options` against what this module and MatMulNBits accept.
 * @throws QuantizationError for bits other than 4 and 8, or a block size that is not a power
 *   of two in [16, 256].
 */
export function validateBlockQuantOptions(options: BlockQuantOptions): void {
  if (!QUANT_BITS.includes(options.bits)) throw new QuantizationError(`bits must be 4 or 8, got ${String(options.bits)}`);
  const b = options.blockSize;
  if (!Number.isInteger(b) || b < MIN_BLOCK_SIZE || b > MAX_BLOCK_SIZE || (b & (b - 1)) !== 0) {
    throw new QuantizationError(`block size must be a power of two from ${MIN_BLOCK_SIZE} to ${MAX_BLOCK_SIZE} (16, 32, 64, 128, 256), got ${String(b)}`);
  }
  if (typeof options.symmetric !== 'boolean') throw new QuantizationError(`symmetric must be true or false, got ${String(options.symmetric)}`);
}

/**
 * The MatMulNBits layout of an [N, K] weight.
 * @throws QuantizationError for bad options (see {@link validateBlockQuantOptions}) or
 *   N, K that are not positive integers.
 */
export function matMulNBitsLayout(N: number, K: number, options: Pick<BlockQuantOptions, 'bits' | 'blockSize'>): MatMulNBitsLayout {
  validateBlockQuantOptions({ ...options, symmetric: true });
  if (!Number.isInteger(N) || N < 1 || !Number.isInteger(K) || K < 1) throw new QuantizationError(`weight shape must be [N, K] with positive integers, got [${N}, ${K}]`);
  const { bits, blockSize } = options;
  const kBlocks = Math.ceil(K / blockSize);
  return {
    N,
    K,
    bits,
    blockSize,
    kBlocks,
    blobSize: (blockSize * bits) / 8,
    zeroPointBytesPerRow: Math.ceil((kBlocks * bits) / 8),
    codesPerByte: 8 / bits,
    midpoint: 1 << (bits - 1),
    maxCode: (1 << bits) - 1,
  };
}
