/**
 * Uncentred second moment H = sum_tokens x x^T = X^T X of a calibration signal, accumulated in
 * float64 (SliceGPT, Ashkboos et al. 2024, Eq. 8; PROTOCOL.md §5.2 step 1).
 */
import * as ort from 'onnxruntime-node';
import { JS_MATMUL_MAX_MACS } from './matmul.js';
import { momentF64Model } from './onnx-graphs.js';
import { linalgSession } from './sessions.js';

/**
 * Default cap on the entries of X per onnxruntime call: 2^25 (256 MiB as float64), so
 * [32768, 768] goes in one call and wider or longer signals in several.
 */
export const MOMENT_CHUNK_ELEMENTS = 2 ** 25;

/**
 * Accumulates H += X^T X over batches of a [tokens, d] signal, in float64.
 *
 * Float32 input is converted exactly to float64 before multiplying (inside the onnxruntime
 * graph, or element by element in JS for tiny batches). Batches are applied in call order,
 * even when `add` is called again before the previous promise settled.
 *
 * @example
 * const acc = new MomentAccumulator(hidden_size);
 * for (const batch of signals) await acc.add(batch, batch.length / hidden_size);
 * const h = await acc.moment(); // [hidden_size, hidden_size], then pcaFromMoment(h, hidden_size)
 */
export class MomentAccumulator {
  /** Feature width d (H is d x d). */
  readonly dim: number;
  private h: Float64Array;
  private tokens = 0;
  private queue: Promise<void> = Promise.resolve();
  private readonly maxChunkElements: number;

  /**
   * @param d - feature width.
   * @param options - `maxChunkElements`: cap on the entries of X sent to onnxruntime per call
   *   (default {@link MOMENT_CHUNK_ELEMENTS}); a call always takes at least one row.
   * @throws RangeError unless d and maxChunkElements are positive integers.
   */
  constructor(d: number, options: { maxChunkElements?: number } = {}) {
    if (!Number.isInteger(d) || d < 1) throw new RangeError(`MomentAccumulator: d must be a positive integer, got ${d}`);
    const maxChunk = options.maxChunkElements ?? MOMENT_CHUNK_ELEMENTS;
    if (!Number.isInteger(maxChunk) || maxChunk < 1) {
      throw new RangeError(`MomentAccumulator: maxChunkElements must be a positive integer, got ${maxChunk}`);
    }
    this.dim = d;
    this.h = new Float64Array(d * d);
    this.maxChunkElements = maxChunk;
  }

  /** Number of tokens (rows of X) accumulated by the batches whose `add` has settled. */
  get count(): number {
    return this.tokens;
  }

  /**
   * Adds X^T X to H.
   * @param x - [tokens, d] row-major; must not be modified until the returned promise settles.
   * @param tokens - number of rows of x (0 is allowed and adds nothing).
   * @returns a promise that settles when H includes this batch.
   * @throws (rejects) RangeError when `x.length !== tokens * d`; onnxruntime errors. A failed
   *   batch leaves H and `count` unchanged and does not block later batches.
   */
  add(x: Float32Array | Float64Array, tokens: number): Promise<void> {
    const d = this.dim;
    if (!Number.isInteger(tokens) || tokens < 0 || x.length !== tokens * d) {
      return Promise.reject(
        new RangeError(`MomentAccumulator.add: x has ${x.length} entries, expected tokens * d = ${tokens} * ${d}`),
      );
    }
    const done = this.queue.then(() => this.accumulate(x, tokens));
    this.queue = done.catch(() => undefined);
    return done;
  }

  /**
   * The accumulated moment H, d x d row-major float64, exactly symmetric ((H + H^T) / 2 of
   * the running sum, which is symmetric up to summation-order rounding). Waits for pending
   * batches; returns a copy.
   */
  async moment(): Promise<Float64Array> {
    await this.queue;
    const d = this.dim;
    const out = new Float64Array(d * d);
    for (let i = 0; i < d; i++) {
      out[i * d + i] = this.h[i * d + i];
      for (let j = 0; j < i; j++) {
        const m = 0.5 * (this.h[i * d + j] + this.h[j * d + i]);
        out[i * d + j] = m;
        out[j * d + i] = m;
      }
    }
    return out;
  }

  private async accumulate(x: Float32Array | Float64Array, tokens: number): Promise<void> {
    const d = this.dim;
    if (tokens * d * d <= JS_MATMUL_MAX_MACS) {
      const h = Float64Array.from(this.h);
      for (let r = 0; r < tokens; r++) {
        const row = r * d;
        for (let i = 0; i < d; i++) {
          const xi = x[row + i];
          if (xi === 0) continue;
          for (let j = 0; j < d; j++) h[i * d + j] += xi * x[row + j];
        }
      }
      this.h = h;
    } else {
      const f32 = x instanceof Float32Array;
      const session = await linalgSession(`moment_f64_${f32 ? 'f32' : 'f64'}`, () => momentF64Model(f32));
      const rowsPerChunk = Math.max(1, Math.floor(this.maxChunkElements / d));
      let h = this.h;
      for (let start = 0; start < tokens; start += rowsPerChunk) {
        const rows = Math.min(rowsPerChunk, tokens - start);
        const chunk = x.subarray(start * d, (start + rows) * d);
        const out = await session.run({
          X: f32 ? new ort.Tensor('float32', chunk as Float32Array, [rows, d]) : new ort.Tensor('float64', chunk as Float64Array, [rows, d]),
          H: new ort.Tensor('float64', h, [d, d]),
        });
        h = out.Y.data as Float64Array;
      }
      this.h = h;
    }
    this.tokens += tokens;
  }
}
