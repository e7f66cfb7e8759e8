/**
 * One completion or chat request's life on the main thread, shared by HTTP, SSE and WebSocket: checks
 * the model's queue bound, submits the request to the model worker, gathers the choices
 * (text, logprobs, finish reasons), measures queue time / TTFT / TPOT / end-to-end latency,
 * feeds the metrics, and cancels the request in the engine when the client goes away.
 */
import { randomUUID } from 'node:crypto';
import type { EngineErrorInfo, EngineRequest, FinishReason, SequenceOutput, TokenEntry } from '../engine/protocol.js';
import { ApiError, Errors } from './errors.js';
import type { ServerMetrics } from './metrics.js';
import type { ServedModel } from './models.js';
import type { ChoiceFinishReason, Usage } from './protocol.js';

/** Epoch milliseconds, sub-millisecond precision (comparable with the worker's timestamps). */
export const nowMs = (): number => performance.timeOrigin + performance.now();

/** Receives the run's events. */
export interface RunListener {
  /** The worker accepted the request (prompt tokenized and within limits). */
  onAccepted?(): void;
  /** A sequence's output (text delta, token, echo, finish). */
  onOutput?(output: SequenceOutput): void;
  /** All choices finished. */
  onDone(result: RunResult): void;
  /** Refused or failed; nothing follows. */
  onError(error: ApiError): void;
  /**
   * The server cut the run (a shutdown's timeout ran out); nothing follows. The choices that
   * had not finished carry finish_reason 'abort'.
   */
  onAborted?(result: RunResult): void;
}

/** One choice as gathered: its text (echo included), scored tokens when asked, how it ended. */
export interface RunChoice {
  index: number;
  text: string;
  /** Scored tokens (echoed prompt tokens first) when the request asked for logprobs, else null. */
  tokens: TokenEntry[] | null;
  finish_reason: ChoiceFinishReason | null;
}

/** The gathered result. */
export interface RunResult {
  choices: RunChoice[];
  usage: Usage;
}

/** What kind of request a run serves and how it becomes an engine request. */
export interface RunSpec {
  /** Response id prefix: 'cmpl' (completions) or 'chatcmpl' (chat). */
  idPrefix: 'cmpl' | 'chatcmpl';
  /** Gather each choice's scored tokens (logprobs). */
  logprobs: boolean;
  /** The engine request, given the run's id and arrival time. */
  toEngine(requestId: string, arrivalTime: number): EngineRequest;
}

/** Fields of the request's log line. */
export interface RunSummary {
  request_id: string;
  model: string;
  /** 'completion' or 'chat'. */
  api: 'completion' | 'chat';
  transport: string;
  outcome: 'ok' | 'cancelled' | 'aborted' | 'error' | 'pending';
  status?: number;
  n: number;
  prompt_tokens: number;
  completion_tokens: number;
  queue_ms: number | null;
  ttft_ms: number | null;
  tpot_ms: number | null;
  e2e_ms: number | null;
  finish_reasons?: FinishReason[];
}

/** What a run needs from the server. */
export interface RunContext {
  metrics: ServerMetrics;
  /** Waiting requests per model at most (429 beyond), besides those the batch admits at once. */
  maxQueue: number;
  /** Sequences per forward pass (`--max-batch-size`): free slots of the batch are not queue places. */
  maxBatchSize: number;
}

/** One completion or chat request in flight. */
export class CompletionRun {
  readonly id: string;
  readonly created = Math.floor(Date.now() / 1000);
  readonly arrival = nowMs();
  private readonly choices: RunChoice[] = [];
  /** Generated tokens per choice index. */
  private readonly tokensPerChoice = new Map<number, number>();
  /** When each choice's latest token arrived (inter-token latency). */
  private readonly lastTokenAt = new Map<number, number>();
  private promptTokens = 0;
  private admittedAt: number | null = null;
  private firstTokenAt: number | null = null;
  private endedAt: number | null = null;
  private outcome: RunSummary['outcome'] = 'pending';
  private status: number | undefined;
  private listener: RunListener | null = null;
  private open = 0;

  constructor(
    private readonly ctx: RunContext,
    readonly model: ServedModel,
    readonly spec: RunSpec,
    readonly transport: 'http' | 'sse' | 'ws',
  ) {
    this.id = `${spec.idPrefix}-${randomUUID().replace(/-/g, '')}`;
  }

  /** Whether the run has ended (done, error or cancelled). */
  get ended(): boolean {
    return this.outcome !== 'pending';
  }

  /**
   * Submits the request. Errors (queue full, dead worker) arrive through `listener.onError`.
   */
  start(listener: RunListener): void {
    this.listener = listener;
    const worker = this.model.worker;
    if (!worker.isAlive) return this.fail(Errors.unavailable(`model ${this.model.id} is not running`, 'model_unavailable'));
    const engineRequest = this.spec.toEngine(this.id, this.arrival);
    const count = engineRequest.prompts.length * engineRequest.n;
    // Requests not admitted yet include ones the worker is about to admit into free batch slots
    // (a burst on an idle server arrives before any admission): those take no queue place.
    const { queued, freeSlots } = worker.queueState(this.ctx.maxBatchSize);
    if (count > freeSlots && queued >= this.ctx.maxQueue) return this.fail(Errors.queueFull(this.model.id, 1));
    for (let i = 0; i < count; i++) this.choices.push({ index: i, text: '', tokens: this.spec.logprobs ? [] : null, finish_reason: null });
    this.open = count;
    worker.submit(engineRequest, {
      onAccepted: (promptTokens) => {
        this.promptTokens = promptTokens.reduce((a, b) => a + b, 0);
        this.ctx.metrics.observePrompt(this.model.id, this.promptTokens);
        this.listener?.onAccepted?.();
      },
      onAdmitted: (time) => (this.admittedAt = time),
      onOutput: (out) => this.onOutput(out),
      onError: (err: EngineErrorInfo) => this.fail(ApiError.fromEngine(err)),
    });
  }

  /** Cancels the run (client gone): frees its slot in the engine. No further events. */
  cancel(): void {
    if (this.ended) return;
    this.stopInEngine('cancelled');
    this.listener = null;
  }

  /**
   * Cuts the run because the server is stopping: frees its slot in the engine, marks the
   * unfinished choices with finish_reason 'abort' and tells the listener (`onAborted`), which
   * ends its response cleanly. No-op once the run has ended.
   */
  abort(): void {
    if (this.ended) return;
    this.stopInEngine('aborted');
    for (const choice of this.choices) choice.finish_reason ??= 'abort';
    const listener = this.listener;
    this.listener = null;
    listener?.onAborted?.({ choices: this.choices, usage: this.usage() });
  }

  /** Frees the run's slot in the engine and records how it ended (both count as aborted requests). */
  private stopInEngine(outcome: 'cancelled' | 'aborted'): void {
    this.model.worker.abort(this.id);
    this.outcome = outcome;
    this.endedAt = nowMs();
    this.ctx.metrics.observeAbort(this.model.id);
  }

  /** The request's log fields. */
  summary(): RunSummary {
    const ms = (t: number | null, from: number) => (t === null ? null : round(t - from));
    const completionTokens = this.completionTokens();
    const maxTokens = this.maxChoiceTokens();
    return {
      request_id: this.id,
      model: this.model.id,
      api: this.spec.idPrefix === 'chatcmpl' ? 'chat' : 'completion',
      transport: this.transport,
      outcome: this.outcome,
      ...(this.status !== undefined ? { status: this.status } : {}),
      n: this.choices.length,
      prompt_tokens: this.promptTokens,
      completion_tokens: completionTokens,
      queue_ms: ms(this.admittedAt, this.arrival),
      ttft_ms: ms(this.firstTokenAt, this.arrival),
      tpot_ms:
        this.firstTokenAt !== null && this.endedAt !== null && maxTokens > 1 ? round((this.endedAt - this.firstTokenAt) / (maxTokens - 1)) : null,
      e2e_ms: ms(this.endedAt, this.arrival),
      ...(this.outcome === 'ok' ? { finish_reasons: this.choices.map((c) => c.finish_reason as FinishReason) } : {}),
    };
  }

  /** Usage so far. */
  usage(): Usage {
    const completion = this.completionTokens();
    return { prompt_tokens: this.promptTokens, completion_tokens: completion, total_tokens: this.promptTokens + completion };
  }

  private completionTokens(): number {
    let sum = 0;
    for (const v of this.tokensPerChoice.values()) sum += v;
    return sum;
  }

  private maxChoiceTokens(): number {
    return Math.max(0, ...this.tokensPerChoice.values());
  }

  private onOutput(out: SequenceOutput): void {
    if (this.ended) return;
    if (out.token) {
      const now = nowMs();
      if (this.firstTokenAt === null) this.firstTokenAt = now;
      const previous = this.lastTokenAt.get(out.index);
      if (previous !== undefined) this.ctx.metrics.observeInterToken(this.model.id, (now - previous) / 1000);
      this.lastTokenAt.set(out.index, now);
    }
    this.tokensPerChoice.set(out.index, out.completionTokens);
    const choice = this.choices[out.index];
    if (out.echo) {
      choice.text += out.echo.text;
      if (choice.tokens && out.echo.tokens) choice.tokens.push(...out.echo.tokens);
    }
    choice.text += out.text;
    if (choice.tokens && out.token) choice.tokens.push(out.token);
    if (out.finishReason) {
      choice.finish_reason = out.finishReason;
      this.open--;
    }
    this.listener?.onOutput?.(out);
    if (this.open === 0) this.finish();
  }

  private finish(): void {
    this.outcome = 'ok';
    this.status = 200;
    this.endedAt = nowMs();
    const s = this.summary();
    const seconds = (from: number | null, to: number | null) => (from === null || to === null ? null : (to - from) / 1000);
    this.ctx.metrics.observeRequest({
      model: this.model.id,
      queueSeconds: s.queue_ms === null ? null : s.queue_ms / 1000,
      ttftSeconds: s.ttft_ms === null ? null : s.ttft_ms / 1000,
      tpotSeconds: s.tpot_ms === null ? null : s.tpot_ms / 1000,
      e2eSeconds: (s.e2e_ms ?? 0) / 1000,
      prefillSeconds: seconds(this.admittedAt, this.firstTokenAt),
      decodeSeconds: seconds(this.firstTokenAt, this.endedAt),
      inferenceSeconds: seconds(this.admittedAt, this.endedAt),
      promptTokens: this.promptTokens,
      generationTokens: s.completion_tokens,
      finishReasons: s.finish_reasons ?? [],
    });
    const listener = this.listener;
    this.listener = null;
    listener?.onDone({ choices: this.choices, usage: this.usage() });
  }

  private fail(err: ApiError): void {
    if (this.ended) return;
    this.outcome = 'error';
    this.status = err.status;
    this.endedAt = nowMs();
    this.ctx.metrics.observeFailure(this.model.id, err.status);
    const listener = this.listener;
    this.listener = null;
    listener?.onError(err);
  }
}

function round(ms: number): number {
  return Math.round(ms * 1000) / 1000;
}
