/**
 * An onnxruntime-node session over the Llama graph (models/llama/graph.ts) plus the batching
 * logic of one forward step: sequences with different cache lengths and different numbers of
 * new tokens run together (past entries right-padded in resident per-row buffers, new tokens
 * left-padded), with an additive attention bias that hides every padding position, so a
 * sequence's logits do not depend on what it is batched with.
 *
 * `session.run()` blocks the calling thread (RUNTIME-NOTES.md): servers call this from a
 * worker_thread.
 */
import os from 'node:os';
import * as ort from 'onnxruntime-node';
import { buildLlamaGraph, DEFAULT_ATTENTION_KERNEL, keyCacheLayout, MASKED, type AttentionKernel } from '../models/llama/graph.js';
import type { LoadedModel } from '../models/types.js';
import { createSessionOnDevice, type DeviceRequest } from './device.js';
import { kvArray, SequenceCache, type KVArray, type KVDtype } from './kv-cache.js';

export { SequenceCache } from './kv-cache.js';

export interface LlamaSessionOptions {
  /** Execution provider request (runtime/device.ts). Default 'cpu'. */
  device?: DeviceRequest;
  /** intra-op threads (default: all cores). */
  threads?: number;
  /** 'last' (default) for generation, 'all' for perplexity. */
  logits?: 'last' | 'all';
  /** Weights, activations and KV cache precision (default float32; logits are float32). */
  dtype?: KVDtype;
  /** Attention kernel of the graph (models/llama/graph.ts; default from SLICESERVE_ATTENTION or 'primitives'). */
  attention?: AttentionKernel;
  logger?: { info(msg: string): void; warn(msg: string): void };
}

/** One sequence's share of a step: its cache and the tokens to append. */
export interface StepInput {
  cache: SequenceCache;
  tokens: readonly number[];
}

/** Spare positions (and rounding) of the resident past buffers: re-laid at most every this many steps. */
const RESIDENT_HEADROOM = 16;

export class LlamaSession {
  /** Outputs fetched each step: the logits and this step's KV entries (not the whole present.*). */
  private readonly fetches: string[];
  /**
   * The batch's past_key_values, one buffer per (layer, key|value) (slot 2l = key, 2l+1 =
   * value), laid out [rows, kv_heads, capacity, head_dim] (keys [rows, kv_heads, head_dim,
   * capacity] for the 'primitives' kernel: graph.ts `keyCacheLayout`) and kept between steps (see
   * {@link LlamaSession.step}). Stale entries beyond a sequence's length are always masked.
   */
  private readonly pastPool: KVArray[] = [];
  /** Which sequence each row of the pooled past buffers holds, and their capacity (positions). */
  private resident?: { capacity: number; rows: (SequenceCache | null)[] };

  private constructor(
    readonly model: LoadedModel,
    private readonly session: ort.InferenceSession,
    readonly device: 'cpu' | 'cuda' | 'webgpu',
    readonly logitsMode: 'last' | 'all',
    readonly dtype: KVDtype,
    /** Keys are fed [batch, kv_heads, head_dim, past] (graph.ts `keyCacheLayout`). */
    private readonly transposedKeys: boolean,
  ) {
    const L = model.config.num_hidden_layers;
    this.fetches = ['logits', ...Array.from({ length: L }, (_, l) => [`step_key_values.${l}.key`, `step_key_values.${l}.value`]).flat()];
  }

  /**
   * Builds the graph for `model` and opens an onnxruntime session on the requested device.
   * A cache from {@link LlamaSession.newCache} must only be used with the session that made it.
   * @throws DeviceUnavailableError (runtime/device.ts) when an explicit device cannot start.
   */
  static async create(model: LoadedModel, options: LlamaSessionOptions = {}): Promise<LlamaSession> {
    const logits = options.logits ?? 'last';
    const dtype = options.dtype ?? 'float32';
    const attention = options.attention ?? DEFAULT_ATTENTION_KERNEL;
    const built = buildLlamaGraph(model, { logits, dtype, presentOutputs: false, attention });
    const { session, device } = await createSessionOnDevice(built.model, {
      device: options.device ?? 'cpu',
      logger: options.logger,
      sessionOptions: {
        graphOptimizationLevel: 'all',
        intraOpNumThreads: options.threads ?? os.availableParallelism(),
        interOpNumThreads: 1,
        externalData: [{ path: built.externalDataPath, data: built.externalData }],
      } as ort.InferenceSession.SessionOptions,
    });
    return new LlamaSession(model, session, device, logits, dtype, keyCacheLayout(attention) === 'transposed');
  }

  get maxContext(): number {
    return this.model.config.max_position_embeddings;
  }

  get vocabSize(): number {
    return this.model.weights.get('lm_head.weight')?.shape[0] ?? this.model.config.vocab_size;
  }

  /** A new, empty KV cache for one sequence. */
  newCache(): SequenceCache {
    const c = this.model.config;
    return new SequenceCache(c.num_hidden_layers, c.num_key_value_heads, c.head_dim, this.maxContext, this.dtype);
  }

  /**
   * One forward step over a batch: feeds each sequence's new tokens (>= 1, counts may differ),
   * appends their keys/values to its cache and returns, per sequence, the logits of its LAST
   * new token (Float32Array [vocab]). In 'all' mode it returns every new position instead,
   * concatenated ([tokens.length * vocab]).
   *
   * The batch's past_key_values live in resident host buffers [rows, kv_heads, capacity,
   * head_dim] (keys transposed for the 'primitives' kernel), one row per sequence, entries from position 0 (right-padded, the padding masked
   * by attention_bias). A sequence that stays in the batch keeps its row and only its new
   * entries are written each step; rows are copied only for sequences that join the batch or
   * move to fill a hole, and everything is re-laid only when the capacity is exceeded. New
   * tokens are left-padded to the longest in the batch.
   * @throws RangeError when a sequence would exceed the context length, Error on empty input.
   */
  async step(inputs: readonly StepInput[]): Promise<Float32Array[]> {
    if (inputs.length === 0) throw new Error('step: empty batch');
    const c = this.model.config;
    const B = inputs.length;
    const S = Math.max(...inputs.map((i) => i.tokens.length));
    for (const inp of inputs) {
      if (inp.tokens.length === 0) throw new Error('step: a sequence has no new tokens');
      inp.cache.reserve(inp.tokens.length);
    }
    const maxLen = Math.max(...inputs.map((i) => i.cache.length));
    // rowOf[b]: the batch row of input b. A batch of fresh sequences (prefill) needs no past.
    const rowOf = maxLen === 0 ? inputs.map((_, b) => b) : this.placeRows(inputs, maxLen + S);
    const P = maxLen === 0 ? 0 : this.resident!.capacity;
    const T = P + S;
    const ids = new BigInt64Array(B * S);
    const pos = new BigInt64Array(B * S);
    const bias = new Float32Array(B * S * T).fill(MASKED);
    inputs.forEach((inp, b) => {
      const r = rowOf[b];
      const s = inp.tokens.length;
      const len = inp.cache.length;
      const padQ = S - s;
      for (let i = 0; i < s; i++) {
        ids[r * S + padQ + i] = BigInt(inp.tokens[i]);
        pos[r * S + padQ + i] = BigInt(len + i);
      }
      for (let i = padQ; i < S; i++) {
        const rowOff = (r * S + i) * T;
        bias.fill(0, rowOff, rowOff + len);
        bias.fill(0, rowOff + P + padQ, rowOff + P + i + 1);
      }
    });
    const feeds: Record<string, ort.Tensor> = {
      input_ids: new ort.Tensor('int64', ids, [B, S]),
      position_ids: new ort.Tensor('int64', pos, [B, S]),
      attention_bias: new ort.Tensor('float32', bias, [B, S, T]),
    };
    const KV = c.num_key_value_heads;
    const hd = c.head_dim;
    const L = c.num_hidden_layers;
    for (let slot = 0; slot < 2 * L; slot++) {
      const past = P === 0 ? kvArray(this.dtype, 0) : this.pastPool[slot].subarray(0, B * KV * P * hd);
      const transposed = this.transposedKeys && !(slot & 1);
      feeds[`past_key_values.${slot >> 1}.${slot & 1 ? 'value' : 'key'}`] = new ort.Tensor(this.dtype, past, transposed ? [B, KV, hd, P] : [B, KV, P, hd]);
    }
    const out = await this.session.run(feeds, this.fetches);
    for (let slot = 0; slot < 2 * L; slot++) {
      const l = slot >> 1;
      const kind = slot & 1 ? 'value' : 'key';
      const fresh = out[`step_key_values.${l}.${kind}`].data as KVArray;
      inputs.forEach((inp, b) => inp.cache.readPresent(l, kind, fresh, rowOf[b], S, inp.tokens.length));
    }
    inputs.forEach((inp) => inp.cache.commit(inp.tokens.length));
    // Keep the resident rows in sync: write this step's entries where the rows live.
    if (P > 0) {
      for (let slot = 0; slot < 2 * L; slot++) {
        const l = slot >> 1;
        const kind = slot & 1 ? 'value' : 'key';
        const transposed = this.transposedKeys && kind === 'key';
        inputs.forEach((inp, b) => inp.cache.writeEntries(l, kind, this.pastPool[slot], rowOf[b], P, inp.cache.length - inp.tokens.length, inp.tokens.length, transposed));
      }
    }
    const logits = out.logits.data as Float32Array;
    const V = out.logits.dims[2];
    if (this.logitsMode === 'last') return inputs.map((_, b) => logits.slice(rowOf[b] * V, (rowOf[b] + 1) * V));
    return inputs.map((inp, b) => logits.slice((rowOf[b] * S + S - inp.tokens.length) * V, (rowOf[b] + 1) * S * V));
  }

  /**
   * Assigns every input a row of the resident past buffers, rows 0..B-1, and makes sure each
   * row holds its sequence's entries: a sequence already resident in a row < B stays; the
   * others move into free rows (a row copy) or are copied in from their cache. When the
   * capacity cannot hold `need` positions, everything is re-laid at a larger capacity.
   * @returns the row of each input.
   */
  private placeRows(inputs: readonly StepInput[], need: number): number[] {
    const c = this.model.config;
    const L = c.num_hidden_layers;
    const B = inputs.length;
    const rowSize = c.num_key_value_heads * c.head_dim;
    let resident = this.resident;
    if (!resident || resident.capacity < need) {
      const capacity = Math.min(this.maxContext, Math.ceil((need + RESIDENT_HEADROOM) / RESIDENT_HEADROOM) * RESIDENT_HEADROOM);
      resident = this.resident = { capacity, rows: [] };
      this.reservePool(B * rowSize * capacity, false);
    } else {
      this.reservePool(Math.max(B, resident.rows.length) * rowSize * resident.capacity, true);
    }
    const P = resident.capacity;
    const current = new Map<SequenceCache, number>();
    resident.rows.forEach((cache, r) => cache && current.set(cache, r));
    const rowOf = new Array<number>(B).fill(-1);
    const taken = new Array<boolean>(B).fill(false);
    inputs.forEach((inp, b) => {
      const r = current.get(inp.cache);
      if (r !== undefined && r < B && !taken[r]) {
        rowOf[b] = r;
        taken[r] = true;
      }
    });
    let free = 0;
    inputs.forEach((inp, b) => {
      if (rowOf[b] >= 0) return;
      while (taken[free]) free++;
      const r = free;
      taken[r] = true;
      rowOf[b] = r;
      const from = current.get(inp.cache);
      const block = rowSize * P;
      for (let slot = 0; slot < 2 * L; slot++) {
        const buf = this.pastPool[slot];
        if (from !== undefined) buf.copyWithin(r * block, from * block, (from + 1) * block);
        else inp.cache.writeEntries(slot >> 1, slot & 1 ? 'value' : 'key', buf, r, P, 0, inp.cache.length, this.transposedKeys && !(slot & 1));
      }
    });
    const rows = new Array<SequenceCache | null>(B).fill(null);
    inputs.forEach((inp, b) => (rows[rowOf[b]] = inp.cache));
    resident.rows = rows;
    return rowOf;
  }

  /** Grows every pooled past buffer to `length` elements, keeping their contents if asked. */
  private reservePool(length: number, keep: boolean): void {
    for (let slot = 0; slot < 2 * this.model.config.num_hidden_layers; slot++) {
      const old = this.pastPool[slot];
      if (old && old.length >= length) continue;
      const next = kvArray(this.dtype, Math.max(length, Math.ceil((old?.length ?? 0) * 1.5)));
      if (old && keep) (next as Float32Array).set(old as Float32Array);
      this.pastPool[slot] = next;
    }
  }

  /** Frees the onnxruntime session. */
  async release(): Promise<void> {
    await this.session.release();
  }
}
