/**
 * Per-sequence KV cache kept on the host. One cache holds, for every layer, the keys and the
 * values of the tokens the sequence has seen, laid out `[num_key_value_heads, capacity,
 * head_dim]` so each head's rows are contiguous and the batch tensor
 * `past_key_values.{i}.key [batch, num_key_value_heads, past, head_dim]` is assembled with one
 * copy per (sequence, head). The capacity grows geometrically up to the model's context.
 * Entries are float32, or raw IEEE half bit patterns (Uint16Array) for float16 graphs.
 */

/** Element storage of a cache: float32 values or float16 bit patterns. */
export type KVArray = Float32Array | Uint16Array;
export type KVDtype = 'float32' | 'float16';

/** A zeroed array of the cache's element type. */
export function kvArray(dtype: KVDtype, length: number): KVArray {
  return dtype === 'float16' ? new Uint16Array(length) : new Float32Array(length);
}

export class SequenceCache {
  private capacity = 0;
  private len = 0;
  /**
   * Positions [0, hostLen) are stored here; [hostLen, len) live only in the resident past row
   * of the session that computed them (runtime/decoder-session.ts), which writes them back
   * ({@link readRow}) when the sequence leaves its row.
   */
  private hostLen = 0;
  private keys: KVArray[] = [];
  private values: KVArray[] = [];

  constructor(
    readonly numLayers: number,
    readonly kvHeads: number,
    readonly headDim: number,
    readonly maxContext: number,
    readonly dtype: KVDtype = 'float32',
  ) {}

  /** Number of tokens held. */
  get length(): number {
    return this.len;
  }

  /** Positions stored in this cache (the rest, up to {@link length}, are in a session's resident row). */
  get hostLength(): number {
    return this.hostLen;
  }

  /** Bytes of host memory currently reserved. */
  get reservedBytes(): number {
    return this.capacity * this.numLayers * 2 * this.kvHeads * this.headDim * (this.dtype === 'float16' ? 2 : 4);
  }

  /** Checks that `extra` more tokens fit the context. @throws RangeError past maxContext. */
  checkRoom(extra: number): void {
    const need = this.len + extra;
    if (need > this.maxContext) throw new RangeError(`sequence of ${need} tokens exceeds the context length ${this.maxContext}`);
  }

  /** Makes room on the host for `extra` more tokens. @throws RangeError past maxContext. */
  reserve(extra: number): void {
    this.checkRoom(extra);
    const need = this.len + extra;
    if (need <= this.capacity) return;
    const cap = Math.min(this.maxContext, Math.max(need, this.capacity * 2, 16));
    const row = this.headDim;
    const grow = (old: KVArray | undefined): KVArray => {
      const next = kvArray(this.dtype, this.kvHeads * cap * row);
      if (old) for (let h = 0; h < this.kvHeads; h++) copy(next, old.subarray(h * this.capacity * row, (h * this.capacity + this.hostLen) * row), h * cap * row);
      return next;
    };
    this.keys = Array.from({ length: this.numLayers }, (_, l) => grow(this.keys[l]));
    this.values = Array.from({ length: this.numLayers }, (_, l) => grow(this.values[l]));
    this.capacity = cap;
  }

  /**
   * Copies entries [from, from + count) of `layer` into row `b` of a batch tensor `dst` of
   * shape [batch, kvHeads, past, headDim], at the same positions (the batch layout is
   * right-padded: a sequence's entries start at position 0). With `transposed`, `dst` is
   * [batch, kvHeads, headDim, past] (the key layout of the 'primitives' attention kernel,
   * models/onnx/contract.ts `keyCacheLayout`).
   * @throws Error when a requested position is not stored on the host (it lives in a resident
   *   row: flush it with {@link readRow} first), TypeError when float32 and float16 mix
   */
  writeEntries(layer: number, kind: 'key' | 'value', dst: KVArray, b: number, past: number, from = 0, count = this.len - from, transposed = false): void {
    if (count <= 0) return;
    if (from + count > this.hostLen) throw new Error(`KV cache: positions up to ${from + count} requested, ${this.hostLen} stored on the host`);
    const src = kind === 'key' ? this.keys[layer] : this.values[layer];
    const row = this.headDim;
    if (!transposed) {
      for (let h = 0; h < this.kvHeads; h++) {
        copyRange(dst, ((b * this.kvHeads + h) * past + from) * row, src, (h * this.capacity + from) * row, count * row);
      }
      return;
    }
    if (dst.constructor !== src.constructor) throw new TypeError('KV cache: float32 and float16 entries mixed');
    for (let h = 0; h < this.kvHeads; h++) {
      transposeInto(dst, (b * this.kvHeads + h) * row * past + from, past, src, (h * this.capacity + from) * row, row, count);
    }
  }

  /**
   * Appends `count` new positions taken from a tensor `src` [batch, kvHeads, total, headDim]
   * (this step's `step_key_values`, or a full `present`) at batch row `b`, positions
   * total-count .. total-1. Call {@link reserve} first and
   * {@link commit} after all layers.
   * @throws Error when newer entries of this sequence live only in a resident row
   */
  readPresent(layer: number, kind: 'key' | 'value', src: KVArray, b: number, total: number, count: number): void {
    if (this.hostLen !== this.len) throw new Error('KV cache: appending on the host while entries live in a resident row');
    const dst = kind === 'key' ? this.keys[layer] : this.values[layer];
    const row = this.headDim;
    for (let h = 0; h < this.kvHeads; h++) {
      const from = ((b * this.kvHeads + h) * total + (total - count)) * row;
      copyRange(dst, (h * this.capacity + this.len) * row, src, from, count * row);
    }
  }

  /**
   * Copies positions [{@link hostLength}, {@link length}) of `layer` from row `b` of a batch
   * tensor `src` [batch, kvHeads, past, headDim] (transposed: [batch, kvHeads, headDim, past])
   * into this cache. Call for every layer and kind, then {@link markStored}.
   */
  readRow(layer: number, kind: 'key' | 'value', src: KVArray, b: number, past: number, transposed: boolean): void {
    const dst = kind === 'key' ? this.keys[layer] : this.values[layer];
    const row = this.headDim;
    const from = this.hostLen;
    const count = this.len - from;
    if (count <= 0) return;
    if (dst.constructor !== src.constructor) throw new TypeError('KV cache: float32 and float16 entries mixed');
    for (let h = 0; h < this.kvHeads; h++) {
      const o = (h * this.capacity + from) * row;
      if (!transposed) {
        copyRange(dst, o, src, ((b * this.kvHeads + h) * past + from) * row, count * row);
        continue;
      }
      const base = (b * this.kvHeads + h) * row * past + from;
      for (let d = 0; d < row; d++) {
        for (let t = 0, i = base + d * past; t < count; t++, i++) dst[o + t * row + d] = src[i];
      }
    }
  }

  /** Marks every position as stored here (after {@link readRow} for all layers). */
  markStored(): void {
    this.hostLen = this.len;
  }

  /**
   * Marks `count` appended positions as held: stored here (after {@link readPresent}) or, with
   * `stored` false, only in the session's resident row.
   */
  commit(count: number, stored = true): void {
    this.len += count;
    if (stored) this.hostLen = this.len;
  }

  /** Drops everything (the slot can be reused). */
  clear(): void {
    this.len = 0;
    this.hostLen = 0;
  }

  /**
   * The sequence is finished: drops everything and frees the host memory. A session holding
   * the sequence in a resident row then gives the row up without writing it back.
   */
  release(): void {
    this.clear();
    this.capacity = 0;
    this.keys = [];
    this.values = [];
  }
}

/**
 * Writes this step's entries of batch row `r` into row `r` of a batch past buffer `dst`
 * [batch, kv_heads, past, head_dim] (transposed: [batch, kv_heads, head_dim, past]): `count`
 * positions taken from the end of `fresh` [batch, kv_heads, S, head_dim] (`step_key_values`),
 * written at positions start..start+count-1.
 */
export function writeStepEntries(dst: KVArray, fresh: KVArray, r: number, past: number, S: number, start: number, count: number, kvHeads: number, headDim: number, transposed: boolean): void {
  if (dst.constructor !== fresh.constructor) throw new TypeError('KV cache: float32 and float16 entries mixed');
  for (let h = 0; h < kvHeads; h++) {
    const from = ((r * kvHeads + h) * S + (S - count)) * headDim;
    if (transposed) transposeInto(dst, (r * kvHeads + h) * headDim * past + start, past, fresh, from, headDim, count);
    else copyRange(dst, ((r * kvHeads + h) * past + start) * headDim, fresh, from, count * headDim);
  }
}

/**
 * Copies `n` elements src[from..] -> dst[to..] (same element type). Short runs (a decode step
 * copies one head_dim row per head, thousands of times) use a plain loop: a subarray per run
 * allocated enough to show up as garbage-collection time.
 */
function copyRange(dst: KVArray, to: number, src: KVArray, from: number, n: number): void {
  if (n > 256) {
    copy(dst, src.subarray(from, from + n), to);
    return;
  }
  if (dst.constructor !== src.constructor) throw new TypeError('KV cache: float32 and float16 entries mixed');
  for (let i = 0; i < n; i++) dst[to + i] = src[from + i];
}

/**
 * dst[to + d * stride + t] = src[from + t * row + d] for d < row, t < count: `count` positions
 * of `row` elements each, written position-minor. The inner loop walks one destination row
 * sequentially (a strided read, a contiguous write), several times faster here than writing
 * each position's `row` elements `stride` apart.
 */
function transposeInto(dst: KVArray, to: number, stride: number, src: KVArray, from: number, row: number, count: number): void {
  for (let d = 0; d < row; d++) {
    const o = to + d * stride;
    let i = from + d;
    for (let t = 0; t < count; t++, i += row) dst[o + t] = src[i];
  }
}

/** dst.set(src, offset) for two arrays of the same element type. */
function copy(dst: KVArray, src: KVArray, offset: number): void {
  if (dst.constructor !== src.constructor) throw new TypeError('KV cache: float32 and float16 entries mixed');
  (dst as Float32Array).set(src as Float32Array, offset);
}
