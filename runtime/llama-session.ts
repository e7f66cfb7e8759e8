/**
 * An onnxruntime-node session over the Llama graph (models/llama/graph.ts) plus the batching
 * logic of one forward step: sequences with different cache lengths and different numbers of
 * new tokens run together, left-padded, with an additive attention bias that hides the
 * padding, so a sequence's logits do not depend on what it is batched with.
 *
 * `session.run()` blocks the calling thread (RUNTIME-NOTES.md): servers call this from a
 * worker_thread.
 */
import os from 'node:os';
import * as ort from 'onnxruntime-node';
import { buildLlamaGraph, MASKED } from '../models/llama/graph.js';
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
  logger?: { info(msg: string): void; warn(msg: string): void };
}

/** One sequence's share of a step: its cache and the tokens to append. */
export interface StepInput {
  cache: SequenceCache;
  tokens: readonly number[];
}

export class LlamaSession {
  /** Outputs fetched each step: the logits and this step's KV entries (not the whole present.*). */
  private readonly fetches: string[];
  /**
   * Reused host buffers for the batch's past_key_values inputs, one per (layer, key|value),
   * grown geometrically: a fresh allocation per step and layer cost ~9 % of a worker's time in
   * garbage collection. Stale entries beyond a sequence's cache are always masked.
   */
  private readonly pastPool: KVArray[] = [];

  private constructor(
    readonly model: LoadedModel,
    private readonly session: ort.InferenceSession,
    readonly device: 'cpu' | 'cuda' | 'webgpu',
    readonly logitsMode: 'last' | 'all',
    readonly dtype: KVDtype,
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
    const built = buildLlamaGraph(model, { logits, dtype });
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
    return new LlamaSession(model, session, device, logits, dtype);
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
   * @throws RangeError when a sequence would exceed the context length, Error on empty input.
   */
  async step(inputs: readonly StepInput[]): Promise<Float32Array[]> {
    if (inputs.length === 0) throw new Error('step: empty batch');
    const c = this.model.config;
    const B = inputs.length;
    const S = Math.max(...inputs.map((i) => i.tokens.length));
    const P = Math.max(...inputs.map((i) => i.cache.length));
    const T = P + S;
    for (const inp of inputs) {
      if (inp.tokens.length === 0) throw new Error('step: a sequence has no new tokens');
      inp.cache.reserve(inp.tokens.length);
    }
    const ids = new BigInt64Array(B * S);
    const pos = new BigInt64Array(B * S);
    const bias = new Float32Array(B * S * T).fill(MASKED);
    inputs.forEach((inp, b) => {
      const s = inp.tokens.length;
      const len = inp.cache.length;
      const padQ = S - s;
      for (let i = 0; i < s; i++) {
        ids[b * S + padQ + i] = BigInt(inp.tokens[i]);
        pos[b * S + padQ + i] = BigInt(len + i);
      }
      for (let i = padQ; i < S; i++) {
        const rowOff = (b * S + i) * T;
        for (let j = P - len; j < P; j++) bias[rowOff + j] = 0;
        for (let j = P + padQ; j <= P + i; j++) bias[rowOff + j] = 0;
      }
    });
    const feeds: Record<string, ort.Tensor> = {
      input_ids: new ort.Tensor('int64', ids, [B, S]),
      position_ids: new ort.Tensor('int64', pos, [B, S]),
      attention_bias: new ort.Tensor('float32', bias, [B, S, T]),
    };
    const KV = c.num_key_value_heads;
    const hd = c.head_dim;
    for (let l = 0; l < c.num_hidden_layers; l++) {
      for (const kind of ['key', 'value'] as const) {
        const past = this.pastBuffer(2 * l + (kind === 'key' ? 0 : 1), B * KV * P * hd);
        inputs.forEach((inp, b) => inp.cache.writePast(l, kind, past, b, P));
        feeds[`past_key_values.${l}.${kind}`] = new ort.Tensor(this.dtype, past, [B, KV, P, hd]);
      }
    }
    const out = await this.session.run(feeds, this.fetches);
    for (let l = 0; l < c.num_hidden_layers; l++) {
      for (const kind of ['key', 'value'] as const) {
        const fresh = out[`step_key_values.${l}.${kind}`].data as KVArray;
        inputs.forEach((inp, b) => inp.cache.readPresent(l, kind, fresh, b, S, inp.tokens.length));
      }
    }
    inputs.forEach((inp) => inp.cache.commit(inp.tokens.length));
    const logits = out.logits.data as Float32Array;
    const V = out.logits.dims[2];
    if (this.logitsMode === 'last') return inputs.map((_, b) => logits.slice(b * V, (b + 1) * V));
    return inputs.map((inp, b) => logits.slice((b * S + S - inp.tokens.length) * V, (b + 1) * S * V));
  }

  /** A view of `length` elements of pooled buffer `slot`. */
  private pastBuffer(slot: number, length: number): KVArray {
    let buf = this.pastPool[slot];
    if (!buf || buf.length < length) {
      buf = kvArray(this.dtype, Math.max(length, Math.ceil((buf?.length ?? 0) * 1.5)));
      this.pastPool[slot] = buf;
    }
    return buf.subarray(0, length);
  }

  /** Frees the onnxruntime session. */
  async release(): Promise<void> {
    await this.session.release();
  }
}
