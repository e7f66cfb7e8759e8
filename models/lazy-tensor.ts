/**
 * Weight tensors that are read when they are used, not when the model is loaded: a range of a
 * safetensors file in its on-disk dtype (F32, F16, BF16, F64), or a function of other tensors
 * (a fused norm scale, the rows of a fused projection). A 1.1 B-parameter model then loads in
 * milliseconds and holds no weight in memory; the graph builder and the slicer read one tensor
 * at a time and let it go (docs/memory.md).
 *
 * A lazy tensor is a {@link WeightTensor}: `data` gives its float32 values. Each read of `data`
 * produces the values anew (from the file, widened from F16/BF16, or computed), except that the
 * tensor read most recently is kept until the event loop turns, so `t.data[i]` in a loop over
 * one tensor reads it once. Read `data` once into a local when several tensors are used
 * together. The arrays are the caller's: nothing else holds them, and writing into one changes
 * no later read.
 */
import * as fs from 'node:fs';
import { byteViews } from './bytes.js';
import { ModelLoadError, type WeightDtype, type WeightTensor } from './types.js';

/** How a tensor is stored in a file: safetensors dtype names. */
export type StoredDtype = 'F32' | 'F16' | 'BF16' | 'F64';

const STORED_BYTES: Record<StoredDtype, number> = { F32: 4, F16: 2, BF16: 2, F64: 8 };
const WEIGHT_DTYPE: Record<StoredDtype, WeightDtype> = { F32: 'float32', F16: 'float16', BF16: 'bfloat16', F64: 'float64' };

/** Bytes per element of a stored dtype. */
export function storedBytes(dtype: StoredDtype): number {
  return STORED_BYTES[dtype];
}

/** Where a file-backed tensor's bytes are. */
export interface FileRange {
  file: string;
  /** Absolute byte offset of the first element in the file. */
  offset: number;
  dtype: StoredDtype;
}

/** The tensor whose values were read last, kept until the event loop turns (see the module comment). */
let recent: { tensor: LazyTensor; data: Float32Array } | null = null;
let clearing = false;

function remember(tensor: LazyTensor, data: Float32Array): void {
  recent = { tensor, data };
  if (clearing) return;
  clearing = true;
  setImmediate(() => {
    recent = null;
    clearing = false;
  }).unref();
}

/** A weight tensor whose values are produced on each use (see the module comment). */
export class LazyTensor implements WeightTensor {
  readonly #produce: () => Float32Array;

  /**
   * @param shape row-major shape; `produce` must return product(shape) values.
   * @param dtype the dtype the values are stored in ('float32' for computed tensors).
   * @param source the file range, for tensors read from a file.
   */
  constructor(
    readonly shape: number[],
    readonly dtype: WeightDtype,
    produce: () => Float32Array,
    readonly source?: FileRange,
  ) {
    this.#produce = produce;
  }

  /** Number of elements (the product of the shape); reads nothing. */
  get length(): number {
    return numel(this.shape);
  }

  /**
   * The float32 values, produced now (see the module comment).
   * @throws ModelLoadError naming the file when it can no longer be read as it was opened;
   *   Error when a computed tensor's function returns the wrong number of values.
   */
  get data(): Float32Array {
    if (recent?.tensor === this) return recent.data;
    const data = this.#produce();
    if (data.length !== this.length) throw new Error(`lazy tensor [${this.shape.join(', ')}]: produced ${data.length} values`);
    remember(this, data);
    return data;
  }

  /** The stored bytes of a file-backed tensor, as they are in the file (little-endian). */
  storedBytes(): Uint8Array {
    if (!this.source) throw new Error('storedBytes: not a file-backed tensor');
    const out = new Uint8Array(this.length * STORED_BYTES[this.source.dtype]);
    readRange(this.source.file, this.source.offset, out);
    return out;
  }
}

/** Element count of a shape. */
export function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** Number of elements of any weight tensor, without reading a lazy one. */
export function tensorLength(t: WeightTensor): number {
  return t instanceof LazyTensor ? t.length : t.data.length;
}

/** Whether `t` is produced on use ({@link LazyTensor}). */
export function isLazy(t: WeightTensor): t is LazyTensor {
  return t instanceof LazyTensor;
}

/** Bytes per single read call (Node rejects single I/O calls of 2 GiB or more). */
const IO_CHUNK = 1 << 30;
/** Elements widened per chunk when converting F16/BF16/F64 (bounds the temporary buffer). */
const CONVERT_CHUNK = 1 << 22;

/**
 * Fills `target` with the bytes of `file` from `offset` on.
 * @throws ModelLoadError naming the file when it cannot be opened or ends first.
 */
function readRange(file: string, offset: number, target: Uint8Array): void {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (err) {
    throw new ModelLoadError(file, `cannot read weights: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message} (was the file moved or deleted after the model was loaded?)`);
  }
  try {
    let done = 0;
    while (done < target.length) {
      const n = fs.readSync(fd, target, done, Math.min(IO_CHUNK, target.length - done), offset + done);
      if (n === 0) throw new ModelLoadError(file, `unexpected end of file at byte ${offset + done} (was the file changed after the model was loaded?)`);
      done += n;
    }
  } finally {
    fs.closeSync(fd);
  }
}

let f16Table: Float32Array | null = null;

/** The float32 value of every float16 bit pattern (built once, 256 KiB; exact: every float16 is a float32). */
export function float16Table(): Float32Array {
  if (f16Table) return f16Table;
  const table = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exponent = (h >>> 10) & 0x1f;
    const mantissa = h & 0x3ff;
    if (exponent === 0) table[h] = sign * mantissa * 2 ** -24;
    else if (exponent === 0x1f) table[h] = mantissa === 0 ? sign * Infinity : NaN;
    else table[h] = sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
  }
  f16Table = table;
  return table;
}

/**
 * Reads `count` elements stored as `dtype` at `offset` of `file` into a new float32 array.
 * F32 is read straight into the result; F16, BF16 and F64 are read and widened (F64 rounded
 * to nearest) in chunks of 4 Mi elements, so the temporary buffer stays small.
 * @throws ModelLoadError naming the file (see readRange).
 */
export function readFloat32(file: string, offset: number, count: number, dtype: StoredDtype): Float32Array {
  const out = new Float32Array(count);
  if (dtype === 'F32') {
    let at = offset;
    for (const view of byteViews(out)) {
      readRange(file, at, view);
      at += view.byteLength;
    }
    return out;
  }
  const size = STORED_BYTES[dtype];
  const chunk = Math.min(count, CONVERT_CHUNK);
  const bytes = new Uint8Array(chunk * size);
  // Int32, not Uint32: `bits << 16` is an int32, stored without a conversion (1.4-1.8x faster).
  const outBits = new Int32Array(out.buffer, out.byteOffset, out.length);
  for (let at = 0; at < count; at += chunk) {
    const n = Math.min(chunk, count - at);
    readRange(file, offset + at * size, bytes.subarray(0, n * size));
    if (dtype === 'F64') {
      const wide = new Float64Array(bytes.buffer, 0, n);
      for (let i = 0; i < n; i++) out[at + i] = wide[i]!;
    } else {
      const bits = new Uint16Array(bytes.buffer, 0, n);
      if (dtype === 'BF16') for (let i = 0; i < n; i++) outBits[at + i] = bits[i]! << 16;
      else {
        const table = float16Table();
        for (let i = 0; i < n; i++) out[at + i] = table[bits[i]!]!;
      }
    }
  }
  return out;
}

/** A tensor read from `range` of its file on each use. */
export function fileTensor(shape: number[], range: FileRange): LazyTensor {
  const count = numel(shape);
  return new LazyTensor(shape, WEIGHT_DTYPE[range.dtype], () => readFloat32(range.file, range.offset, count, range.dtype), range);
}

/**
 * A tensor computed from others on each use (e.g. a weight with a norm scale folded in).
 * @param compute returns product(shape) float32 values.
 */
export function derivedTensor(shape: number[], compute: () => Float32Array): LazyTensor {
  return new LazyTensor(shape, 'float32', compute);
}

/**
 * Rows [from, to) of a [rows, ...] tensor: for a file-backed tensor another file-backed tensor
 * over those rows only (a contiguous byte range, read on use); else a copy.
 * @throws RangeError for rows outside the tensor.
 */
export function tensorRows(t: WeightTensor, from: number, to: number): WeightTensor {
  const rows = t.shape[0];
  if (!(from >= 0 && from <= to && to <= rows)) throw new RangeError(`rows [${from}, ${to}) of a tensor with ${rows} rows`);
  const rowSize = numel(t.shape.slice(1));
  const shape = [to - from, ...t.shape.slice(1)];
  if (t instanceof LazyTensor && t.source) {
    return fileTensor(shape, { ...t.source, offset: t.source.offset + from * rowSize * STORED_BYTES[t.source.dtype] });
  }
  if (t instanceof LazyTensor) return derivedTensor(shape, () => t.data.slice(from * rowSize, to * rowSize));
  return { shape, data: t.data.slice(from * rowSize, to * rowSize) };
}
