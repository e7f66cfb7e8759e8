/**
 * The main-thread handle of a model worker (engine/worker.ts): starts the worker_thread,
 * waits until its model is loaded (and sliced, for a sliced variant), submits requests and
 * routes the worker's per-step outputs back to each request's {@link RequestSink}.
 *
 * onnxruntime's `session.run()` blocks its thread, so each served model gets its own worker
 * and the HTTP event loop stays responsive (../shared/reference/RUNTIME-NOTES.md).
 */
import { EventEmitter } from 'node:events';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import type {
  EngineErrorInfo,
  EngineRequest,
  EngineStats,
  FromWorkerMessage,
  ModelInfo,
  SequenceOutput,
  StepReport,
  ToWorkerMessage,
  TokenizerResult,
  WorkerOptions,
} from './protocol.js';

/** A tokenizer request the worker refused (bad token ids) or could not answer (worker gone). */
export class TokenizerRequestError extends Error {
  constructor(readonly info: EngineErrorInfo) {
    super(info.message);
    this.name = 'TokenizerRequestError';
  }
}

/** Receives the life of one request. Exactly one of onError / (all finishes) ends it. */
export interface RequestSink {
  /** The worker tokenized and queued the request; prompt length per prompt. */
  onAccepted(promptTokens: number[]): void;
  /** The first sequence of the request entered the running batch (epoch ms). */
  onAdmitted(time: number): void;
  /** A sequence produced text/tokens or finished. */
  onOutput(output: SequenceOutput): void;
  /** The request was refused or failed; no more calls follow. */
  onError(error: EngineErrorInfo): void;
}

/** Progress of loading / slicing, 0..1. */
export type ProgressListener = (p: { phase: string; fraction: number }) => void;

/** A log line of the worker while it starts (e.g. a cached slice that failed its check). */
export type LogListener = (m: { level: 'info' | 'warn'; msg: string }) => void;

/** Empty stats, before the first report. */
const IDLE: EngineStats = {
  runningRequests: 0,
  waitingRequests: 0,
  runningSequences: 0,
  waitingSequences: 0,
  kvUsedTokens: 0,
  kvReservedTokens: 0,
  kvCapacityTokens: 0,
};

/**
 * A started model worker. Events: `step` (StepReport, after every forward pass), `exit`
 * (the worker ended; in-flight requests were failed).
 */
export class ModelWorker extends EventEmitter {
  private readonly sinks = new Map<string, RequestSink>();
  /** Choices not finished yet, per request. */
  private readonly remaining = new Map<string, number>();
  /** Requests submitted whose first sequence was not admitted yet (main-side queue length). */
  private readonly notAdmitted = new Set<string>();
  private latest: EngineStats = IDLE;
  private alive = true;
  /** Tokenize / detokenize requests awaiting the worker's answer, by id. */
  private readonly tokenizerCalls = new Map<number, { resolve: (r: TokenizerResult) => void; reject: (e: Error) => void }>();
  private nextTokenizerCall = 1;

  private constructor(
    private readonly worker: Worker,
    readonly info: ModelInfo,
  ) {
    super();
    worker.on('message', (msg: FromWorkerMessage) => this.onMessage(msg));
    worker.on('error', (err) => this.onExit(`model worker failed: ${err.message}`));
    worker.on('exit', (code) => this.onExit(`model worker exited (code ${code})`));
  }

  /**
   * Starts a worker and resolves once its model is ready to serve.
   * @param signal aborting it stops a worker that is still starting (the promise rejects)
   * @param workerFile compiled worker entry (default: engine/worker.js next to this file)
   * @param onLog the worker's log lines until it is ready (then the `log` event)
   * @throws Error with the worker's message when loading or slicing fails; it rejects only
   *   once the worker thread has exited
   */
  static start(
    options: WorkerOptions,
    onProgress?: ProgressListener,
    signal?: AbortSignal,
    workerFile = path.join(__dirname, 'worker.js'),
    onLog?: LogListener,
  ): Promise<ModelWorker> {
    return new Promise((resolve, reject) => {
      const worker = new Worker(workerFile, { workerData: options });
      let settled = false;
      let exited = false;
      worker.once('exit', () => (exited = true));
      const onAbort = () => fail('cancelled: the server is shutting down');
      // Rejects only once the thread has left: a caller that goes on to exit the process must
      // not do so while this worker is inside a native onnxruntime call (the process-wide
      // teardown would stop the thread mid-run, and node-addon-api aborts the process with
      // `terminate called after throwing an instance of 'Napi::Error'`).
      const fail = (message: string) => {
        if (settled) return;
        settled = true;
        signal?.removeEventListener('abort', onAbort);
        if (exited) return reject(new Error(message));
        worker.once('exit', () => reject(new Error(message)));
        stopWorker(worker);
      };
      if (signal?.aborted) return fail('cancelled: the server is shutting down');
      signal?.addEventListener('abort', onAbort);
      const onMessage = (msg: FromWorkerMessage) => {
        if (msg.type === 'progress') onProgress?.({ phase: msg.phase, fraction: msg.fraction });
        else if (msg.type === 'log') onLog?.({ level: msg.level, msg: msg.msg });
        else if (msg.type === 'fatal') fail(msg.message);
        else if (msg.type === 'ready' && !settled) {
          settled = true;
          signal?.removeEventListener('abort', onAbort);
          worker.off('message', onMessage);
          worker.off('error', onError);
          worker.off('exit', onExitEarly);
          resolve(new ModelWorker(worker, msg.model));
        }
      };
      const onError = (err: Error) => fail(err.message);
      const onExitEarly = (code: number) => fail(`model worker exited during startup (code ${code})`);
      worker.on('message', onMessage);
      worker.on('error', onError);
      worker.on('exit', onExitEarly);
    });
  }

  /** Whether the worker is running. */
  get isAlive(): boolean {
    return this.alive;
  }

  /** Latest occupancy reported by the worker. */
  get stats(): EngineStats {
    return this.latest;
  }

  /** Requests not yet admitted to the running batch, counted on this side (includes ones in transit). */
  get waitingRequests(): number {
    return this.notAdmitted.size;
  }

  /** Requests submitted and not finished. */
  get inFlight(): number {
    return this.sinks.size;
  }

  /**
   * How full the wait is, counted on this side: the requests not admitted yet are taken in
   * arrival order (the scheduler admits FIFO) into the batch's free sequence slots
   * (`maxBatchSize` minus the unfinished sequences of admitted requests); `queued` are those
   * that do not fit, and stay waiting; `freeSlots` the sequence slots left after the others.
   * The KV budget can hold a request back too; it is not counted here.
   */
  queueState(maxBatchSize: number): { queued: number; freeSlots: number } {
    let running = 0;
    for (const [id, left] of this.remaining) if (!this.notAdmitted.has(id)) running += left;
    let free = Math.max(0, maxBatchSize - running);
    let queued = 0;
    for (const id of this.notAdmitted) {
      const sequences = this.remaining.get(id) ?? 1;
      if (queued === 0 && sequences <= free) free -= sequences;
      else queued++;
    }
    return { queued, freeSlots: queued === 0 ? free : 0 };
  }

  /**
   * Sends a request to the worker.
   * @throws Error if the worker has ended or the id is in use
   */
  submit(request: EngineRequest, sink: RequestSink): void {
    if (!this.alive) throw new Error(`model ${this.info.id} is not running`);
    if (this.sinks.has(request.requestId)) throw new Error(`request id ${request.requestId} is already in use`);
    this.sinks.set(request.requestId, sink);
    this.remaining.set(request.requestId, request.prompts.length * request.n);
    this.notAdmitted.add(request.requestId);
    this.post({ type: 'submit', request });
  }

  /** Cancels a request; its sink receives nothing more. */
  abort(requestId: string): void {
    if (!this.sinks.has(requestId)) return;
    this.forget(requestId);
    if (this.alive) this.post({ type: 'abort', requestId });
  }

  /**
   * Token ids of `text` with their vocabulary strings (vLLM's /tokenize), from the worker's
   * tokenizer; answered between two forward passes.
   * @param addSpecialTokens prepend BOS (completions prompts); false for rendered chat templates
   * @throws TokenizerRequestError (rejects) when the worker has ended
   */
  tokenize(text: string, addSpecialTokens: boolean): Promise<Required<Pick<TokenizerResult, 'tokens' | 'tokenStrs'>>> {
    return this.tokenizerCall((id) => ({ type: 'tokenize', id, text, addSpecialTokens })) as Promise<Required<Pick<TokenizerResult, 'tokens' | 'tokenStrs'>>>;
  }

  /**
   * Text of token ids, special tokens kept (vLLM's /detokenize).
   * @throws TokenizerRequestError (rejects) with status 400 for an id outside the vocabulary
   */
  async detokenize(tokens: number[]): Promise<string> {
    return (await this.tokenizerCall((id) => ({ type: 'detokenize', id, tokens }))).text ?? '';
  }

  private tokenizerCall(message: (id: number) => ToWorkerMessage): Promise<TokenizerResult> {
    if (!this.alive) return Promise.reject(new TokenizerRequestError(workerGone(`model ${this.info.id} is not running`)));
    const id = this.nextTokenizerCall++;
    return new Promise((resolve, reject) => {
      this.tokenizerCalls.set(id, { resolve, reject });
      this.post(message(id));
    });
  }

  /** Asks the worker to release its session and exit; waits for the exit. */
  async close(): Promise<void> {
    if (!this.alive) return;
    const exited = new Promise<void>((resolve) => this.worker.once('exit', () => resolve()));
    this.post({ type: 'shutdown' });
    const timer = setTimeout(() => stopWorker(this.worker), 5000);
    await exited;
    clearTimeout(timer);
  }

  /**
   * Stops the worker thread as soon as its current forward pass ends (no cleanup); in-flight
   * requests fail with a 500.
   */
  async terminate(): Promise<void> {
    const exited = new Promise<void>((resolve) => this.worker.once('exit', () => resolve()));
    stopWorker(this.worker);
    await exited;
  }

  private post(msg: ToWorkerMessage): void {
    this.worker.postMessage(msg);
  }

  private onMessage(msg: FromWorkerMessage): void {
    switch (msg.type) {
      case 'accepted':
        this.sinks.get(msg.requestId)?.onAccepted(msg.promptTokens);
        break;
      case 'rejected': {
        const sink = this.sinks.get(msg.requestId);
        this.forget(msg.requestId);
        sink?.onError(msg.error);
        break;
      }
      case 'step':
        this.onStep(msg.step);
        break;
      case 'stats':
        this.latest = msg.stats;
        break;
      case 'log':
        this.emit('log', msg);
        break;
      case 'tokenizer': {
        const call = this.tokenizerCalls.get(msg.id);
        this.tokenizerCalls.delete(msg.id);
        if (msg.error) call?.reject(new TokenizerRequestError(msg.error));
        else call?.resolve(msg.result ?? {});
        break;
      }
      default:
        break;
    }
  }

  private onStep(step: StepReport): void {
    this.latest = step.stats;
    for (const { requestId, time } of step.admitted) {
      if (this.notAdmitted.delete(requestId)) this.sinks.get(requestId)?.onAdmitted(time);
    }
    for (const out of step.outputs) {
      const sink = this.sinks.get(out.requestId);
      if (!sink) continue;
      if (out.finishReason) {
        const left = (this.remaining.get(out.requestId) ?? 1) - 1;
        this.remaining.set(out.requestId, left);
        if (left === 0) this.forget(out.requestId);
      }
      sink.onOutput(out);
    }
    for (const f of step.failed) {
      const sink = this.sinks.get(f.requestId);
      this.forget(f.requestId);
      sink?.onError({ status: 500, message: `inference failed: ${f.message}`, type: 'server_error', param: null, code: 'inference_failed' });
    }
    this.emit('step', step);
  }

  private forget(requestId: string): void {
    this.sinks.delete(requestId);
    this.remaining.delete(requestId);
    this.notAdmitted.delete(requestId);
  }

  private onExit(message: string): void {
    if (!this.alive) return;
    this.alive = false;
    const sinks = [...this.sinks.values()];
    this.sinks.clear();
    this.remaining.clear();
    this.notAdmitted.clear();
    this.latest = IDLE;
    for (const sink of sinks) sink.onError({ status: 500, message, type: 'server_error', param: null, code: 'worker_exited' });
    for (const call of this.tokenizerCalls.values()) call.reject(new TokenizerRequestError(workerGone(message)));
    this.tokenizerCalls.clear();
    this.emit('exit', message);
  }
}

/** The error of a request to a worker that has ended. */
function workerGone(message: string): EngineErrorInfo {
  return { status: 503, message, type: 'service_unavailable', param: null, code: 'model_unavailable' };
}

/** How long a worker gets to leave by itself before it is terminated the hard way. */
const HARD_TERMINATE_MS = 30_000;

/**
 * Asks a worker to exit between two onnxruntime runs (`Worker.terminate()` during a native run
 * aborts the process); terminates it the hard way only if it has not left after
 * {@link HARD_TERMINATE_MS} (a stuck run).
 */
function stopWorker(worker: Worker): void {
  worker.postMessage({ type: 'exit' } satisfies ToWorkerMessage);
  const timer = setTimeout(() => void worker.terminate(), HARD_TERMINATE_MS);
  timer.unref();
  worker.once('exit', () => clearTimeout(timer));
}
