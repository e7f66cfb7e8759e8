/**
 * Continuous batching (as in vLLM, TGI and llama.cpp's server): requests join the running
 * batch between forward passes and leave as soon as they finish, so no request waits for the
 * slowest of a batch.
 *
 * Each {@link Scheduler.step} is ONE forward pass (`session.step`):
 * - prefill: admit waiting sequences (FIFO) while the batch has room (`maxBatchSize`
 *   sequences) and the KV budget allows (each sequence reserves prompt + max_tokens tokens,
 *   so an admitted sequence never has to be preempted), and feed their prompts in one call;
 * - decode: feed one token for every running sequence.
 * A prefill is never run twice in a row while sequences are decoding, so prefill of new
 * requests is interleaved with the decode of running ones and cannot starve them.
 *
 * Greedy output under batching equals the output of a request alone because the session keeps
 * one KV cache per sequence and masks padding (runtime/decoder-session.ts). A step in which every
 * sequence only needs its greedy token asks the session for those tokens, not the logits.
 */
import type { TextTokenizer } from '../models/types.js';
import { type InputLimits, completionBudget, processInputs } from './input.js';
import type { EngineRequest, EngineStats, ResolvedEngineRequest, SequenceOutput, StepReport } from './protocol.js';
import { type SamplerFactory, Sequence } from './sequence.js';

/** What the scheduler needs of a session's KV cache type. */
export interface SchedulerCache {
  readonly length: number;
  /** Makes room for `extra` more tokens (optional). */
  reserve?(extra: number): void;
  /** The sequence is finished or cancelled: its entries will not be read again (optional). */
  release?(): void;
}

/** The session interface the scheduler drives (runtime/decoder-session.ts `DecoderSession` fits). */
export interface StepSession<C extends SchedulerCache> {
  readonly maxContext: number;
  readonly vocabSize: number;
  newCache(): C;
  /**
   * Feeds each sequence's new tokens, appends them to its cache, and returns the logits
   * [vocab] of each sequence's last new position.
   */
  step(inputs: { cache: C; tokens: number[] }[]): Promise<Float32Array[]>;
  /**
   * Optional: {@link step} returning only each sequence's greedy token (the argmax of its last
   * position's logits, lowest id on ties). Used for batches in which no sequence needs more
   * than that (engine/sequence.ts `acceptsGreedyToken`).
   */
  stepGreedy?(inputs: { cache: C; tokens: number[] }[]): Promise<number[]>;
}

/** Scheduler limits. */
export interface SchedulerConfig {
  /** Sequences in the running batch at most. */
  maxBatchSize: number;
  /** KV budget in tokens; default maxBatchSize * maxContext. */
  kvCacheTokens?: number;
}

/** A request whose forward pass failed. */
export type FailedRequest = StepReport['failed'][number];

/** Output tokens a new sequence's KV cache has room for from the start (see admit). */
const PREALLOCATED_OUTPUT_TOKENS = 256;

/** Book-keeping of one request. */
interface RequestState {
  /** Sequences not finished yet. */
  remaining: number;
  admitted: boolean;
}

/** Admits, batches and steps the sequences of one model. Single-threaded (one worker). */
export class Scheduler<C extends SchedulerCache> {
  private readonly waiting: Sequence<C>[] = [];
  private running: Sequence<C>[] = [];
  private readonly requests = new Map<string, RequestState>();
  private readonly kvCapacity: number;
  private lastPhase: 'prefill' | 'decode' = 'decode';
  private stepping = false;
  /** Outputs of sequences that finished without a forward pass (max_tokens 0). */
  private immediate: SequenceOutput[] = [];

  constructor(
    private readonly session: StepSession<C>,
    private readonly tokenizer: TextTokenizer,
    private readonly createSampler: SamplerFactory,
    private readonly config: SchedulerConfig,
    private readonly now: () => number = () => performance.timeOrigin + performance.now(),
  ) {
    if (!(config.maxBatchSize >= 1)) throw new Error(`maxBatchSize must be >= 1 (got ${config.maxBatchSize})`);
    this.kvCapacity = config.kvCacheTokens ?? config.maxBatchSize * session.maxContext;
  }

  /** Limits requests are checked against. */
  get limits(): InputLimits {
    return { maxContext: this.session.maxContext, vocabSize: this.session.vocabSize, kvCapacityTokens: this.kvCapacity };
  }

  /**
   * Tokenizes and validates `request`, then queues its sequences (prompt count x n).
   * @returns the prompt length of each prompt
   * @throws EngineRequestError when the request cannot be served (see input.ts); nothing is queued then
   * @throws Error if the request id is already in use
   */
  add(request: EngineRequest): number[] {
    if (this.requests.has(request.requestId)) throw new Error(`request id ${request.requestId} is already in use`);
    const prompts = processInputs(request, this.tokenizer, this.limits);
    const ctx = { tokenizer: this.tokenizer, maxContext: this.session.maxContext, createSampler: this.createSampler };
    const sequences: Sequence<C>[] = [];
    prompts.forEach((ids, p) => {
      const prompt = request.prompts[p];
      const text = 'text' in prompt ? prompt.text : null;
      // maxTokens null (the rest of the context) is resolved per prompt.
      const resolved: ResolvedEngineRequest = { ...request, maxTokens: completionBudget(request, ids.length, this.session.maxContext) };
      for (let i = 0; i < request.n; i++) sequences.push(new Sequence<C>(resolved, p * request.n + i, ids, text, ctx));
    });
    this.requests.set(request.requestId, { remaining: sequences.length, admitted: false });
    for (const seq of sequences) {
      if (seq.request.maxTokens === 0 && !(request.echo && request.logprobs !== null)) {
        // Nothing to compute: echo (if asked) and finish.
        this.immediate.push(seq.finishWithoutForward());
        this.sequenceDone(seq);
      } else {
        this.waiting.push(seq);
      }
    }
    return prompts.map((ids) => ids.length);
  }

  /**
   * Cancels a request: its waiting sequences leave the queue and its running sequences the
   * batch (at once when idle, else right after the current forward pass).
   * @returns false if the request is unknown or already finished
   */
  abort(requestId: string): boolean {
    if (!this.requests.has(requestId)) return false;
    this.requests.delete(requestId);
    for (let i = this.waiting.length - 1; i >= 0; i--) if (this.waiting[i].request.requestId === requestId) this.waiting.splice(i, 1);
    for (const seq of this.running) if (seq.request.requestId === requestId) seq.aborted = true;
    if (!this.stepping) this.dropFinished();
    return true;
  }

  /** Whether {@link step} has anything to do. */
  hasWork(): boolean {
    return this.waiting.length > 0 || this.running.length > 0 || this.immediate.length > 0;
  }

  /** Current occupancy. */
  stats(): EngineStats {
    const running = this.running.filter((s) => !s.aborted && !s.finished);
    const runningRequests = new Set(running.map((s) => s.request.requestId)).size;
    let waitingRequests = 0;
    for (const state of this.requests.values()) if (!state.admitted) waitingRequests++;
    return {
      runningRequests,
      waitingRequests,
      runningSequences: running.length,
      waitingSequences: this.waiting.length,
      kvUsedTokens: running.reduce((sum, s) => sum + (s.cache ? s.cache.length : 0), 0),
      kvReservedTokens: running.reduce((sum, s) => sum + s.reservedTokens, 0),
      kvCapacityTokens: this.kvCapacity,
    };
  }

  /**
   * Runs one forward pass (prefill of newly admitted sequences, or one decode step of all
   * running ones) and processes its logits.
   * @returns what the step did, or null when there was nothing to do
   */
  async step(): Promise<StepReport | null> {
    const immediate = this.immediate;
    this.immediate = [];
    const admitted: StepReport['admitted'] = [];
    let batch: Sequence<C>[] = [];
    let phase: 'prefill' | 'decode' = 'decode';
    if (this.lastPhase === 'decode' || this.running.length === 0) batch = this.admit(admitted);
    if (batch.length > 0) phase = 'prefill';
    else batch = this.running.slice();
    this.lastPhase = phase;
    if (batch.length === 0) {
      if (immediate.length === 0) return null;
      return this.report(phase, 0, 0, 0, admitted, immediate, []);
    }
    const inputs = batch.map((seq) => ({ cache: seq.cache as C, tokens: seq.pendingInput }));
    const tokens = inputs.reduce((sum, x) => sum + x.tokens.length, 0);
    const failed: FailedRequest[] = [];
    const outputs: SequenceOutput[] = [...immediate];
    const start = performance.now();
    this.stepping = true;
    try {
      // Greedy tokens only (computed in the graph) when no sequence needs its logits.
      const greedy = this.session.stepGreedy !== undefined && batch.every((seq) => seq.acceptsGreedyToken());
      const greedyTokens = greedy ? await this.session.stepGreedy!(inputs) : null;
      const logits = greedyTokens ? null : await this.session.step(inputs);
      const forwardMs = performance.now() - start;
      batch.forEach((seq, i) => {
        if (seq.aborted) return;
        const out = greedyTokens ? seq.onGreedyToken(greedyTokens[i]) : seq.onLogits(logits![i]);
        if (out) outputs.push(out);
        if (seq.finished) this.sequenceDone(seq);
      });
      return this.report(phase, batch.length, tokens, forwardMs, admitted, outputs, failed);
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      for (const id of new Set(batch.map((s) => s.request.requestId))) {
        failed.push({ requestId: id, message });
        this.abort(id);
      }
      return this.report(phase, batch.length, tokens, performance.now() - start, admitted, outputs, failed);
    } finally {
      this.stepping = false;
      this.dropFinished();
    }
  }

  /** Moves waiting sequences that fit into the running batch; returns them. */
  private admit(admitted: StepReport['admitted']): Sequence<C>[] {
    const batch: Sequence<C>[] = [];
    let reserved = this.running.reduce((sum, s) => sum + s.reservedTokens, 0);
    while (this.waiting.length > 0 && this.running.length < this.config.maxBatchSize) {
      const seq = this.waiting[0];
      if (reserved + seq.reservedTokens > this.kvCapacity) break;
      this.waiting.shift();
      reserved += seq.reservedTokens;
      seq.cache = this.session.newCache();
      // Room for the prompt and up to PREALLOCATED_OUTPUT_TOKENS outputs in one allocation,
      // instead of growing and copying the cache while the first outputs are generated (a long
      // max_tokens still grows on demand: the host memory follows use, not the reservation).
      seq.cache.reserve?.(Math.min(seq.reservedTokens, seq.promptIds.length + PREALLOCATED_OUTPUT_TOKENS, this.session.maxContext));
      this.running.push(seq);
      batch.push(seq);
      const state = this.requests.get(seq.request.requestId);
      if (state && !state.admitted) {
        state.admitted = true;
        admitted.push({ requestId: seq.request.requestId, time: this.now() });
      }
    }
    return batch;
  }

  /** Removes finished and cancelled sequences from the batch and releases their KV caches. */
  private dropFinished(): void {
    this.running = this.running.filter((s) => {
      if (!s.aborted && !s.finished) return true;
      s.cache?.release?.();
      return false;
    });
  }

  private sequenceDone(seq: Sequence<C>): void {
    const state = this.requests.get(seq.request.requestId);
    if (!state) return;
    state.remaining--;
    if (state.remaining === 0) this.requests.delete(seq.request.requestId);
  }

  private report(
    phase: 'prefill' | 'decode',
    batchSize: number,
    tokens: number,
    forwardMs: number,
    admitted: StepReport['admitted'],
    outputs: SequenceOutput[],
    failed: FailedRequest[],
  ): StepReport {
    return { phase, batchSize, tokens, forwardMs, admitted, outputs, failed, stats: this.stats() };
  }
}
