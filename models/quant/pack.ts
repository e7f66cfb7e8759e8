/**
 * Bit packing of MatMulNBits codes: 8-bit codes one per byte; 4-bit codes two per byte, the
 * element with the even index in the LOW nibble (ContribOperators.md, MatMulNBits: "the first
 * 4 bits are stored in the lower 4 bits of a byte"). Zero points use the same packing per row
 * of N, along the blocks.
 */
import type { QuantBits } from './layout.js';

/**
 * Writes code `code` as element `index` of a packed run starting at byte `base` of `out`.
 * `out` must be zero where 4-bit codes are written (a nibble is OR-ed in).
 */
export function putCode(out: Uint8Array, base: number, index: number, code: number, bits: QuantBits): void {
  if (bits === 8) out[base + index] = code;
  else out[base + (index >> 1)] |= (index & 1) === 0 ? code : code << 4;
}

/** Element `index` of the packed run starting at byte `base` of `packed`. */
export function getCode(packed: Uint8Array, base: number, index: number, bits: QuantBits): number {
  if (bits === 8) return packed[base + index];
  const byte = packed[base + (index >> 1)];
  return (index & 1) === 0 ? byte & 0x0f : byte >> 4;
}

/**
 * Packs `codes` (each in [0, 2^bits)) into bytes; a 4-bit run of odd length ends with a zero
 * high nibble.
 * @throws RangeError for a code out of range.
 */
export function packCodes(codes: ArrayLike<number>, bits: QuantBits): Uint8Array {
  const out = new Uint8Array(Math.ceil((codes.length * bits) / 8));
  const max = (1 << bits) - 1;
  for (let i = 0; i < codes.length; i++) {
    const c = codes[i];
    if (!Number.isInteger(c) || c < 0 || c > max) throw new RangeError(`code ${c} at ${i} is outside [0, ${max}]`);
    putCode(out, 0, i, c, bits);
  }
  return out;
}

/** The first `count` codes of a packed run. */
export function unpackCodes(packed: Uint8Array, count: number, bits: QuantBits): Uint8Array {
  const out = new Uint8Array(count);
  for (let i = 0; i < count; i++) out[i] = getCode(packed, 0, i, bits);
  return out;
}
