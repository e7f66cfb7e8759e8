/**
 * Prometheus metrics (prom-client), named after vLLM's (../shared/reference/SERVING.md) with
 * the `sliceserve_` prefix, base units (seconds) and a `model` label on every series so that a
 * dense model and its sliced variants sit side by side. Process metrics come from prom-client's
 * defaults. Gauges are read from the model workers at scrape time.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { EngineStats, FinishReason, StepReport } from '../engine/protocol.js';

/** Where the gauges read the current occupancy of each model. */
export type OccupancySource = () => { model: string; stats: EngineStats; waitingRequests: number }[];

/** Timings of one finished request. */
export interface RequestTimings {
  model: string;
  /** Admission - arrival. */
  queueSeconds: number | null;
  /** First token - arrival. */
  ttftSeconds: number | null;
  /** Finish - arrival. */
  e2eSeconds: number;
  /** Mean time per output token after the first: (finish - first token) / (tokens - 1). */
  tpotSeconds: number | null;
  finishReasons: FinishReason[];
}

const LATENCY_BUCKETS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80];
const TPOT_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5, 5];
const E2E_BUCKETS = [0.01, 0.05, 0.1, 0.3, 0.5, 0.8, 1, 1.5, 2, 2.5, 5, 10, 15, 20, 30, 40, 50, 60, 120];
const BATCH_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256];
const SLICE_BUCKETS = [1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600];

/** The server's metric registry and the update methods the server calls. */
export class ServerMetrics {
  readonly registry = new Registry();
  private readonly ttft: Histogram<'model'>;
  private readonly tpot: Histogram<'model'>;
  private readonly e2e: Histogram<'model'>;
  private readonly queue: Histogram<'model'>;
  private readonly batchSize: Histogram<'model' | 'phase'>;
  private readonly forward: Histogram<'model' | 'phase'>;
  private readonly promptTokens: Counter<'model'>;
  private readonly generationTokens: Counter<'model'>;
  private readonly success: Counter<'model' | 'finished_reason'>;
  private readonly aborted: Counter<'model'>;
  private readonly failures: Counter<'model' | 'status'>;
  private readonly sliceJobs: Counter<'model' | 'status'>;
  private readonly sliceDuration: Histogram<'model'>;
  private readonly sliceProgress: Gauge<'model'>;

  /**
   * @param occupancy read at scrape time for the running / waiting / KV gauges
   * @param defaults also collect prom-client's process metrics (off in unit tests that make several servers)
   */
  constructor(occupancy: OccupancySource, defaults = true) {
    const registers = [this.registry];
    if (defaults) collectDefaultMetrics({ register: this.registry });
    const hist = <L extends string>(name: string, help: string, buckets: number[], labelNames: L[]) =>
      new Histogram<L>({ name, help, buckets, labelNames, registers });
    this.ttft = hist('sliceserve_time_to_first_token_seconds', 'Time from request arrival to its first generated token.', LATENCY_BUCKETS, ['model']);
    this.tpot = hist('sliceserve_time_per_output_token_seconds', 'Mean time per output token after the first, per request.', TPOT_BUCKETS, ['model']);
    this.e2e = hist('sliceserve_e2e_request_latency_seconds', 'Time from request arrival to its last token.', E2E_BUCKETS, ['model']);
    this.queue = hist('sliceserve_request_queue_time_seconds', 'Time a request waited before entering the running batch.', E2E_BUCKETS, ['model']);
    this.batchSize = hist('sliceserve_batch_size', 'Sequences per forward pass.', BATCH_BUCKETS, ['model', 'phase']);
    this.forward = hist('sliceserve_forward_duration_seconds', 'Duration of one forward pass (prefill or decode step).', LATENCY_BUCKETS, ['model', 'phase']);
    this.promptTokens = new Counter({ name: 'sliceserve_prompt_tokens_total', help: 'Prompt tokens processed.', labelNames: ['model'], registers });
    this.generationTokens = new Counter({ name: 'sliceserve_generation_tokens_total', help: 'Tokens generated.', labelNames: ['model'], registers });
    this.success = new Counter({
      name: 'sliceserve_request_success_total',
      help: 'Finished choices by finish reason.',
      labelNames: ['model', 'finished_reason'],
      registers,
    });
    this.aborted = new Counter({ name: 'sliceserve_request_aborted_total', help: 'Requests cancelled by the client or cut by a shutdown.', labelNames: ['model'], registers });
    this.failures = new Counter({ name: 'sliceserve_request_failure_total', help: 'Requests answered with an error, by HTTP status.', labelNames: ['model', 'status'], registers });
    this.sliceJobs = new Counter({
      name: 'sliceserve_slicing_jobs_total',
      help: 'Slicing jobs by outcome (started, succeeded, failed); model = the sliced model id.',
      labelNames: ['model', 'status'],
      registers,
    });
    this.sliceDuration = hist('sliceserve_slicing_job_duration_seconds', 'Duration of slicing jobs (load, calibration, slicing, session).', SLICE_BUCKETS, ['model']);
    this.sliceProgress = new Gauge({ name: 'sliceserve_slicing_job_progress_ratio', help: 'Progress of slicing jobs, 0..1.', labelNames: ['model'], registers });
    const gauge = (name: string, help: string, read: (o: ReturnType<OccupancySource>[number]) => number) =>
      new Gauge({
        name,
        help,
        labelNames: ['model'],
        registers,
        collect() {
          this.reset();
          for (const o of occupancy()) this.set({ model: o.model }, read(o));
        },
      });
    gauge('sliceserve_num_requests_running', 'Requests in the running batch.', (o) => o.stats.runningRequests);
    gauge('sliceserve_num_requests_waiting', 'Requests waiting to enter the running batch.', (o) => o.waitingRequests);
    gauge('sliceserve_kv_cache_usage_ratio', 'Tokens held in KV caches / KV budget (0..1).', (o) =>
      o.stats.kvCapacityTokens > 0 ? o.stats.kvUsedTokens / o.stats.kvCapacityTokens : 0,
    );
  }

  /** Creates the label sets of a newly served model so that its series show before traffic. */
  addModel(model: string): void {
    for (const c of [this.promptTokens, this.generationTokens, this.aborted]) c.inc({ model }, 0);
    for (const reason of ['stop', 'length']) this.success.inc({ model, finished_reason: reason }, 0);
  }

  /** After a forward pass. */
  observeStep(model: string, step: StepReport): void {
    if (step.batchSize > 0) {
      this.batchSize.observe({ model, phase: step.phase }, step.batchSize);
      this.forward.observe({ model, phase: step.phase }, step.forwardMs / 1000);
    }
    const generated = step.outputs.filter((o) => o.token).length;
    if (generated > 0) this.generationTokens.inc({ model }, generated);
  }

  /** When a request was accepted by its worker. */
  observePrompt(model: string, promptTokens: number): void {
    this.promptTokens.inc({ model }, promptTokens);
  }

  /** When a request finished (all choices). */
  observeRequest(t: RequestTimings): void {
    const model = t.model;
    if (t.queueSeconds !== null) this.queue.observe({ model }, t.queueSeconds);
    if (t.ttftSeconds !== null) this.ttft.observe({ model }, t.ttftSeconds);
    if (t.tpotSeconds !== null) this.tpot.observe({ model }, t.tpotSeconds);
    this.e2e.observe({ model }, t.e2eSeconds);
    for (const reason of t.finishReasons) this.success.inc({ model, finished_reason: reason });
  }

  /** A request cancelled by its client, or cut by a shutdown. */
  observeAbort(model: string): void {
    this.aborted.inc({ model });
  }

  /** A request answered with an error status. */
  observeFailure(model: string, status: number): void {
    this.failures.inc({ model, status: String(status) });
  }

  /** Slicing job life: started, progress, end. */
  sliceStarted(model: string): void {
    this.sliceJobs.inc({ model, status: 'started' });
    this.sliceProgress.set({ model }, 0);
  }
  sliceProgressed(model: string, fraction: number): void {
    this.sliceProgress.set({ model }, fraction);
  }
  sliceEnded(model: string, ok: boolean, seconds: number): void {
    this.sliceJobs.inc({ model, status: ok ? 'succeeded' : 'failed' });
    this.sliceDuration.observe({ model }, seconds);
    if (ok) this.sliceProgress.set({ model }, 1);
  }

  /** Prometheus text exposition. */
  async render(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}
