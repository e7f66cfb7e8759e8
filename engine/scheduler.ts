/**
 * Continuous batching (as in vLLM, TGI and llama.cpp's server): requests join the running
 * batch between forward passes and leave as soon as they finish, so no request waits for the
 * slowest of a batch.
 *
 * Each {@link Scheduler.step} is ONE forward pass (`session.step`):
 * - prefill: admit waiting sequences (FIFO) while the batch has room (`maxBatchSize`
 *   sequences) and the KV budget allows (each sequence reserves prompt + max_tokens tokens,
 *   so an admitted sequence never has to be preempted), and feed their prompts in one call;
 *   with `maxPrefillTokens` (chunked prefill, as vLLM's `max_num_batched_tokens` and TGI's
 *   `max_batch_prefill_tokens`) one call computes at most that many positions, padding
 *   included, and a longer prompt is fed in chunks over several prefill steps;
 * - decode: feed one token for every running sequence whose prompt is fed.
 * A prefill is never run twice in a row while sequences are decoding, so prefill of new
 * requests is interleaved with the decode of running ones and cannot starve them; with chunks,
 * a long prompt stalls the running sequences for one chunk at a time, not for all of it.
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
  /**
   * Positions one prefill call computes at most: rows x the longest chunk of the call (the
   * session pads every row to it). Default: no limit (every admitted prompt whole).
   */
  maxPrefillTokens?: number;
}

/** One row of a forward pass: the sequence and the tokens fed to it. */
interface PlannedRow<C> {
  seq: Sequence<C>;
  tokens: number[];
}

/** A request whose forward pass failed. */
export type FailedRequest = StepReport['failed'][number];

/**
 * `serve`'s default prefill budget (positions per prefill step; docs/loadtests.md, "Chunked
 * prefill"): on bench-110m (2 cores) a 1024-token prompt prefills as fast in chunks of 64-256
 * as whole, or faster, while a chunk of 256 stalls the running decodes 4x less than the prompt.
 */
export const DEFAULT_MAX_PREFILL_TOKENS = 256;

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
  /** Running sequences whose prompt is only partly fed (chunked prefill): not in decode steps. */
  private readonly prefilling = new Set<Sequence<C>>();
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
    if (config.maxPrefillTokens !== undefined && !(config.maxPrefillTokens >= 1)) throw new Error(`maxPrefillTokens must be >= 1 (got ${config.maxPrefillTokens})`);
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
   * Runs one forward pass (prefill: the next chunks of partly fed prompts and of newly
   * admitted sequences; or one decode step of all running sequences whose prompt is fed) and
   * processes its logits.
   * @returns what the step did, or null when there was nothing to do
   */
  async step(): Promise<StepReport | null> {
    const immediate = this.immediate;
    this.immediate = [];
    const admitted: StepReport['admitted'] = [];
    const decoding = this.running.filter((s) => !this.prefilling.has(s));
    let plan: PlannedRow<C>[] = [];
    let phase: 'prefill' | 'decode' = 'decode';
    if (this.lastPhase === 'decode' || decoding.length === 0) plan = this.planPrefill(admitted);
    if (plan.length > 0) phase = 'prefill';
    else plan = decoding.map((seq) => ({ seq, tokens: seq.pendingInput }));
    this.lastPhase = phase;
    if (plan.length === 0) {
      if (immediate.length === 0) return null;
      return this.report(phase, 0, 0, 0, admitted, immediate, []);
    }
    const batch = plan.map((row) => row.seq);
    const inputs = plan.map((row) => ({ cache: row.seq.cache as C, tokens: row.tokens }));
    // A row fed only part of its pending prompt has no token due: its output is not read.
    const partial = plan.map((row) => row.tokens.length < row.seq.pendingInput.length);
    const tokens = inputs.reduce((sum, x) => sum + x.tokens.length, 0);
    const failed: FailedRequest[] = [];
    const outputs: SequenceOutput[] = [...immediate];
    const start = performance.now();
    this.stepping = true;
    try {
      // Greedy tokens only (computed in the graph) when no sequence needs its logits.
      const greedy = this.session.stepGreedy !== undefined && batch.every((seq, i) => partial[i] || seq.acceptsGreedyToken());
      const greedyTokens = greedy ? await this.session.stepGreedy!(inputs) : null;
      const logits = greedyTokens ? null : await this.session.step(inputs);
      const forwardMs = performance.now() - start;
      batch.forEach((seq, i) => {
        if (seq.aborted) return;
        if (partial[i]) {
          seq.advancePrompt(inputs[i].tokens.length);
          this.prefilling.add(seq);
          return;
        }
        this.prefilling.delete(seq);
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

  /**
   * The rows of a prefill call: first the partly fed prompts (in admission order), then waiting
   * sequences admitted FIFO while the batch, the KV budget and the prefill budget allow. Every
   * row is fed up to S tokens of its pending prompt, S the longest chunk of the call, with
   * rows x S <= maxPrefillTokens; the first row always gets at least one token, so a prefill
   * makes progress under any budget. A partly fed prompt may join with a chunk shorter than
   * its rest; a waiting sequence is admitted only with all of its prompt or a chunk of the
   * whole budget's length (min(prompt, budget) tokens), so that none is admitted, and counted
   * as no longer waiting, only to be fed a token or two per step.
   */
  private planPrefill(admitted: StepReport['admitted']): PlannedRow<C>[] {
    const budget = this.config.maxPrefillTokens ?? Infinity;
    const rows: Sequence<C>[] = [];
    let S = 0;
    let count = 0;
    // Whether one more row with `pending` tokens joins: widening S to min(pending, budget), or
    // (`shorter`) keeping S and feeding it a shorter chunk.
    const joins = (pending: number, shorter: boolean): boolean => {
      const wider = Math.max(S, Math.min(pending, budget));
      if ((count + 1) * wider <= budget) S = wider;
      else if (!(shorter && S > 0 && (count + 1) * S <= budget)) return false;
      count++;
      return true;
    };
    let full = false;
    for (const seq of this.prefilling) {
      if (!joins(seq.pendingInput.length, true)) {
        full = true;
        break;
      }
      rows.push(seq);
    }
    if (!full) rows.push(...this.admit(admitted, (seq) => joins(seq.pendingInput.length, false)));
    return rows.map((seq) => ({ seq, tokens: seq.pendingInput.length > S ? seq.pendingInput.slice(0, S) : seq.pendingInput }));
  }

  /** Moves waiting sequences that fit (batch, KV budget, then `joins`) into the running batch; returns them. */
  private admit(admitted: StepReport['admitted'], joins: (seq: Sequence<C>) => boolean): Sequence<C>[] {
    const batch: Sequence<C>[] = [];
    let reserved = this.running.reduce((sum, s) => sum + s.reservedTokens, 0);
    while (this.waiting.length > 0 && this.running.length < this.config.maxBatchSize) {
      const seq = this.waiting[0];
      if (reserved + seq.reservedTokens > this.kvCapacity) break;
      if (!joins(seq)) break;
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
      this.prefilling.delete(s);
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
