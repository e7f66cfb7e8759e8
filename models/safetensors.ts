/**
 * A reader and writer of the safetensors format (https://huggingface.co/docs/safetensors),
 * used by Hugging Face model directories:
 *
 * ```
 * [8 bytes]  N, the header length, unsigned 64-bit little-endian
 * [N bytes]  JSON header: { "<tensor name>": { "dtype": "F32", "shape": [out, in],
 *            "data_offsets": [begin, end] }, ..., "__metadata__": { "<key>": "<string>" } }
 * [rest]     the data section; each tensor's bytes are [begin, end) of it, row-major,
 *            little-endian, and the tensors tile the section without gaps or overlaps
 * ```
 *
 * Reading accepts F64, F32, F16 and BF16 and returns float32 values (the compute dtype of
 * SliceServe, see types.ts), read at once or, with `lazy`, on use from the file in its own
 * dtype (models/lazy-tensor.ts). Writing produces F32, F16 or BF16, with the header padded with
 * spaces to a multiple of 8 bytes as the reference implementation does, one tensor at a time
 * ({@link ShardedSafetensorsWriter}: headers first, then each tensor at its place, in any
 * order). Large checkpoints are split into shards listed by `model.safetensors.index.json`
 * (`weight_map`: tensor name -> shard file), the layout of `transformers`' `save_pretrained`.
 *
 * Every problem with a file is reported as a {@link ModelLoadError} that names the file.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { byteViews } from './bytes.js';
import { fileTensor, float16Table, numel, tensorLength, type LazyTensor } from './lazy-tensor.js';
import { ModelLoadError, type WeightMap, type WeightTensor } from './types.js';

// ---------------------------------------------------------------------------------------------
// 16-bit float conversions
// float16 = IEEE 754 binary16 (1 sign, 5 exponent bits with bias 15, 10 mantissa bits);
// bfloat16 = the upper half of a float32 (1 sign, 8 exponent, 7 mantissa bits).
// Narrowing rounds to nearest, ties to even (IEEE default rounding, as PyTorch's `.to()`);
// NaN stays a quiet NaN, infinities stay infinite, float16 overflow gives +-Infinity.
// ---------------------------------------------------------------------------------------------

const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

/** Bits of the float32 nearest to `value`. */
function float32Bits(value: number): number {
  scratchF32[0] = value;
  return scratchU32[0]!;
}

/** float16 bits of the float32 whose bits are `x`. */
function float16FromFloat32Bits(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const exponent = (x >>> 23) & 0xff;
  let mantissa = x & 0x7fffff;
  if (exponent === 0xff) return mantissa === 0 ? sign | 0x7c00 : sign | 0x7e00 | (mantissa >>> 13);
  const halfExponent = exponent - 127 + 15;
  if (halfExponent >= 0x1f) return sign | 0x7c00;
  if (halfExponent <= 0) {
    // A float16 subnormal (value = m * 2^-24) or zero.
    if (halfExponent < -10) return sign;
    mantissa |= 0x800000;
    const shift = 14 - halfExponent; // 14..24 bits dropped
    let half = mantissa >>> shift;
    const remainder = mantissa & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (remainder > halfway || (remainder === halfway && (half & 1) === 1)) half += 1;
    return sign | half; // a carry into bit 10 is the smallest normal, correctly encoded
  }
  let half = (halfExponent << 10) | (mantissa >>> 13);
  const remainder = mantissa & 0x1fff;
  if (remainder > 0x1000 || (remainder === 0x1000 && (half & 1) === 1)) half += 1; // may carry to Infinity
  return sign | half;
}

/** bfloat16 bits of the float32 whose bits are `x`. */
function bfloat16FromFloat32Bits(x: number): number {
  if ((x & 0x7f800000) === 0x7f800000 && (x & 0x7fffff) !== 0) return ((x >>> 16) | 0x40) & 0xffff;
  return Math.floor((x + 0x7fff + ((x >>> 16) & 1)) / 65536) & 0xffff;
}

/**
 * The float16 bit pattern nearest to `value` (first rounded to float32), ties to even.
 * Magnitudes up to 2^-25 (half the smallest subnormal) become signed zero.
 */
export function float32ToFloat16Bits(value: number): number {
  return float16FromFloat32Bits(float32Bits(value));
}

/** The bfloat16 bit pattern nearest to `value` (first rounded to float32), ties to even. */
export function float32ToBfloat16Bits(value: number): number {
  return bfloat16FromFloat32Bits(float32Bits(value));
}

/** The value of a float16 bit pattern (exact: every float16 is a float32). */
export function float16BitsToFloat32(bits: number): number {
  return float16Table()[bits & 0xffff]!;
}

/** The value of a bfloat16 bit pattern (exact). */
export function bfloat16BitsToFloat32(bits: number): number {
  scratchU32[0] = (bits & 0xffff) << 16;
  return scratchF32[0]!;
}

/** float16 bit patterns of `src`, element by element (round to nearest even). */
export function toFloat16Array(src: Float32Array): Uint16Array {
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  const out = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = float16FromFloat32Bits(bits[i]!);
  return out;
}

/** bfloat16 bit patterns of `src`, element by element (round to nearest even). */
export function toBfloat16Array(src: Float32Array): Uint16Array {
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  const out = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = bfloat16FromFloat32Bits(bits[i]!);
  return out;
}

/** float32 values of float16 bit patterns. */
export function fromFloat16Array(src: Uint16Array): Float32Array {
  const table = float16Table();
  const out = new Float32Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = table[src[i]!]!;
  return out;
}

/** float32 values of bfloat16 bit patterns. */
export function fromBfloat16Array(src: Uint16Array): Float32Array {
  const out = new Float32Array(src.length);
  const bits = new Uint32Array(out.buffer);
  for (let i = 0; i < src.length; i++) bits[i] = src[i]! << 16;
  return out;
}

// ---------------------------------------------------------------------------------------------
// Format
// ---------------------------------------------------------------------------------------------

/** dtypes this module reads (all into float32). */
export type SafetensorsReadDtype = 'F64' | 'F32' | 'F16' | 'BF16';
/** dtypes this module writes. */
export type SafetensorsWriteDtype = 'F32' | 'F16' | 'BF16';

/** Bytes per element of every dtype the format defines (to validate headers we cannot read). */
const DTYPE_BYTES: Record<string, number> = {
  F64: 8, F32: 4, F16: 2, BF16: 2,
  I64: 8, I32: 4, I16: 2, I8: 1, U64: 8, U32: 4, U16: 2, U8: 1, BOOL: 1,
  F8_E4M3: 1, F8_E5M2: 1, F8_E8M0: 1, F6_E2M3: 1, F6_E3M2: 1, F4: 1,
};
const READABLE = new Set(['F64', 'F32', 'F16', 'BF16']);

/** Largest header accepted, as in the reference implementation (100 MB). */
export const MAX_HEADER_BYTES = 100_000_000;
/** Default shard size limit of {@link writeShardedSafetensors}: 2 GiB. */
export const DEFAULT_MAX_SHARD_BYTES = 2 * 1024 ** 3;
/** Name of the single-file checkpoint in a model directory. */
export const SAFETENSORS_FILE = 'model.safetensors';
/** Name of the shard index in a model directory. */
export const SAFETENSORS_INDEX_FILE = 'model.safetensors.index.json';

/** One tensor entry of a header. Offsets are bytes into the data section. */
export interface SafetensorsTensorInfo {
  name: string;
  dtype: string;
  shape: number[];
  begin: number;
  end: number;
}

/** A parsed and validated header. */
export interface SafetensorsHeader {
  /** Tensors in data-section order. */
  tensors: SafetensorsTensorInfo[];
  /** The `__metadata__` map ({} when absent). */
  metadata: Record<string, string>;
  /** Absolute file offset of the data section (8 + header length). */
  dataStart: number;
  /** File size in bytes. */
  fileSize: number;
}

/** What {@link readSafetensors} returns. */
export interface SafetensorsContents {
  weights: WeightMap;
  metadata: Record<string, string>;
  /** On-disk dtype of each tensor. */
  dtypes: Map<string, SafetensorsReadDtype>;
  /** The file each tensor was read from. */
  files: Map<string, string>;
}

/** Chunk size of single read/write calls (Node rejects single I/O calls of 2 GiB or more). */
const IO_CHUNK = 1 << 30;

function assertLittleEndian(): void {
  if (os.endianness() !== 'LE') throw new Error('safetensors: only little-endian hosts are supported');
}

/**
 * Fills `target` with the bytes of the open file `fd` from byte `position` on, in chunks that
 * Node accepts.
 * @throws ModelLoadError naming `file` if the file ends first.
 */
export function readBytesAt(fd: number, target: Uint8Array, position: number, file: string): void {
  let done = 0;
  while (done < target.length) {
    const length = Math.min(IO_CHUNK, target.length - done);
    const n = fs.readSync(fd, target, done, length, position + done);
    if (n === 0) throw new ModelLoadError(file, `unexpected end of file at byte ${position + done}`);
    done += n;
  }
}

function isNonNegativeInteger(x: unknown): x is number {
  return typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
}

/**
 * Validates a decoded header object; `dataLength` is the size of the data section.
 * @throws ModelLoadError naming `file` for any inconsistency.
 */
function validateHeader(json: unknown, dataLength: number, file: string): Omit<SafetensorsHeader, 'dataStart' | 'fileSize'> {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new ModelLoadError(file, 'safetensors header is not a JSON object');
  }
  let metadata: Record<string, string> = {};
  const tensors: SafetensorsTensorInfo[] = [];
  for (const [name, entry] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (typeof entry !== 'object' || entry === null || Array.isArray(entry) ||
          !Object.values(entry).every((v) => typeof v === 'string')) {
        throw new ModelLoadError(file, 'safetensors __metadata__ must be an object of string values');
      }
      metadata = { ...(entry as Record<string, string>) };
      continue;
    }
    if (typeof entry !== 'object' || entry === null) {
      throw new ModelLoadError(file, `tensor ${name}: header entry is not an object`);
    }
    const { dtype, shape, data_offsets: offsets } = entry as Record<string, unknown>;
    if (typeof dtype !== 'string' || !(dtype in DTYPE_BYTES)) {
      throw new ModelLoadError(file, `tensor ${name}: unknown dtype ${JSON.stringify(dtype)}`);
    }
    if (!Array.isArray(shape) || !shape.every(isNonNegativeInteger)) {
      throw new ModelLoadError(file, `tensor ${name}: shape ${JSON.stringify(shape)} is not a list of non-negative integers`);
    }
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isNonNegativeInteger) || offsets[0] > offsets[1]) {
      throw new ModelLoadError(file, `tensor ${name}: data_offsets ${JSON.stringify(offsets)} is not [begin, end] with 0 <= begin <= end`);
    }
    const [begin, end] = offsets as [number, number];
    if (end > dataLength) {
      throw new ModelLoadError(file, `tensor ${name}: data_offsets [${begin}, ${end}] out of range (the data section has ${dataLength} bytes)`);
    }
    const needed = numel(shape as number[]) * DTYPE_BYTES[dtype]!;
    if (needed !== end - begin) {
      throw new ModelLoadError(file, `tensor ${name}: shape [${shape.join(', ')}] of ${dtype} needs ${needed} bytes but data_offsets [${begin}, ${end}] span ${end - begin}`);
    }
    tensors.push({ name, dtype, shape: [...(shape as number[])], begin, end });
  }
  tensors.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let cursor = 0;
  let previous: SafetensorsTensorInfo | null = null;
  for (const t of tensors) {
    if (t.begin < cursor) {
      throw new ModelLoadError(file, `tensors ${previous!.name} [${previous!.begin}, ${previous!.end}] and ${t.name} [${t.begin}, ${t.end}] overlap`);
    }
    if (t.begin > cursor) {
      throw new ModelLoadError(file, `bytes [${cursor}, ${t.begin}) of the data section belong to no tensor`);
    }
    cursor = t.end;
    previous = t;
  }
  if (cursor !== dataLength) {
    throw new ModelLoadError(file, `${dataLength - cursor} bytes after the last tensor belong to no tensor (data section ${dataLength} bytes)`);
  }
  return { tensors, metadata };
}

/**
 * Reads and validates the header of a safetensors file (not the tensor data).
 * @throws ModelLoadError (naming `file`) when the file is missing, shorter than its header,
 *   the header is larger than {@link MAX_HEADER_BYTES} or not JSON, or an entry has an unknown
 *   dtype, bad shape, offsets out of range / overlapping / leaving gaps, or a byte length that
 *   differs from shape x dtype size.
 */
export function readSafetensorsHeader(file: string): SafetensorsHeader {
  const fd = openForReading(file);
  try {
    return readHeaderFromFd(fd, file);
  } finally {
    fs.closeSync(fd);
  }
}

function openForReading(file: string): number {
  try {
    return fs.openSync(file, 'r');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ModelLoadError(file, code === 'ENOENT' ? 'file not found' : `cannot open: ${(err as Error).message}`);
  }
}

function readHeaderFromFd(fd: number, file: string): SafetensorsHeader {
  const fileSize = fs.fstatSync(fd).size;
  if (fileSize < 8) throw new ModelLoadError(file, `not a safetensors file: only ${fileSize} bytes`);
  const prefix = new Uint8Array(8);
  readBytesAt(fd, prefix, 0, file);
  const headerLength = Buffer.from(prefix).readBigUInt64LE(0);
  if (headerLength > BigInt(MAX_HEADER_BYTES)) {
    throw new ModelLoadError(file, `safetensors header length ${headerLength} bytes exceeds the ${MAX_HEADER_BYTES}-byte limit (corrupt or not a safetensors file)`);
  }
  const n = Number(headerLength);
  if (8 + n > fileSize) {
    throw new ModelLoadError(file, `safetensors header length ${n} bytes runs past the end of the file (${fileSize} bytes)`);
  }
  const headerBytes = new Uint8Array(n);
  readBytesAt(fd, headerBytes, 8, file);
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(headerBytes));
  } catch (err) {
    throw new ModelLoadError(file, `safetensors header is not valid JSON (${(err as Error).message})`);
  }
  const { tensors, metadata } = validateHeader(json, fileSize - 8 - n, file);
  return { tensors, metadata, dataStart: 8 + n, fileSize };
}

/** Options of {@link readSafetensors} and {@link readShardedSafetensors}. */
export interface SafetensorsReadOptions {
  /**
   * Return lazy tensors (models/lazy-tensor.ts) that read their bytes from the file on use, in
   * their on-disk dtype, instead of reading everything now (default false). The file must not
   * change while the tensors are in use.
   */
  lazy?: boolean;
}

/** A tensor of a validated header, read now or lazily. */
function tensorOf(header: SafetensorsHeader, t: SafetensorsTensorInfo, file: string, lazy: boolean): WeightTensor {
  const tensor = fileTensor(t.shape, { file, offset: header.dataStart + t.begin, dtype: t.dtype as SafetensorsReadDtype });
  return lazy ? tensor : { shape: t.shape, data: tensor.data };
}

/**
 * Reads a safetensors file into float32 tensors (or lazy tensors, see
 * {@link SafetensorsReadOptions.lazy}).
 * @param file path of the `.safetensors` file.
 * @param names if given, only these tensors are read (others are validated but skipped).
 * @returns the tensors (shape as stored, `[out, in]` for linear weights), the `__metadata__`
 *   map and each tensor's on-disk dtype.
 * @throws ModelLoadError naming `file` (see {@link readSafetensorsHeader}); also for a tensor
 *   of a dtype other than F64/F32/F16/BF16.
 */
export function readSafetensors(file: string, names?: ReadonlySet<string>, options: SafetensorsReadOptions = {}): SafetensorsContents {
  assertLittleEndian();
  const fd = openForReading(file);
  let header: SafetensorsHeader;
  try {
    header = readHeaderFromFd(fd, file);
  } finally {
    fs.closeSync(fd);
  }
  const weights: WeightMap = new Map();
  const dtypes = new Map<string, SafetensorsReadDtype>();
  const files = new Map<string, string>();
  for (const t of header.tensors) {
    if (names && !names.has(t.name)) continue;
    if (!READABLE.has(t.dtype)) {
      throw new ModelLoadError(file, `tensor ${t.name} has dtype ${t.dtype}; only F64, F32, F16 and BF16 can be loaded`);
    }
    weights.set(t.name, tensorOf(header, t, file, options.lazy ?? false));
    dtypes.set(t.name, t.dtype as SafetensorsReadDtype);
    files.set(t.name, file);
  }
  return { weights, metadata: header.metadata, dtypes, files };
}

/** Options of {@link writeSafetensors} and {@link writeShardedSafetensors}. */
export interface SafetensorsWriteOptions {
  /** On-disk dtype of every tensor (default F32). */
  dtype?: SafetensorsWriteDtype;
  /** `__metadata__` entries (string values only). */
  metadata?: Record<string, string>;
}

const WRITE_BYTES: Record<SafetensorsWriteDtype, number> = { F32: 4, F16: 2, BF16: 2 };
/** Elements narrowed per chunk when writing F16/BF16 (bounds the temporary buffer). */
const ENCODE_CHUNK = 1 << 22;

function checkName(name: string): void {
  if (name === '' || name === '__metadata__') throw new Error(`safetensors: invalid tensor name ${JSON.stringify(name)}`);
}

function checkShape(name: string, shape: readonly number[]): void {
  checkName(name);
  if (!Array.isArray(shape) || !shape.every(isNonNegativeInteger)) throw new Error(`safetensors: tensor ${name} has shape [${shape.join(', ')}], not a list of non-negative integers`);
}

/** Header bytes (length prefix + JSON padded with spaces to a multiple of 8) and each tensor's data offset. */
function encodeHeader(names: readonly string[], shapes: ReadonlyMap<string, readonly number[]>, dtype: SafetensorsWriteDtype, metadata?: Record<string, string>): { bytes: Uint8Array; offsets: Map<string, number> } {
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length > 0) header.__metadata__ = metadata;
  const offsets = new Map<string, number>();
  let offset = 0;
  for (const name of names) {
    const shape = shapes.get(name)!;
    const bytes = numel(shape) * WRITE_BYTES[dtype];
    header[name] = { dtype, shape, data_offsets: [offset, offset + bytes] };
    offsets.set(name, offset);
    offset += bytes;
  }
  let text = JSON.stringify(header);
  const encoder = new TextEncoder();
  const pad = (8 - (encoder.encode(text).length % 8)) % 8;
  text += ' '.repeat(pad);
  const json = encoder.encode(text);
  const out = new Uint8Array(8 + json.length);
  Buffer.from(out.buffer).writeBigUInt64LE(BigInt(json.length), 0);
  out.set(json, 8);
  return { bytes: out, offsets };
}

function writeAllAt(fd: number, bytes: Uint8Array, position: number): void {
  let done = 0;
  while (done < bytes.length) {
    const length = Math.min(IO_CHUNK, bytes.length - done);
    done += fs.writeSync(fd, bytes, done, length, position + done);
  }
}

/**
 * One safetensors file whose header is written first, from the shapes it will hold, and whose
 * tensors are then written in any order, each at its place (positional writes). Tensors are
 * laid out in the order of `names`.
 */
class SafetensorsFileWriter {
  private readonly fd: number;
  private readonly dataStart: number;
  private readonly offsets: Map<string, number>;
  private readonly pending: Set<string>;
  readonly bytes: number;

  constructor(
    readonly file: string,
    names: readonly string[],
    private readonly shapes: ReadonlyMap<string, readonly number[]>,
    private readonly dtype: SafetensorsWriteDtype,
    metadata?: Record<string, string>,
  ) {
    assertLittleEndian();
    const header = encodeHeader(names, shapes, dtype, metadata);
    this.offsets = header.offsets;
    this.pending = new Set(names);
    this.dataStart = header.bytes.length;
    this.bytes = header.bytes.length + names.reduce((n, name) => n + numel(shapes.get(name)!) * WRITE_BYTES[dtype], 0);
    this.fd = fs.openSync(file, 'w');
    try {
      writeAllAt(this.fd, header.bytes, 0);
      // The file has its final size at once; tensors not written yet read as zeros.
      fs.ftruncateSync(this.fd, this.bytes);
    } catch (err) {
      fs.closeSync(this.fd);
      throw err;
    }
  }

  /** Whether `name` belongs to this file. */
  has(name: string): boolean {
    return this.offsets.has(name);
  }

  /** Names planned but not written yet. */
  get missing(): string[] {
    return [...this.pending];
  }

  /**
   * Writes one tensor's values (narrowed to the file's dtype, round to nearest even).
   * @throws Error for a name not planned here, or values that do not match its shape.
   */
  write(name: string, data: Float32Array): void {
    const offset = this.offsets.get(name);
    if (offset === undefined) throw new Error(`safetensors: tensor ${name} is not part of ${path.basename(this.file)}`);
    const shape = this.shapes.get(name)!;
    if (numel(shape) !== data.length) throw new Error(`safetensors: tensor ${name} has shape [${shape.join(', ')}] but ${data.length} values`);
    const at = this.dataStart + offset;
    if (this.dtype === 'F32') {
      let position = at;
      for (const view of byteViews(data)) {
        writeAllAt(this.fd, view, position);
        position += view.byteLength;
      }
    } else {
      for (let i = 0; i < data.length; i += ENCODE_CHUNK) {
        const part = data.subarray(i, Math.min(data.length, i + ENCODE_CHUNK));
        const bits = this.dtype === 'F16' ? toFloat16Array(part) : toBfloat16Array(part);
        writeAllAt(this.fd, new Uint8Array(bits.buffer), at + i * 2);
      }
    }
    this.pending.delete(name);
  }

  /** A lazy tensor over what was written for `name` (valid while the file stays where it is). */
  readBack(name: string, file = this.file): LazyTensor {
    const offset = this.offsets.get(name);
    if (offset === undefined) throw new Error(`safetensors: tensor ${name} is not part of ${path.basename(this.file)}`);
    return fileTensor([...this.shapes.get(name)!], { file, offset: this.dataStart + offset, dtype: this.dtype });
  }

  close(): void {
    fs.closeSync(this.fd);
  }
}

/**
 * Writes `weights` to one safetensors file (tensors in sorted name order).
 * @returns the number of bytes written.
 * @throws Error for a tensor whose data length differs from the product of its shape, or I/O errors.
 */
export function writeSafetensors(file: string, weights: ReadonlyMap<string, WeightTensor>, options: SafetensorsWriteOptions = {}): number {
  const names = [...weights.keys()].sort();
  const shapes = new Map<string, number[]>();
  for (const name of names) {
    const t = weights.get(name)!;
    checkShape(name, t.shape);
    if (numel(t.shape) !== tensorLength(t)) throw new Error(`safetensors: tensor ${name} has shape [${t.shape.join(', ')}] but ${tensorLength(t)} values`);
    shapes.set(name, t.shape);
  }
  const writer = new SafetensorsFileWriter(file, names, shapes, options.dtype ?? 'F32', options.metadata);
  try {
    for (const name of names) writer.write(name, weights.get(name)!.data);
  } finally {
    writer.close();
  }
  return writer.bytes;
}

/** Options of {@link writeShardedSafetensors}. */
export interface ShardedWriteOptions extends SafetensorsWriteOptions {
  /** Largest tensor data per shard file (default 2 GiB); a bigger single tensor gets its own shard. */
  maxShardBytes?: number;
}

/**
 * A checkpoint written tensor by tensor, in any order, into `dir` the way `save_pretrained`
 * lays it out (see {@link writeShardedSafetensors}): the shards and their headers are planned
 * from the shapes at once, every tensor is written to its place as soon as it is known (so a
 * producer such as the slicer never holds the whole model), and {@link finish} writes the
 * index. Memory: one tensor at a time (plus a 16 MiB buffer when narrowing to F16/BF16).
 */
export class ShardedSafetensorsWriter {
  /** File names, relative to the directory (the index is added by {@link finish}). */
  readonly files: string[];
  private readonly shards: SafetensorsFileWriter[];
  private readonly shapes: Map<string, number[]>;
  private readonly totalBytes: number;
  private closed = false;

  /**
   * Creates the shard files (headers written, data zero) in `dir`.
   * @param shapes every tensor the checkpoint will hold, name -> shape.
   * @throws Error for an invalid name or shape; I/O errors.
   */
  constructor(readonly dir: string, shapes: ReadonlyMap<string, readonly number[]>, options: ShardedWriteOptions = {}) {
    const dtype = options.dtype ?? 'F32';
    const limit = options.maxShardBytes ?? DEFAULT_MAX_SHARD_BYTES;
    const names = [...shapes.keys()].sort();
    this.shapes = new Map(names.map((n) => [n, [...shapes.get(n)!]]));
    for (const [name, shape] of this.shapes) checkShape(name, shape);
    const groups: string[][] = [];
    let current: string[] = [];
    let currentBytes = 0;
    let totalBytes = 0;
    for (const name of names) {
      const bytes = numel(this.shapes.get(name)!) * WRITE_BYTES[dtype];
      if (current.length > 0 && currentBytes + bytes > limit) {
        groups.push(current);
        current = [];
        currentBytes = 0;
      }
      current.push(name);
      currentBytes += bytes;
      totalBytes += bytes;
    }
    if (current.length > 0 || groups.length === 0) groups.push(current);
    this.totalBytes = totalBytes;
    const width = Math.max(5, String(groups.length).length);
    const pad = (i: number) => String(i).padStart(width, '0');
    this.files = groups.length === 1 ? [SAFETENSORS_FILE] : groups.map((_, i) => `model-${pad(i + 1)}-of-${pad(groups.length)}.safetensors`);
    this.shards = [];
    try {
      groups.forEach((group, i) => this.shards.push(new SafetensorsFileWriter(path.join(dir, this.files[i]!), group, this.shapes, dtype, options.metadata)));
    } catch (err) {
      this.close();
      throw err;
    }
  }

  private shardOf(name: string): SafetensorsFileWriter {
    const shard = this.shards.find((s) => s.has(name));
    if (!shard) throw new Error(`safetensors: tensor ${name} is not part of the planned checkpoint`);
    return shard;
  }

  /**
   * Writes one tensor (its `data` is read once).
   * @throws Error for a tensor that was not planned or whose shape differs from the plan.
   */
  write(name: string, tensor: WeightTensor): void {
    const shape = this.shapes.get(name);
    if (!shape) throw new Error(`safetensors: tensor ${name} is not part of the planned checkpoint`);
    if (tensor.shape.length !== shape.length || tensor.shape.some((n, i) => n !== shape[i])) {
      throw new Error(`safetensors: tensor ${name} has shape [${tensor.shape.join(', ')}], planned [${shape.join(', ')}]`);
    }
    this.shardOf(name).write(name, tensor.data);
  }

  /**
   * What was written for `name`, as a lazy tensor reading it back from its shard (in `dir`, or
   * in `inDir` once the files were moved there).
   */
  readBack(name: string, inDir = this.dir): LazyTensor {
    const shard = this.shardOf(name);
    return shard.readBack(name, path.join(inDir, path.basename(shard.file)));
  }

  /** Planned tensors not written yet, in sorted order. */
  get missing(): string[] {
    return this.shards.flatMap((s) => s.missing).sort();
  }

  /**
   * Closes the shards and, when there are several, writes `model.safetensors.index.json`.
   * @returns every file name written, relative to `dir`.
   * @throws Error naming the first planned tensors that were never written.
   */
  finish(): string[] {
    const missing = this.missing;
    if (missing.length > 0) {
      this.close();
      throw new Error(`safetensors: ${missing.length} planned tensor(s) were never written: ${missing.slice(0, 5).join(', ')}${missing.length > 5 ? ', ...' : ''}`);
    }
    this.close();
    if (this.files.length === 1) return [...this.files];
    const weightMap: Record<string, string> = {};
    this.shards.forEach((s, i) => {
      for (const name of this.shapes.keys()) if (s.has(name)) weightMap[name] = this.files[i]!;
    });
    const sorted = Object.fromEntries(Object.keys(weightMap).sort().map((k) => [k, weightMap[k]]));
    const index = { metadata: { total_size: this.totalBytes }, weight_map: sorted };
    fs.writeFileSync(path.join(this.dir, SAFETENSORS_INDEX_FILE), JSON.stringify(index, null, 2) + '\n');
    return [...this.files, SAFETENSORS_INDEX_FILE];
  }

  /** Closes every shard file (idempotent); the files stay. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const s of this.shards) s.close();
  }
}

/**
 * Writes `weights` into `dir` the way `save_pretrained` does: one `model.safetensors` when the
 * tensor data fits in `maxShardBytes`, else `model-0000i-of-0000n.safetensors` shards (tensors
 * in sorted name order) plus `model.safetensors.index.json` (`metadata.total_size` and
 * `weight_map`). Tensors are read (lazy ones too) and written one at a time.
 * @returns the file names written, relative to `dir`.
 * @throws Error for a tensor whose data length differs from the product of its shape, or I/O errors.
 */
export function writeShardedSafetensors(dir: string, weights: ReadonlyMap<string, WeightTensor>, options: ShardedWriteOptions = {}): string[] {
  const shapes = new Map<string, number[]>();
  for (const [name, t] of weights) {
    checkShape(name, t.shape);
    if (numel(t.shape) !== tensorLength(t)) throw new Error(`safetensors: tensor ${name} has shape [${t.shape.join(', ')}] but ${tensorLength(t)} values`);
    shapes.set(name, t.shape);
  }
  const writer = new ShardedSafetensorsWriter(dir, shapes, options);
  try {
    for (const [name, t] of weights) writer.write(name, t);
  } catch (err) {
    writer.close();
    throw err;
  }
  return writer.finish();
}

/**
 * Reads a sharded checkpoint from its `model.safetensors.index.json`.
 * @returns every tensor named in `weight_map`, read from its shard (shards are resolved
 *   relative to the index's directory; lazily with `options.lazy`), plus each tensor's on-disk
 *   dtype and shard file.
 * @throws ModelLoadError naming the index when it is not JSON, has no `weight_map` object, or
 *   points at a shard that is missing or is not a plain file name; naming the shard when a
 *   tensor listed for it is not in it (or the shard is corrupt, see {@link readSafetensors}).
 */
export function readShardedSafetensors(indexFile: string, options: SafetensorsReadOptions = {}): SafetensorsContents {
  let json: unknown;
  try {
    json = JSON.parse(fs.readFileSync(indexFile, 'utf8'));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ModelLoadError(indexFile, code === 'ENOENT' ? 'file not found' : `not valid JSON (${(err as Error).message})`);
  }
  const weightMap = (json as { weight_map?: unknown } | null)?.weight_map;
  if (typeof weightMap !== 'object' || weightMap === null || Array.isArray(weightMap) ||
      !Object.values(weightMap).every((v) => typeof v === 'string')) {
    throw new ModelLoadError(indexFile, 'no "weight_map" object of tensor name -> shard file');
  }
  const byShard = new Map<string, Set<string>>();
  for (const [name, shard] of Object.entries(weightMap as Record<string, string>)) {
    if (shard !== path.basename(shard) || shard === '.' || shard === '..') {
      throw new ModelLoadError(indexFile, `weight_map entry ${name} -> ${JSON.stringify(shard)} is not a plain file name`);
    }
    if (!byShard.has(shard)) byShard.set(shard, new Set());
    byShard.get(shard)!.add(name);
  }
  const dir = path.dirname(indexFile);
  const result: SafetensorsContents = { weights: new Map(), metadata: {}, dtypes: new Map(), files: new Map() };
  for (const [shard, names] of byShard) {
    const shardPath = path.join(dir, shard);
    if (!fs.existsSync(shardPath)) {
      throw new ModelLoadError(indexFile, `weight_map points to shard ${shard}, which does not exist (${shardPath}); ${names.size} tensor(s) are listed in it`);
    }
    const contents = readSafetensors(shardPath, names, options);
    for (const name of names) {
      const t = contents.weights.get(name);
      if (!t) throw new ModelLoadError(shardPath, `tensor ${name} is listed in ${path.basename(indexFile)} but not stored in this shard`);
      result.weights.set(name, t);
      result.dtypes.set(name, contents.dtypes.get(name)!);
      result.files.set(name, shardPath);
    }
    Object.assign(result.metadata, contents.metadata);
  }
  return result;
}
