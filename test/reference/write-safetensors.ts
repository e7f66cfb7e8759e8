/**
 * A minimal safetensors writer for the reference's tests (hand-made checkpoints), written from
 * the format description like checkpoint.ts, independent of the product's writer.
 */
import fs from 'node:fs';

/** One tensor: its dtype name, shape and little-endian bytes. */
export interface RawTensor {
  dtype: string;
  shape: number[];
  bytes: Buffer;
}

/** Writes `tensors` in order into one file (header without padding, as the format allows). */
export function writeSafetensors(file: string, tensors: Record<string, RawTensor>): void {
  const header: Record<string, unknown> = { __metadata__: { format: 'pt' } };
  let offset = 0;
  for (const [name, t] of Object.entries(tensors)) {
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + t.bytes.length] };
    offset += t.bytes.length;
  }
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  fs.writeFileSync(file, Buffer.concat([len, json, ...Object.values(tensors).map((t) => t.bytes)]));
}

/** float32 values as F32 bytes. */
export function f32Tensor(shape: number[], data: Float32Array): RawTensor {
  return { dtype: 'F32', shape, bytes: Buffer.from(data.buffer, data.byteOffset, data.byteLength) };
}

/** float32 values rounded to bfloat16 (nearest, ties to even) as BF16 bytes. */
export function bf16Tensor(shape: number[], data: Float32Array): RawTensor {
  const bits = new Uint32Array(data.buffer, data.byteOffset, data.length);
  const out = new Uint16Array(data.length);
  for (let i = 0; i < data.length; i++) out[i] = (bits[i]! + 0x7fff + ((bits[i]! >>> 16) & 1)) >>> 16;
  return { dtype: 'BF16', shape, bytes: Buffer.from(out.buffer) };
}
