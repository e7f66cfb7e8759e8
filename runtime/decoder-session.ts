/**
 * An onnxruntime-node session over a model's decoder graph (models/onnx/decoder-graph.ts), for
 * every registered family, plus the batching
 * logic of one forward step: sequences with different cache lengths and different numbers of
 * new tokens run together (past entries right-padded in resident per-row buffers, new tokens
 * left-padded), with an additive attention bias that hides every padding position, so a
 * sequence's logits do not depend on what it is batched with.
 *
 * On the host path a sequence's newest KV entries live only in its resident row while it stays
 * in the batch (each step's `step_key_values` are written there once); its SequenceCache gets
 * them when the sequence leaves its row, and a finished sequence's cache is released instead.
 *
 * On WebGPU with the 'primitives' attention kernel the batch's past stays on the device between
 * decode steps (docs/gpu.md, "KV cache on the device"): the graph's present.* outputs are kept
 * as GPU buffers and fed back as the next step's past_key_values.* while the batch and its rows
 * do not change and every sequence adds one token; otherwise the past is re-laid from the host
 * caches and uploaded. In that mode the host SequenceCaches receive every step's entries and
 * stay complete.
 *
 * `session.run()` blocks the calling thread (RUNTIME-NOTES.md): servers call this from a
 * worker_thread.
 */
import os from 'node:os';
import * as ort from 'onnxruntime-node';
import { defaultAttentionKernel, keyCacheLayout, MASKED, SLIDING_BIAS_INPUT, type AttentionKernel } from '../models/onnx/contract.js';
import { buildDecoderGraph, usesSlidingWindow } from '../models/onnx/decoder-graph.js';
import { hostStepPositions, slidingWindowBias, validStepPositions, type StepPositions } from './attention-mask.js';
import { contextLength } from '../models/config.js';
import type { LoadedModel } from '../models/types.js';
import { appendValid, attentionBiasFromValid, freshValid, planDevicePast, type DevicePastState, type DeviceRebuildReason } from './device-kv.js';
import { createSessionOnDevice, type Device, type DeviceRequest } from './device.js';
import { withGraphFiles } from './graph-files.js';
import { kvArray, SequenceCache, writeStepEntries, type KVArray, type KVDtype } from './kv-cache.js';

export { SequenceCache } from './kv-cache.js';

/**
 * The session options every decoder session opens with (and profile-step's bare sessions, so
 * that it times what serve runs): all graph optimizations, one inter-op thread, and
 * onnxruntime's `session.force_spinning_stop` (threads spin during a run, stop at its end: with
 * pool threads spinning between runs, a decode step's bookkeeping and the main thread's token
 * writes waited for a core; measured on 2 cores, bench-110m int8 batch 1, 0.86 -> 0.50 ms
 * between two runs). `spinning: false` also turns intra-op spinning off.
 * @param threads intra-op threads (default: all cores)
 */
export function decoderSessionOptions(threads?: number, spinning?: boolean): ort.InferenceSession.SessionOptions {
  return {
    graphOptimizationLevel: 'all',
    intraOpNumThreads: threads ?? os.availableParallelism(),
    interOpNumThreads: 1,
    extra: { session: { force_spinning_stop: '1', ...(spinning === false ? { intra_op: { allow_spinning: '0' } } : {}) } },
  } as ort.InferenceSession.SessionOptions;
}

export interface DecoderSessionOptions {
  /** Execution provider request (runtime/device.ts). Default 'cpu'. */
  device?: DeviceRequest;
  /** intra-op threads (default: all cores). */
  threads?: number;
  /**
   * Whether idle intra-op threads spin-wait for work during a run (onnxruntime's default, true).
   * Either way they stop spinning when a run ends (`session.force_spinning_stop`), so the cores
   * are free between decode steps for the JavaScript around them (the worker's step
   * bookkeeping, the main thread writing the tokens out). Turn it off when several sessions in
   * one process take turns on the same cores step by step, e.g. when timing models against
   * each other.
   */
  spinning?: boolean;
  /** 'last' (default) for generation, 'all' for perplexity. */
  logits?: 'last' | 'all';
  /** Weights, activations and KV cache precision (default float32; logits are float32). */
  dtype?: KVDtype;
  /** Attention kernel of the graph (models/onnx/contract.ts; default from SLICESERVE_ATTENTION or 'primitives'). */
  attention?: AttentionKernel;
  /**
   * Keep the batch's KV cache in the session's present.* outputs between decode steps instead of
   * uploading the past every step. Default: on for webgpu with the 'primitives' kernel (the
   * outputs stay in GPU buffers) unless SLICESERVE_WEBGPU_KV=host, off otherwise. Forcing it on for cpu runs the same
   * bookkeeping with CPU tensors (tests); forcing it off on webgpu measures the host path.
   */
  deviceKV?: boolean;
  logger?: { info(msg: string): void; warn(msg: string): void };
}

/** One sequence's share of a step: its cache and the tokens to append. */
export interface StepInput {
  cache: SequenceCache;
  tokens: readonly number[];
}

/**
 * Rounding of the resident past buffers' capacity (positions): a growing batch is re-laid at
 * most once per this many positions. Attention reads every position of the past, masked ones
 * too, so the capacity is the smallest multiple that holds the step (no extra headroom: it
 * would not make re-lays rarer, only every step slower). On bench-110m at batch 16 a re-lay
 * costs ~12 ms and a masked position ~0.016 ms per step: 32 costs less than 16 or 64.
 */
const RESIDENT_ROUNDING = 32;
/**
 * Unused positions beyond the rounding at which the resident past buffers are re-laid
 * smaller: a capacity left over from a long sequence that has left the batch would slow every
 * later step.
 */
const RESIDENT_SHRINK_SLACK = RESIDENT_ROUNDING;
/**
 * Masked positions a device-held past may carry beyond its longest sequence before it is
 * re-laid from the host (planDevicePast). A re-laid past has at most 2 * RESIDENT_ROUNDING + S
 * of them and decode steps do not add any, so this bound is a safety net.
 */
const DEVICE_PAST_MAX_PADDING = 4 * RESIDENT_ROUNDING + 64;

/** Steps of a device-KV session, by how their past was fed. */
export interface DeviceKVStats {
  /** Whether present.* are kept and fed back (see DecoderSessionOptions.deviceKV). */
  enabled: boolean;
  /** Steps that fed the previous step's present.* back (no past upload). */
  reused: number;
  /** Steps that re-laid the past from the host caches, by reason. */
  uploaded: Partial<Record<DeviceRebuildReason, number>>;
  /** Where the held past lives ('gpu-buffer' on webgpu, 'cpu' when forced on cpu); null when none is held. */
  pastLocation: ort.Tensor.DataLocation | null;
}

/** The past held in output tensors between steps (device-KV mode). */
interface HeldPast extends DevicePastState<SequenceCache> {
  /** past_key_values.* feed name -> the previous step's present tensor. */
  tensors: Record<string, ort.Tensor>;
}

export class DecoderSession {
  /**
   * Outputs fetched by {@link step} and by {@link stepGreedy}: the logits or only the greedy
   * tokens, plus this step's KV entries (not the whole present.*).
   */
  private readonly fetches: Record<'logits' | 'greedy', string[]>;
  /**
   * The batch's past_key_values, one buffer per (layer, key|value) (slot 2l = key, 2l+1 =
   * value), laid out [rows, kv_heads, capacity, head_dim] (keys [rows, kv_heads, head_dim,
   * capacity] for the 'primitives' kernel: models/onnx/contract.ts `keyCacheLayout`) and kept between steps (see
   * {@link DecoderSession.step}). Stale entries beyond a sequence's length are always masked.
   */
  private readonly pastPool: KVArray[] = [];
  /** Which sequence each row of the pooled past buffers holds, and their capacity (positions). */
  private resident?: { capacity: number; rows: (SequenceCache | null)[] };
  /** Device-KV mode: the previous step's present.* and the rows they hold. */
  private held?: HeldPast;
  /** Device-KV mode: a step reused the held past since the host rows were last written. */
  private hostRowsStale = false;
  private readonly kvStats: DeviceKVStats;
  /** Whether the graph takes sliding_attention_bias (some layer has a sliding window). */
  private readonly sliding: boolean;

  private constructor(
    readonly model: LoadedModel,
    private readonly session: ort.InferenceSession,
    readonly device: 'cpu' | 'cuda' | 'webgpu',
    readonly logitsMode: 'last' | 'all',
    readonly dtype: KVDtype,
    /** Keys are fed [batch, kv_heads, head_dim, past] (models/onnx/contract.ts `keyCacheLayout`). */
    private readonly transposedKeys: boolean,
    /** present.* are fetched and fed back as the next past when the batch allows (device KV). */
    private readonly deviceKV: boolean,
  ) {
    const L = model.config.num_hidden_layers;
    const stepKV = Array.from({ length: L }, (_, l) => [`step_key_values.${l}.key`, `step_key_values.${l}.value`]).flat();
    const greedy = logitsMode === 'last' ? ['greedy_token'] : [];
    if (deviceKV) {
      // The full list every step: an output once fetched with preferredOutputLocation stays bound.
      const all = ['logits', ...greedy, ...stepKV, ...presentNames(L)];
      this.fetches = { logits: all, greedy: all };
    } else {
      this.fetches = { logits: ['logits', ...stepKV], greedy: [...greedy, ...stepKV] };
    }
    this.kvStats = { enabled: deviceKV, reused: 0, uploaded: {}, pastLocation: null };
    this.sliding = usesSlidingWindow(model.config);
  }

  /**
   * Builds the graph for `model` and opens an onnxruntime session on the requested device.
   * A cache from {@link DecoderSession.newCache} must only be used with the session that made it.
   * @throws DeviceUnavailableError (runtime/device.ts) when an explicit device cannot start.
   */
  static async create(model: LoadedModel, options: DecoderSessionOptions = {}): Promise<DecoderSession> {
    const logits = options.logits ?? 'last';
    const dtype = options.dtype ?? 'float32';
    const attention = options.attention ?? defaultAttentionKernel();
    const request = options.device ?? 'cpu';
    const wantsDeviceKV = (d: Device) => options.deviceKV ?? (d === 'webgpu' && attention === 'primitives' && process.env.SLICESERVE_WEBGPU_KV !== 'host');
    // The weights stream into a temporary weights.bin that onnxruntime reads by path
    // (runtime/graph-files.ts): no JavaScript copy of them outlives the build.
    const open = (device: DeviceRequest, presentOutputs: boolean) => withGraphFiles(
      (externalDataFile) => buildDecoderGraph(model, { logits, dtype, presentOutputs, attention, externalDataFile }),
      ({ modelPath }) => {
        const L = model.config.num_hidden_layers;
        return createSessionOnDevice(modelPath, {
          device,
          logger: options.logger,
          sessionOptions: (d) =>
            ({
              ...decoderSessionOptions(options.threads, options.spinning),
              // present.* stay in GPU buffers; logits and step_key_values.* come back to the host.
              ...(presentOutputs && d === 'webgpu'
                ? { preferredOutputLocation: Object.fromEntries([...presentNames(L).map((n) => [n, 'gpu-buffer']), ['logits', 'cpu'], ...(logits === 'last' ? [['greedy_token', 'cpu']] : []), ...Array.from({ length: L }, (_, l) => [[`step_key_values.${l}.key`, 'cpu'], [`step_key_values.${l}.value`, 'cpu']]).flat()]) }
                : {}),
            }) as ort.InferenceSession.SessionOptions,
        });
      },
    );
    // The graph is built for the device asked for; `auto` builds the host-KV graph first and
    // rebuilds it with present outputs only if it lands on a device that wants them.
    const guess: Device = request === 'auto' ? 'cpu' : request;
    let { session, device } = await open(request, wantsDeviceKV(guess));
    if (wantsDeviceKV(device) !== wantsDeviceKV(guess)) {
      await session.release();
      ({ session, device } = await open(device, wantsDeviceKV(device)));
    }
    return new DecoderSession(model, session, device, logits, dtype, keyCacheLayout(attention) === 'transposed', wantsDeviceKV(device));
  }

  /** How the past was fed in each step so far (device-KV mode; counts stay 0 otherwise). */
  get deviceKVStats(): DeviceKVStats {
    const held = this.held && Object.values(this.held.tensors)[0];
    return { enabled: this.kvStats.enabled, reused: this.kvStats.reused, uploaded: { ...this.kvStats.uploaded }, pastLocation: held ? held.location : null };
  }

  /** Positions of the resident past buffers (the `past` dimension fed on the host path); 0 before any. */
  get pastCapacity(): number {
    return this.resident?.capacity ?? 0;
  }

  get maxContext(): number {
    return contextLength(this.model.config);
  }

  get vocabSize(): number {
    return this.model.config.vocab_size;
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
    const { out, rowOf, S } = await this.forward(inputs, 'logits');
    return this.splitLogits(out.logits, inputs, rowOf, S);
  }

  /**
   * {@link step} for a batch that only needs each sequence's greedy token: the argmax of its
   * last position's logits (lowest id on ties, as engine/sampler.ts `argmax`), computed in the
   * graph (`greedy_token`), so the [batch, vocab] logits are neither copied to JavaScript nor
   * scanned there (vLLM likewise samples on the device).
   * @returns one token id per input
   * @throws Error in 'all' logits mode, and as {@link step}
   */
  async stepGreedy(inputs: readonly StepInput[]): Promise<number[]> {
    if (this.logitsMode !== 'last') throw new Error("stepGreedy needs a session with logits: 'last'");
    const { out, rowOf } = await this.forward(inputs, 'greedy');
    const tokens = out.greedy_token.data as BigInt64Array;
    return inputs.map((_, b) => Number(tokens[rowOf[b]]));
  }

  /** One forward pass (see {@link step}); fetches the logits or only the greedy tokens. */
  private async forward(inputs: readonly StepInput[], want: 'logits' | 'greedy'): Promise<{ out: ort.InferenceSession.ReturnType; rowOf: number[]; S: number }> {
    if (inputs.length === 0) throw new Error('step: empty batch');
    const c = this.model.config;
    const B = inputs.length;
    const S = Math.max(...inputs.map((i) => i.tokens.length));
    for (const inp of inputs) {
      if (inp.tokens.length === 0) throw new Error('step: a sequence has no new tokens');
      inp.cache.checkRoom(inp.tokens.length);
    }
    if (this.deviceKV) return this.stepDeviceKV(inputs, S, want);
    const maxLen = Math.max(...inputs.map((i) => i.cache.length));
    // rowOf[b]: the batch row of input b. A batch of fresh sequences (prefill) needs no past,
    // except on webgpu, whose MatMul crashes on an empty past (a masked one is laid instead).
    const noPast = maxLen === 0 && this.device !== 'webgpu';
    // A step of several tokens per row with a past (the later chunks of a chunked prefill) gets
    // its past from the host caches in buffers of its own, and writes only the caches: placed in
    // the resident rows, it would evict the decoding sequences' rows, which the next decode step
    // would then copy back in whole.
    const detached = !noPast && S > 1 && this.device !== 'webgpu';
    if ((noPast || detached) && this.resident) {
      // These sequences write only their caches: a row of one of them must not go stale.
      const { rows, capacity } = this.resident;
      for (const inp of inputs) {
        const r = rows.indexOf(inp.cache);
        if (r < 0) continue;
        if (detached) this.flushRow(inp.cache, r, capacity);
        rows[r] = null;
      }
    }
    const rowOf = noPast || detached ? inputs.map((_, b) => b) : this.placeRows(inputs, maxLen + S);
    const P = noPast ? 0 : detached ? maxLen : this.resident!.capacity;
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
    this.addSlidingBias(feeds, bias, B, S, T, () => {
      const lengths = new Array<number>(B);
      const counts = new Array<number>(B);
      inputs.forEach((inp, b) => {
        lengths[rowOf[b]] = inp.cache.length;
        counts[rowOf[b]] = inp.tokens.length;
      });
      return hostStepPositions(lengths, counts, P, S);
    });
    const KV = c.num_key_value_heads;
    const hd = c.head_dim;
    const L = c.num_hidden_layers;
    for (let slot = 0; slot < 2 * L; slot++) {
      const transposed = this.transposedKeys && !(slot & 1);
      let past: KVArray;
      if (P === 0) past = kvArray(this.dtype, 0);
      else if (!detached) past = this.pastPool[slot].subarray(0, B * KV * P * hd);
      else {
        past = kvArray(this.dtype, B * KV * P * hd); // positions past a row's length stay masked
        inputs.forEach((inp, b) => inp.cache.writeEntries(slot >> 1, slot & 1 ? 'value' : 'key', past, b, P, 0, inp.cache.length, transposed));
      }
      feeds[`past_key_values.${slot >> 1}.${slot & 1 ? 'value' : 'key'}`] = new ort.Tensor(this.dtype, past, transposed ? [B, KV, hd, P] : [B, KV, P, hd]);
    }
    const out = await this.session.run(feeds, this.fetches[want]);
    // Keep the resident rows in sync (when the step used them): write this step's entries where the rows live.
    this.appendStep(out, inputs, rowOf, S, noPast || detached ? null : P);
    return { out, rowOf, S };
  }

  /**
   * Appends this step's entries (`step_key_values.*` [B, kv_heads, S, head_dim], row rowOf[b]
   * for input b). Without resident rows (`residentPast` null: a prefill of fresh sequences)
   * they go to each input's host cache. With resident rows (capacity `residentPast`, the
   * kernel's key layout) they are written into the rows only, which then hold the sequence's
   * newest entries until it leaves its row ({@link flushRow}); in device-KV mode the host
   * caches stay complete and get them too.
   */
  private appendStep(out: ort.InferenceSession.ReturnType, inputs: readonly StepInput[], rowOf: readonly number[], S: number, residentPast: number | null): void {
    const L = this.model.config.num_hidden_layers;
    const toCaches = residentPast === null || this.deviceKV;
    if (toCaches) {
      for (const inp of inputs) inp.cache.reserve(inp.tokens.length);
      for (let slot = 0; slot < 2 * L; slot++) {
        const l = slot >> 1;
        const kind = slot & 1 ? 'value' : 'key';
        const fresh = out[`step_key_values.${l}.${kind}`].data as KVArray;
        inputs.forEach((inp, b) => inp.cache.readPresent(l, kind, fresh, rowOf[b], S, inp.tokens.length));
      }
    }
    if (residentPast !== null) {
      const c = this.model.config;
      for (let slot = 0; slot < 2 * L; slot++) {
        const fresh = out[stepName(slot)].data as KVArray;
        const transposed = this.transposedKeys && !(slot & 1);
        inputs.forEach((inp, b) => writeStepEntries(this.pastPool[slot], fresh, rowOf[b], residentPast, S, inp.cache.length, inp.tokens.length, c.num_key_value_heads, c.head_dim, transposed));
      }
    }
    inputs.forEach((inp) => inp.cache.commit(inp.tokens.length, toCaches));
  }

  /**
   * Writes the entries of `cache` that live only in resident row `r` (capacity `past`) back
   * into the cache, so that the row can be given up.
   */
  private flushRow(cache: SequenceCache, r: number, past: number): void {
    if (cache.hostLength >= cache.length) return;
    cache.reserve(0);
    for (let slot = 0; slot < 2 * this.model.config.num_hidden_layers; slot++) {
      cache.readRow(slot >> 1, slot & 1 ? 'value' : 'key', this.pastPool[slot], r, past, this.transposedKeys && !(slot & 1));
    }
    cache.markStored();
  }

  /** Each input's logits from the batch's [B, S | 1, vocab] logits (see {@link step}). */
  private splitLogits(t: ort.Tensor, inputs: readonly StepInput[], rowOf: readonly number[], S: number): Float32Array[] {
    const logits = t.data as Float32Array;
    const V = t.dims[2];
    // Views, not copies: the output is this step's own buffer (a copy of 2 MB per batch-16 step
    // of a 32k vocabulary showed up as garbage-collection time).
    if (this.logitsMode === 'last') return inputs.map((_, b) => logits.subarray(rowOf[b] * V, (rowOf[b] + 1) * V));
    return inputs.map((inp, b) => logits.subarray((rowOf[b] * S + S - inp.tokens.length) * V, (rowOf[b] + 1) * S * V));
  }

  /**
   * {@link step} with the past held in the previous step's present.* tensors (GPU buffers on
   * webgpu). A decode step over the same rows feeds them back; any other step re-lays the past
   * from the host caches ({@link placeRows}, capacity > 0, so an empty past never reaches the
   * device) and uploads it. Either way this step's present.* become the held past, whose rows
   * carry the valid-position ranges that build attention_bias (runtime/device-kv.ts). The
   * host caches are appended from step_key_values.* as on every device. Tensor data of the
   * held past is never read on the host (a gpu-buffer read aborts the process); tensors are
   * disposed once replaced and in {@link release}.
   */
  private async stepDeviceKV(inputs: readonly StepInput[], S: number, want: 'logits' | 'greedy'): Promise<{ out: ort.InferenceSession.ReturnType; rowOf: number[]; S: number }> {
    const c = this.model.config;
    const KV = c.num_key_value_heads;
    const hd = c.head_dim;
    const L = c.num_hidden_layers;
    const B = inputs.length;
    const plan = planDevicePast(
      this.held,
      inputs.map((i) => ({ key: i.cache, length: i.cache.length, newTokens: i.tokens.length })),
      DEVICE_PAST_MAX_PADDING,
    );
    let rowOf: number[];
    let P: number;
    let valid: DevicePastState<SequenceCache>['valid'];
    let rows: SequenceCache[];
    const feeds: Record<string, ort.Tensor> = {};
    if (plan.reuse) {
      const held = this.held!;
      ({ rowOf } = plan);
      ({ past: P, valid, rows } = held as HeldPast & { rows: SequenceCache[] });
      Object.assign(feeds, held.tensors);
      this.kvStats.reused++;
      this.hostRowsStale = true;
    } else {
      this.dropHeld();
      // The host rows are stale after reused steps (only the caches were appended): re-lay all.
      if (this.hostRowsStale) this.resident = undefined;
      this.hostRowsStale = false;
      rowOf = this.placeRows(inputs, Math.max(...inputs.map((i) => i.cache.length)) + S);
      P = this.resident!.capacity;
      rows = new Array<SequenceCache>(B);
      inputs.forEach((inp, b) => (rows[rowOf[b]] = inp.cache));
      valid = freshValid(rows.map((cache) => cache.length));
      for (let slot = 0; slot < 2 * L; slot++) {
        const transposed = this.transposedKeys && !(slot & 1);
        feeds[pastName(slot)] = new ort.Tensor(this.dtype, this.pastPool[slot].subarray(0, B * KV * P * hd), transposed ? [B, KV, hd, P] : [B, KV, P, hd]);
      }
      this.kvStats.uploaded[plan.reason] = (this.kvStats.uploaded[plan.reason] ?? 0) + 1;
    }
    const counts = new Array<number>(B);
    const ids = new BigInt64Array(B * S);
    const pos = new BigInt64Array(B * S);
    inputs.forEach((inp, b) => {
      const r = rowOf[b];
      const s = inp.tokens.length;
      counts[r] = s;
      for (let i = 0; i < s; i++) {
        ids[r * S + S - s + i] = BigInt(inp.tokens[i]);
        pos[r * S + S - s + i] = BigInt(inp.cache.length + i);
      }
    });
    feeds.input_ids = new ort.Tensor('int64', ids, [B, S]);
    feeds.position_ids = new ort.Tensor('int64', pos, [B, S]);
    const bias = attentionBiasFromValid(valid, P, S, counts);
    feeds.attention_bias = new ort.Tensor('float32', bias, [B, S, P + S]);
    this.addSlidingBias(feeds, bias, B, S, P + S, () => validStepPositions(valid, P, counts, S));
    let out: ort.InferenceSession.ReturnType;
    try {
      out = await this.session.run(feeds, this.fetches[want]);
    } catch (err) {
      this.dropHeld();
      throw err;
    }
    // Keep the host rows in sync while no step has reused the held past (see above).
    this.appendStep(out, inputs, rowOf, S, plan.reuse ? null : P);
    const previous = plan.reuse ? this.held : undefined;
    const tensors: Record<string, ort.Tensor> = {};
    for (let slot = 0; slot < 2 * L; slot++) tensors[pastName(slot)] = out[presentName(slot)];
    this.held = { rows, past: P + S, valid: appendValid(valid, P, S, counts), tensors };
    if (previous) disposeAll(previous.tensors);
    return { out, rowOf, S };
  }

  /**
   * Adds `sliding_attention_bias` (the step's mask restricted to the sliding window,
   * runtime/attention-mask.ts) when the model has sliding-window layers.
   */
  private addSlidingBias(feeds: Record<string, ort.Tensor>, bias: Float32Array, B: number, S: number, T: number, positions: () => StepPositions): void {
    if (!this.sliding) return;
    feeds[SLIDING_BIAS_INPUT] = new ort.Tensor('float32', slidingWindowBias(bias, B, S, T, this.model.config.sliding_window!, positions()), [B, S, T]);
  }

  /** Disposes the held past (device-KV mode), if any. */
  private dropHeld(): void {
    if (this.held) disposeAll(this.held.tensors);
    this.held = undefined;
  }

  /**
   * Assigns every input a row of the resident past buffers, rows 0..B-1, and makes sure each
   * row holds its sequence's entries. A sequence already resident in a row < B stays; the
   * others move into free rows (a row copy) or are copied in from their cache. Sequences that
   * leave their rows first write their newest entries back into their caches ({@link flushRow}).
   * When the capacity cannot hold `need` positions, the rows are re-laid at a larger capacity;
   * when it exceeds what `need` calls for by more than RESIDENT_SHRINK_SLACK positions (the
   * longest sequence left), at a smaller one. A re-lay moves the kept rows within the buffers
   * (block moves, {@link relayoutRows}); in device-KV mode it copies every row from the caches.
   * @returns the row of each input.
   */
  private placeRows(inputs: readonly StepInput[], need: number): number[] {
    const c = this.model.config;
    const L = c.num_hidden_layers;
    const KV = c.num_key_value_heads;
    const hd = c.head_dim;
    const B = inputs.length;
    const rowSize = KV * hd;
    const old = this.resident;
    const wanted = residentCapacity(need, this.maxContext);
    const relay = !old || old.capacity < need || old.capacity - wanted > RESIDENT_SHRINK_SLACK;
    const current = new Map<SequenceCache, number>();
    if (old) {
      const inBatch = new Set(inputs.map((inp) => inp.cache));
      old.rows.forEach((cache, r) => {
        if (!cache) return;
        current.set(cache, r);
        // Leaving the batch, or (re-lay) about to be copied in from its cache.
        if (!inBatch.has(cache) || (relay && r >= B)) this.flushRow(cache, r, old.capacity);
      });
    }
    const rowOf = new Array<number>(B).fill(-1);
    const taken = new Array<boolean>(B).fill(false);
    inputs.forEach((inp, b) => {
      const r = current.get(inp.cache);
      if (r !== undefined && r < B && !taken[r]) {
        rowOf[b] = r;
        taken[r] = true;
      }
    });
    let P: number;
    if (!relay) {
      P = old.capacity;
      this.reservePool(Math.max(B, old.rows.length) * rowSize * P, true);
    } else {
      P = wanted;
      const kept = inputs.flatMap((inp, b) => (rowOf[b] >= 0 ? [{ row: rowOf[b], length: inp.cache.length }] : []));
      if (old && !this.deviceKV && kept.length > 0) {
        this.reservePool(Math.max(B * rowSize * P, old.rows.length * rowSize * old.capacity), true);
        for (let slot = 0; slot < 2 * L; slot++) relayoutRows(this.pastPool[slot], kept, old.capacity, P, KV, hd, this.transposedKeys && !(slot & 1));
      } else {
        // Device-KV mode (the host caches are complete) or no row to keep: all from the caches.
        this.reservePool(B * rowSize * P, false);
        rowOf.fill(-1);
        taken.fill(false);
      }
    }
    let free = 0;
    inputs.forEach((inp, b) => {
      if (rowOf[b] >= 0) return;
      while (taken[free]) free++;
      const r = free;
      taken[r] = true;
      rowOf[b] = r;
      const from = relay ? undefined : current.get(inp.cache);
      const block = rowSize * P;
      for (let slot = 0; slot < 2 * L; slot++) {
        const buf = this.pastPool[slot];
        if (from !== undefined) buf.copyWithin(r * block, from * block, (from + 1) * block);
        else inp.cache.writeEntries(slot >> 1, slot & 1 ? 'value' : 'key', buf, r, P, 0, inp.cache.length, this.transposedKeys && !(slot & 1));
      }
    });
    const rows = new Array<SequenceCache | null>(B).fill(null);
    inputs.forEach((inp, b) => (rows[rowOf[b]] = inp.cache));
    this.resident = { capacity: P, rows };
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

  /** Frees the held device past (device-KV mode) and the onnxruntime session. */
  async release(): Promise<void> {
    this.dropHeld();
    await this.session.release();
  }
}

/**
 * Moves the first `length` positions of each kept row of a resident past buffer from capacity
 * `oldCap` to `newCap`, in place. A row is kv_heads runs of positions x head_dim (values,
 * standard keys) or kv_heads x head_dim runs of positions (transposed keys); run i starts at
 * i * capacity * (elements per position). Growing, runs are moved from the last to the first
 * (a run's new place only overlaps later runs' old places, already moved); shrinking, from
 * the first to the last. `copyWithin` has memmove semantics, so a run may overlap itself.
 */
export function relayoutRows(buf: KVArray, kept: readonly { row: number; length: number }[], oldCap: number, newCap: number, kvHeads: number, headDim: number, transposed: boolean): void {
  const runsPerRow = transposed ? kvHeads * headDim : kvHeads;
  const unit = transposed ? 1 : headDim;
  const grow = newCap > oldCap;
  const order = kept.slice().sort((a, b) => (grow ? b.row - a.row : a.row - b.row));
  for (const { row, length } of order) {
    const n = length * unit;
    for (let k = 0; k < runsPerRow; k++) {
      const i = row * runsPerRow + (grow ? runsPerRow - 1 - k : k);
      buf.copyWithin(i * newCap * unit, i * oldCap * unit, i * oldCap * unit + n);
    }
  }
}

/**
 * Capacity (positions) of the resident past buffers for a batch whose longest sequence needs
 * `need` positions this step (its cache plus this step's tokens): `need` rounded up to a
 * multiple of RESIDENT_ROUNDING, at most the context length.
 */
export function residentCapacity(need: number, maxContext: number): number {
  return Math.min(maxContext, Math.ceil(need / RESIDENT_ROUNDING) * RESIDENT_ROUNDING);
}

/** Feed name of KV slot `slot` (2l = layer l's key, 2l + 1 = its value). */
function pastName(slot: number): string {
  return `past_key_values.${slot >> 1}.${slot & 1 ? 'value' : 'key'}`;
}

/** Name of the `step_key_values` output of KV slot `slot` (this step's entries). */
function stepName(slot: number): string {
  return `step_key_values.${slot >> 1}.${slot & 1 ? 'value' : 'key'}`;
}

/** Output name of KV slot `slot`. */
function presentName(slot: number): string {
  return `present.${slot >> 1}.${slot & 1 ? 'value' : 'key'}`;
}

/** present.{l}.key|value for every layer, in slot order. */
function presentNames(layers: number): string[] {
  return Array.from({ length: 2 * layers }, (_, slot) => presentName(slot));
}

/** Frees tensors (GPU buffers on webgpu; never read them on the host). */
function disposeAll(tensors: Record<string, ort.Tensor>): void {
  for (const t of Object.values(tensors)) t.dispose();
}
