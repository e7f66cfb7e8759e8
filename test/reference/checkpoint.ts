/**
 * The reference's own reader of Hugging Face checkpoints: `model.safetensors`, or the shards
 * listed by `model.safetensors.index.json` (`weight_map`: tensor name -> shard file). Written
 * from the safetensors format description (huggingface/safetensors README: an 8-byte
 * little-endian header length N, N bytes of JSON `{name: {dtype, shape, data_offsets}}` plus an
 * optional `__metadata__`, then the data section, tensors row-major little-endian at
 * [begin, end) of it), NOT from SliceServe's models/safetensors.ts, so that a decoding bug there
 * cannot hide here.
 *
 * Tensors are read from disk when asked for (a checkpoint larger than memory still runs) and
 * decoded to float32, which is exact for F16 and BF16; F64 is rounded to float32 (transformers
 * would keep it: the reference refuses nothing, but says so in {@link ReferenceTensorInfo}).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ReferenceWeightError, type ReferenceTensor } from './math.js';

/** The storage dtypes read: IEEE binary32, binary16, bfloat16 (upper half of binary32), binary64. */
export type StorageDtype = 'F32' | 'F16' | 'BF16' | 'F64';

const BYTES: Record<StorageDtype, number> = { F32: 4, F16: 2, BF16: 2, F64: 8 };

/** Where one tensor lies. */
export interface ReferenceTensorInfo {
  name: string;
  file: string;
  dtype: StorageDtype;
  shape: number[];
  /** Absolute byte offset of the first element in `file`. */
  start: number;
}

/**
 * IEEE 754 binary16 bits -> number, decoded field by field: sign, 5 exponent bits (bias 15),
 * 10 fraction bits; exponent 0 is subnormal (fraction * 2^-24), exponent 31 is Inf/NaN.
 */
export function decodeFloat16(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 10) & 0x1f;
  const fraction = bits & 0x3ff;
  if (exponent === 0) return sign * fraction * 2 ** -24;
  if (exponent === 0x1f) return fraction === 0 ? sign * Infinity : NaN;
  return sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
}

/** bfloat16 bits -> number: the 16 bits are the upper half of a binary32. */
export function decodeBfloat16(bits: number): number {
  const u = new Uint32Array([(bits & 0xffff) << 16]);
  return new Float32Array(u.buffer)[0]!;
}

const LITTLE_ENDIAN = os.endianness() === 'LE';

function decode(bytes: Buffer, dtype: StorageDtype, count: number): Float32Array {
  const out = new Float32Array(count);
  switch (dtype) {
    case 'F32':
      if (LITTLE_ENDIAN) new Uint8Array(out.buffer).set(bytes);
      else for (let i = 0; i < count; i++) out[i] = bytes.readFloatLE(4 * i);
      break;
    case 'F64':
      for (let i = 0; i < count; i++) out[i] = bytes.readDoubleLE(8 * i);
      break;
    case 'F16': {
      // A 65,536-entry table: every binary16 value once.
      const table = float16Table();
      for (let i = 0; i < count; i++) out[i] = table[bytes.readUInt16LE(2 * i)]!;
      break;
    }
    case 'BF16':
      for (let i = 0; i < count; i++) out[i] = decodeBfloat16(bytes.readUInt16LE(2 * i));
      break;
  }
  return out;
}

let f16: Float32Array | undefined;
function float16Table(): Float32Array {
  if (!f16) {
    f16 = new Float32Array(65536);
    for (let b = 0; b < 65536; b++) f16[b] = decodeFloat16(b);
  }
  return f16;
}

function readHeader(file: string): ReferenceTensorInfo[] {
  const fd = fs.openSync(file, 'r');
  try {
    const size = fs.fstatSync(fd).size;
    const lenBuf = Buffer.alloc(8);
    if (fs.readSync(fd, lenBuf, 0, 8, 0) !== 8) throw new ReferenceWeightError(`${file}: shorter than the 8-byte safetensors header length`);
    const n = Number(lenBuf.readBigUInt64LE(0));
    if (!(n > 1 && 8 + n <= size)) throw new ReferenceWeightError(`${file}: header length ${n} does not fit the file of ${size} bytes`);
    const headerBuf = Buffer.alloc(n);
    fs.readSync(fd, headerBuf, 0, n, 8);
    const header = JSON.parse(headerBuf.toString('utf8')) as Record<string, unknown>;
    const dataStart = 8 + n;
    const infos: ReferenceTensorInfo[] = [];
    for (const [name, raw] of Object.entries(header)) {
      if (name === '__metadata__') continue;
      const e = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
      const dtype = e.dtype as StorageDtype;
      if (!(dtype in BYTES)) throw new ReferenceWeightError(`${file}: tensor ${name} has dtype ${String(e.dtype)}; the reference reads F32, F16, BF16 and F64`);
      const shape = e.shape as number[];
      const offsets = e.data_offsets as [number, number];
      if (!Array.isArray(shape) || !Array.isArray(offsets) || offsets.length !== 2) throw new ReferenceWeightError(`${file}: tensor ${name} has a malformed header entry`);
      const count = shape.reduce((a, b) => a * b, 1);
      if (offsets[1] - offsets[0] !== count * BYTES[dtype] || dataStart + offsets[1] > size) {
        throw new ReferenceWeightError(`${file}: tensor ${name} [${shape.join(', ')}] ${dtype} does not match its data offsets [${offsets.join(', ')}]`);
      }
      infos.push({ name, file, dtype, shape, start: dataStart + offsets[0] });
    }
    return infos;
  } finally {
    fs.closeSync(fd);
  }
}

/** A checkpoint's tensors, read on demand. */
export class ReferenceCheckpoint {
  private readonly infos = new Map<string, ReferenceTensorInfo>();
  private readonly memo = new Map<string, ReferenceTensor>();
  private readonly keep: boolean;
  /** Total bytes of tensor data on disk. */
  readonly bytes: number;

  /**
   * @param dir a model directory with model.safetensors or model.safetensors.index.json.
   * @param keepInMemory keep every tensor once read (default: when the data is under 512 MiB).
   * @throws ReferenceWeightError for a missing or malformed file, a tensor listed twice, or an
   *   index naming a tensor its shard does not hold.
   */
  constructor(readonly dir: string, keepInMemory?: boolean) {
    const single = path.join(dir, 'model.safetensors');
    const index = path.join(dir, 'model.safetensors.index.json');
    let files: string[];
    let expected: Map<string, string> | null = null;
    if (fs.existsSync(single)) {
      files = [single];
    } else if (fs.existsSync(index)) {
      const map = (JSON.parse(fs.readFileSync(index, 'utf8')) as { weight_map?: Record<string, string> }).weight_map;
      if (!map) throw new ReferenceWeightError(`${index} has no weight_map`);
      expected = new Map(Object.entries(map).map(([name, shard]) => [name, path.join(dir, shard)]));
      files = [...new Set(expected.values())].sort();
    } else {
      throw new ReferenceWeightError(`${dir}: no model.safetensors or model.safetensors.index.json`);
    }
    let bytes = 0;
    for (const file of files) {
      for (const info of readHeader(file)) {
        if (this.infos.has(info.name)) throw new ReferenceWeightError(`tensor ${info.name} is stored twice (${this.infos.get(info.name)!.file}, ${file})`);
        this.infos.set(info.name, info);
        bytes += info.shape.reduce((a, b) => a * b, 1) * BYTES[info.dtype];
      }
    }
    if (expected) {
      for (const [name, file] of expected) {
        if (this.infos.get(name)?.file !== file) throw new ReferenceWeightError(`${index} puts ${name} in ${path.basename(file)}, which does not hold it`);
      }
    }
    this.bytes = bytes;
    this.keep = keepInMemory ?? bytes < 512 * 2 ** 20;
  }

  names(): string[] {
    return [...this.infos.keys()];
  }

  has(name: string): boolean {
    return this.infos.has(name);
  }

  info(name: string): ReferenceTensorInfo {
    const info = this.infos.get(name);
    if (!info) throw new ReferenceWeightError(`${this.dir}: the checkpoint has no tensor ${name}`);
    return info;
  }

  /** The whole tensor as float32. */
  get(name: string): ReferenceTensor {
    const hit = this.memo.get(name);
    if (hit) return hit;
    const info = this.info(name);
    const count = info.shape.reduce((a, b) => a * b, 1);
    const t = { shape: info.shape, data: this.readRange(info, 0, count) };
    if (this.keep) this.memo.set(name, t);
    return t;
  }

  /** Row `r` of a 2-D tensor (an embedding lookup without reading the table). */
  row(name: string, r: number): Float32Array {
    const hit = this.memo.get(name);
    const info = this.info(name);
    if (info.shape.length !== 2) throw new ReferenceWeightError(`${name} is not 2-D`);
    const cols = info.shape[1]!;
    if (!(Number.isInteger(r) && r >= 0 && r < info.shape[0]!)) throw new ReferenceWeightError(`row ${r} of ${name} [${info.shape.join(', ')}] does not exist`);
    if (hit) return hit.data.subarray(r * cols, (r + 1) * cols);
    return this.readRange(info, r * cols, cols);
  }

  private readRange(info: ReferenceTensorInfo, first: number, count: number): Float32Array {
    const width = BYTES[info.dtype];
    const buf = Buffer.alloc(count * width);
    const fd = fs.openSync(info.file, 'r');
    try {
      let done = 0;
      while (done < buf.length) {
        const n = fs.readSync(fd, buf, done, buf.length - done, info.start + first * width + done);
        if (n <= 0) throw new ReferenceWeightError(`${info.file}: short read of ${info.name}`);
        done += n;
      }
    } finally {
      fs.closeSync(fd);
    }
    return decode(buf, info.dtype, count);
  }
}
