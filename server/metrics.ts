/**
 * Prometheus metrics (prom-client), two sets from the same observations, in two registries:
 *
 * - `GET /metrics` ({@link ServerMetrics.registry}): `sliceserve_*`, with base units (seconds),
 *   a `model` label on every series so that a dense model and its sliced variants sit side by
 *   side, and what vLLM has no series for (batch size and forward-pass duration per phase,
 *   aborted and failed requests by status, slicing jobs), plus the process metrics. Kept
 *   unchanged: existing dashboards, alerts and the load tests read them. `promtool check
 *   metrics` accepts this scrape without a warning.
 * - `GET /metrics/vllm` ({@link ServerMetrics.vllmRegistry}): `vllm:*`, the names, types and
 *   labels (`model_name`, plus `engine="0"`) of vLLM v1's PrometheusStatLogger
 *   (vllm/v1/metrics/loggers.py), with its bucket boundaries, so that vLLM's Grafana dashboard,
 *   prometheus-adapter rules and autoscaling policies work unchanged once Prometheus scrapes
 *   this path (deploy/prometheus/), or also on /metrics with `--metrics-include-vllm` for scrape
 *   configs that read /metrics only. They have a path of their own because promtool's lint
 *   refuses ':' in metric names (reserved for recording rules), which vLLM's names carry: a
 *   scrape of vLLM itself fails `promtool check metrics` the same way. vLLM's Python client
 *   writes a counter's TYPE line without `_total`; prom-client writes it with, and the samples
 *   (`vllm:prompt_tokens_total`, ...) are the same.
 *
 * Process metrics come from prom-client's defaults, less the three `nodejs_active_*_total`
 * gauges that break Prometheus' naming rule (`promtool check metrics`: "non-counter metrics
 * should not have _total suffix"); their per-type gauges (`nodejs_active_handles`, ...) stay
 * and sum to the same. Gauges are read from the model workers at scrape time.
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
  /** First token - admission (vLLM's prefill time). */
  prefillSeconds: number | null;
  /** Finish - first token (vLLM's decode time). */
  decodeSeconds: number | null;
  /** Finish - admission (vLLM's inference time). */
  inferenceSeconds: number | null;
  promptTokens: number;
  /** Generated tokens over all choices. */
  generationTokens: number;
  finishReasons: FinishReason[];
}

/** Default process metrics whose names end in `_total` although they are gauges. */
const MISNAMED_DEFAULT_GAUGES = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'];

/** vLLM's label names: the served model's name and the engine index (one engine per model here). */
type VllmLabel = 'model_name' | 'engine';

/** vLLM's buckets (vllm/v1/metrics/loggers.py). */
const VLLM_TTFT_BUCKETS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80, 160, 640, 2560];
const VLLM_ITL_BUCKETS = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80];
const VLLM_REQUEST_BUCKETS = [0.3, 0.5, 0.8, 1, 1.5, 2, 2.5, 5, 10, 15, 20, 30, 40, 50, 60, 120, 240, 480, 960, 1920, 7680];
/** vLLM's 1-2-5 token-count buckets up to the largest context it serves; here up to 1M tokens. */
const VLLM_TOKEN_BUCKETS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000, 200000, 500000, 1000000];

const LATENCY_BUCKETS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80];
const TPOT_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5, 5];
const E2E_BUCKETS = [0.01, 0.05, 0.1, 0.3, 0.5, 0.8, 1, 1.5, 2, 2.5, 5, 10, 15, 20, 30, 40, 50, 60, 120];
const BATCH_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256];
const SLICE_BUCKETS = [1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600];

/** The server's metric registry and the update methods the server calls. */
export class ServerMetrics {
  /** `sliceserve_*` and process metrics (GET /metrics). */
  readonly registry = new Registry();
  /** vLLM's `vllm:*` series (GET /metrics/vllm). */
  readonly vllmRegistry = new Registry();
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
  private readonly vllm: {
    ttft: Histogram<VllmLabel>;
    itl: Histogram<VllmLabel>;
    tpot: Histogram<VllmLabel>;
    requestTpot: Histogram<VllmLabel>;
    e2e: Histogram<VllmLabel>;
    queue: Histogram<VllmLabel>;
    inference: Histogram<VllmLabel>;
    prefill: Histogram<VllmLabel>;
    decode: Histogram<VllmLabel>;
    requestPromptTokens: Histogram<VllmLabel>;
    requestGenerationTokens: Histogram<VllmLabel>;
    promptTokens: Counter<VllmLabel>;
    generationTokens: Counter<VllmLabel>;
    success: Counter<VllmLabel | 'finished_reason'>;
  };

  /**
   * @param occupancy read at scrape time for the running / waiting / KV gauges
   * @param defaults also collect prom-client's process metrics (off in unit tests that make several servers)
   */
  constructor(occupancy: OccupancySource, defaults = true) {
    const registers = [this.registry];
    if (defaults) {
      collectDefaultMetrics({ register: this.registry });
      for (const name of MISNAMED_DEFAULT_GAUGES) this.registry.removeSingleMetric(name);
    }
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
    const running = (o: ReturnType<OccupancySource>[number]) => o.stats.runningRequests;
    const waiting = (o: ReturnType<OccupancySource>[number]) => o.waitingRequests;
    const kvUsage = (o: ReturnType<OccupancySource>[number]) => (o.stats.kvCapacityTokens > 0 ? o.stats.kvUsedTokens / o.stats.kvCapacityTokens : 0);
    gauge('sliceserve_num_requests_running', 'Requests in the running batch.', running);
    gauge('sliceserve_num_requests_waiting', 'Requests waiting to enter the running batch.', waiting);
    gauge('sliceserve_kv_cache_usage_ratio', 'Tokens held in KV caches / KV budget (0..1).', kvUsage);

    // vLLM-compatible series.
    const vregisters = [this.vllmRegistry];
    const vgauge = (name: string, help: string, read: (o: ReturnType<OccupancySource>[number]) => number) =>
      new Gauge<VllmLabel>({
        name,
        help,
        labelNames: ['model_name', 'engine'],
        registers: vregisters,
        collect() {
          this.reset();
          for (const o of occupancy()) this.set(vllmLabels(o.model), read(o));
        },
      });
    vgauge('vllm:num_requests_running', 'Number of requests in model execution batches.', running);
    vgauge('vllm:num_requests_waiting', 'Number of requests waiting to be processed.', waiting);
    vgauge('vllm:kv_cache_usage_perc', 'KV-cache usage. 1 means 100 percent usage.', kvUsage);
    const vhist = (name: string, help: string, buckets: number[]) =>
      new Histogram<VllmLabel>({ name, help, buckets, labelNames: ['model_name', 'engine'], registers: vregisters });
    const vcounter = (name: string, help: string) => new Counter<VllmLabel>({ name, help, labelNames: ['model_name', 'engine'], registers: vregisters });
    this.vllm = {
      ttft: vhist('vllm:time_to_first_token_seconds', 'Histogram of time to first token in seconds.', VLLM_TTFT_BUCKETS),
      itl: vhist('vllm:inter_token_latency_seconds', 'Histogram of inter-token latency in seconds.', VLLM_ITL_BUCKETS),
      tpot: vhist('vllm:time_per_output_token_seconds', 'Histogram of time per output token in seconds (the inter-token latencies, as vLLM up to 0.10).', VLLM_ITL_BUCKETS),
      requestTpot: vhist('vllm:request_time_per_output_token_seconds', 'Histogram of time_per_output_token_seconds per request.', VLLM_ITL_BUCKETS),
      e2e: vhist('vllm:e2e_request_latency_seconds', 'Histogram of e2e request latency in seconds.', VLLM_REQUEST_BUCKETS),
      queue: vhist('vllm:request_queue_time_seconds', 'Histogram of time spent in WAITING phase for request.', VLLM_REQUEST_BUCKETS),
      inference: vhist('vllm:request_inference_time_seconds', 'Histogram of time spent in RUNNING phase for request.', VLLM_REQUEST_BUCKETS),
      prefill: vhist('vllm:request_prefill_time_seconds', 'Histogram of time spent in PREFILL phase for request.', VLLM_REQUEST_BUCKETS),
      decode: vhist('vllm:request_decode_time_seconds', 'Histogram of time spent in DECODE phase for request.', VLLM_REQUEST_BUCKETS),
      requestPromptTokens: vhist('vllm:request_prompt_tokens', 'Number of prefill tokens processed.', VLLM_TOKEN_BUCKETS),
      requestGenerationTokens: vhist('vllm:request_generation_tokens', 'Number of generation tokens processed.', VLLM_TOKEN_BUCKETS),
      promptTokens: vcounter('vllm:prompt_tokens_total', 'Number of prefill tokens processed.'),
      generationTokens: vcounter('vllm:generation_tokens_total', 'Number of generation tokens processed.'),
      success: new Counter({
        name: 'vllm:request_success_total',
        help: 'Count of successfully processed requests.',
        labelNames: ['model_name', 'engine', 'finished_reason'],
        registers: vregisters,
      }),
    };
  }

  /** Creates the label sets of a newly served model so that its series show before traffic. */
  addModel(model: string): void {
    for (const c of [this.promptTokens, this.generationTokens, this.aborted]) c.inc({ model }, 0);
    for (const reason of ['stop', 'length']) this.success.inc({ model, finished_reason: reason }, 0);
    const labels = vllmLabels(model);
    for (const c of [this.vllm.promptTokens, this.vllm.generationTokens]) c.inc(labels, 0);
    for (const reason of ['stop', 'length', 'abort']) this.vllm.success.inc({ ...labels, finished_reason: reason }, 0);
  }

  /** After a forward pass. */
  observeStep(model: string, step: StepReport): void {
    if (step.batchSize > 0) {
      this.batchSize.observe({ model, phase: step.phase }, step.batchSize);
      this.forward.observe({ model, phase: step.phase }, step.forwardMs / 1000);
    }
    const generated = step.outputs.filter((o) => o.token).length;
    if (generated > 0) {
      this.generationTokens.inc({ model }, generated);
      this.vllm.generationTokens.inc(vllmLabels(model), generated);
    }
  }

  /** When a request was accepted by its worker. */
  observePrompt(model: string, promptTokens: number): void {
    this.promptTokens.inc({ model }, promptTokens);
    this.vllm.promptTokens.inc(vllmLabels(model), promptTokens);
  }

  /** The time between two consecutive tokens of one choice (vLLM's inter-token latency). */
  observeInterToken(model: string, seconds: number): void {
    const labels = vllmLabels(model);
    this.vllm.itl.observe(labels, seconds);
    this.vllm.tpot.observe(labels, seconds);
  }

  /** When a request finished (all choices). */
  observeRequest(t: RequestTimings): void {
    const model = t.model;
    if (t.queueSeconds !== null) this.queue.observe({ model }, t.queueSeconds);
    if (t.ttftSeconds !== null) this.ttft.observe({ model }, t.ttftSeconds);
    if (t.tpotSeconds !== null) this.tpot.observe({ model }, t.tpotSeconds);
    this.e2e.observe({ model }, t.e2eSeconds);
    for (const reason of t.finishReasons) this.success.inc({ model, finished_reason: reason });
    const labels = vllmLabels(model);
    const v = this.vllm;
    if (t.queueSeconds !== null) v.queue.observe(labels, t.queueSeconds);
    if (t.ttftSeconds !== null) v.ttft.observe(labels, t.ttftSeconds);
    if (t.tpotSeconds !== null) v.requestTpot.observe(labels, t.tpotSeconds);
    if (t.prefillSeconds !== null) v.prefill.observe(labels, t.prefillSeconds);
    if (t.decodeSeconds !== null) v.decode.observe(labels, t.decodeSeconds);
    if (t.inferenceSeconds !== null) v.inference.observe(labels, t.inferenceSeconds);
    v.e2e.observe(labels, t.e2eSeconds);
    v.requestPromptTokens.observe(labels, t.promptTokens);
    v.requestGenerationTokens.observe(labels, t.generationTokens);
    for (const reason of t.finishReasons) v.success.inc({ ...labels, finished_reason: reason });
  }

  /** A request cancelled by its client, or cut by a shutdown (vLLM counts it as finished_reason 'abort'). */
  observeAbort(model: string): void {
    this.aborted.inc({ model });
    this.vllm.success.inc({ ...vllmLabels(model), finished_reason: 'abort' });
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

  /**
   * Prometheus text exposition of one set: ours (`/metrics`), vLLM's (`/metrics/vllm`), or both
   * in one scrape (`/metrics` with `--metrics-include-vllm`, as vLLM serves its series on /metrics).
   */
  async render(set: 'sliceserve' | 'vllm' | 'both' = 'sliceserve'): Promise<{ contentType: string; body: string }> {
    if (set === 'both') return { contentType: this.registry.contentType, body: (await this.registry.metrics()) + (await this.vllmRegistry.metrics()) };
    const registry = set === 'vllm' ? this.vllmRegistry : this.registry;
    return { contentType: registry.contentType, body: await registry.metrics() };
  }
}

/** vLLM's labels of a served model. */
function vllmLabels(model: string): Record<VllmLabel, string> {
  return { model_name: model, engine: '0' };
}
