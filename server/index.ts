/**
 * The SliceServe server: starts the HTTP/WebSocket front end at once (liveness answers while
 * models load), a worker per dense model, then the startup slicing jobs (one sliced variant
 * per dense model and sparsity); readiness turns on when they are all settled. Graceful
 * shutdown: refuse new work (503), let in-flight requests finish up to a timeout, end the ones
 * still running cleanly (finish_reason 'abort', or a 503 before a response started), then stop
 * the workers.
 */
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { createServer, type Server } from 'node:http';
import type { Logger } from 'pino';
import type { WebSocketServer } from 'ws';
import { ModelWorker } from '../engine/model-worker.js';
import type { WorkerOptions } from '../engine/protocol.js';
import { hugePageAdvice, hugePageStatus } from '../runtime/huge-pages.js';
import { createApp, hasApiKey } from './app.js';
import { ChatTemplate } from './chat-template.js';
import { parseBodyLimit } from './body-limit.js';
import type { CompletionRun } from './completion-run.js';
import { answerClientErrors } from './errors.js';
import { ServerMetrics } from './metrics.js';
import { ModelRegistry, type PendingModels } from './models.js';
import type { QuantChoice, QuantRotation } from '../slicer/quantize.js';
import { quantizedModelId } from '../slicer/quantize.js';
import { SliceJobManager, type StartWorker, checkStartupSparsities, slicedModelId } from './slices.js';
import { attachStream, closeReason } from './ws.js';

/** Server options (the `serve` command maps flags and env vars onto these). */
export interface ServerOptions {
  /** Dense model directories. */
  models: string[];
  /** Sparsities sliced at startup for each dense model (models that are sliced already are served as they are). */
  sparsities: number[];
  /**
   * Weight precisions each model (dense and every sparsity) is served at: 'none' (float
   * weights, the graph dtype), 'int8', 'int4' (slicer/quantize.ts). Default ['none'].
   */
  quantize?: QuantChoice[];
  /** Residual rotation of a slice before quantizing (default 'auto': random for slices). */
  quantRotation?: QuantRotation;
  /**
   * The sparsities were asked for explicitly (`--sparsity`): with no dense model among `models`
   * to slice, startup fails instead of serving without them.
   */
  sparsitiesExplicit?: boolean;
  /** Calibration text for slicing (startup and on demand). */
  calibrationFile: string;
  calWindows?: number;
  /** Held-out text (not the calibration text) on which each slice's and its dense model's perplexity are recorded. */
  heldOutFile?: string;
  /** Held-out windows (slicer default 16; 0 = not measured). */
  heldOutWindows?: number;
  /** Slicer cache directory. */
  cacheDir?: string;
  host: string;
  /** 0 = any free port. */
  port: number;
  device?: WorkerOptions['device'];
  /** Graph precision of every model (default float32). */
  dtype?: WorkerOptions['dtype'];
  /** onnxruntime intra-op threads per model worker. */
  threads?: number;
  /** Sequences per forward pass at most. */
  maxBatchSize: number;
  /** Waiting requests per model at most; more get 429. */
  maxQueue: number;
  /** KV budget per model in tokens (default maxBatchSize x context). */
  kvCacheTokens?: number;
  /** Positions one prefill step computes at most; longer prompts are fed in chunks (default: no limit). */
  maxPrefillTokens?: number;
  /** Require `Authorization: Bearer <apiKey>` on every endpoint but /health (and /metrics with `metricsPublic`). */
  apiKey?: string;
  /** Serve /metrics without the API key (`--metrics-public`). */
  metricsPublic?: boolean;
  /** Also serve vLLM's `vllm:*` series on /metrics, not only on /metrics/vllm (`--metrics-include-vllm`). */
  metricsIncludeVllm?: boolean;
  /** A Jinja chat template file that every model answers chat requests with (`--chat-template`). */
  chatTemplateFile?: string;
  /** JSON body limit: bytes, or a number with b, kb, mb or gb (e.g. '1mb'; server/body-limit.ts). */
  bodyLimit: string;
  logger: Logger;
  /** Collect prom-client's process metrics (default true). */
  defaultMetrics?: boolean;
}

/** A running server. */
export interface SliceServer {
  /** `http://host:port` */
  url: string;
  port: number;
  /**
   * Resolves when the startup models are served. Rejects with a one-line message when a dense
   * model fails to load or a startup sparsity cannot be served (d' = 0, two sparsities with the
   * same d', a failed slicing job); the caller then shuts the server down.
   */
  ready: Promise<void>;
  models: ModelRegistry;
  metrics: ServerMetrics;
  jobs: SliceJobManager;
  /**
   * Graceful stop: 503 for new work, wait for in-flight requests up to `timeoutMs`, end the rest
   * with finish_reason 'abort' (503 when their response has not started), stop workers.
   */
  shutdown(timeoutMs?: number): Promise<void>;
}

/**
 * Starts the server; the returned promise resolves once it listens.
 * @throws RangeError (rejects) when `bodyLimit` is not a size {@link parseBodyLimit} accepts
 */
export async function startServer(opts: ServerOptions): Promise<SliceServer> {
  const { logger } = opts;
  parseBodyLimit(opts.bodyLimit); // throws on a limit body-parser could not apply
  const chatTemplate = opts.chatTemplateFile ? readChatTemplate(opts.chatTemplateFile) : undefined;
  const models = new ModelRegistry();
  const metrics = new ServerMetrics(
    () => models.list().map((m) => ({ model: m.id, stats: m.worker.stats, waitingRequests: m.worker.waitingRequests })),
    opts.defaultMetrics ?? true,
  );
  const startWorker: StartWorker = (spec, onProgress, signal, onLog) =>
    ModelWorker.start(
      {
        model: spec,
        device: opts.device,
        dtype: opts.dtype,
        threads: opts.threads,
        maxBatchSize: opts.maxBatchSize,
        kvCacheTokens: opts.kvCacheTokens,
        maxPrefillTokens: opts.maxPrefillTokens,
      },
      onProgress,
      signal,
      undefined,
      onLog,
    ).then((worker) => watch(worker));
  /** Workers closed because another startup model failed to load (their exit is expected). */
  const discarded = new Set<ModelWorker>();
  const watch = (worker: ModelWorker): ModelWorker => {
    worker.on('step', (step) => metrics.observeStep(worker.info.id, step));
    worker.on('log', (m: { level: 'info' | 'warn'; msg: string }) => logger[m.level]({ model: worker.info.id }, m.msg));
    worker.on('exit', (message: string) => {
      if (state !== 'stopping' && !discarded.has(worker)) logger.error({ model: worker.info.id, message }, 'model worker ended');
    });
    return worker;
  };
  const jobs = new SliceJobManager({
    models,
    metrics,
    logger,
    startWorker,
    calibrationFile: opts.calibrationFile,
    calWindows: opts.calWindows,
    cacheDir: opts.cacheDir,
    quantRotation: opts.quantRotation,
    heldOutFile: opts.heldOutFile,
    heldOutWindows: opts.heldOutWindows,
    chatTemplate,
  });
  const precisions: QuantChoice[] = [...new Set<QuantChoice>(opts.quantize ?? ['none'])];

  let state: 'loading' | 'ready' | 'stopping' = 'loading';
  // While the server starts, the models its command line names (dense ids are directory names)
  // and their startup variants are a retryable 503 model_loading, not a 404: they will be served.
  const startupIds = new Set(
    opts.models.flatMap((dir) => [path.basename(dir), ...opts.sparsities.map((s) => slicedModelId(path.basename(dir), s))].flatMap((id) => precisions.map((q) => quantizedModelId(id, q)))),
  );
  const pending: PendingModels = {
    pending: (id) => jobs.pending(id) ?? (state === 'loading' && startupIds.has(id) ? { progress: 0, started_at: null, loading: true } : undefined),
    discover: (id) => jobs.discover(id),
  };
  const runs = new Set<CompletionRun>();
  let drained: (() => void) | null = null;
  const track = (run: CompletionRun) => {
    runs.add(run);
    return () => {
      runs.delete(run);
      if (runs.size === 0) drained?.();
    };
  };
  const ctx = {
    logger,
    metrics,
    models,
    jobs,
    apiKey: opts.apiKey,
    bodyLimit: opts.bodyLimit,
    metricsPublic: opts.metricsPublic,
    metricsIncludeVllm: opts.metricsIncludeVllm,
    maxQueue: opts.maxQueue,
    maxBatchSize: opts.maxBatchSize,
    pending,
    track,
    state: () => state,
  };
  const app = createApp(ctx);
  // Node's own 400 for an HTTP/1.1 request without Host has no body: app.ts answers it instead.
  const server: Server = createServer({ requireHostHeader: false }, app);
  answerClientErrors(server, logger);
  const wss: WebSocketServer = attachStream(server, {
    ...ctx,
    authorize: (req) => hasApiKey(req, opts.apiKey, true),
    isStopping: () => state === 'stopping',
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const url = `http://${opts.host.includes(':') ? `[${opts.host}]` : opts.host}:${port}`;
  logger.info({ url }, 'listening');
  const pages = hugePageStatus();
  logger.info({ transparent_hugepages: pages.transparentHugePages, malloc_hugetlb: pages.mallocHugetlb, huge_pages: pages.active }, hugePageAdvice(pages));

  const ready = (async () => {
    // Every dense model at every precision; quantized ones go through the quantized cache. The
    // first load to fail cancels the others (a quantization of another model can take minutes);
    // every load has settled, its worker thread gone or started, before the error goes on.
    const cancel = new AbortController();
    let firstFailure: Error | null = null;
    const loads = await Promise.allSettled(
      opts.models.flatMap((dir) =>
        precisions.map(async (q) => {
          try {
            const spec = q === 'none' ? { path: dir } : { path: dir, quantize: { preset: q, rotation: opts.quantRotation, cacheDir: opts.cacheDir } };
            const worker = await startWorker(spec, ({ phase, fraction }) => logger.debug({ model: dir, quantize: q, phase, fraction }, 'loading'), cancel.signal);
            return { dir, worker };
          } catch (err) {
            const failure = new Error(`could not load model ${dir}${q === 'none' ? '' : ` with --quantize ${q}`}: ${err instanceof Error ? err.message : String(err)}`);
            if (!cancel.signal.aborted) {
              firstFailure = failure;
              cancel.abort();
            }
            throw failure;
          }
        }),
      ),
    );
    if (firstFailure) {
      // The workers that did start are closed before the error reaches the caller, which may
      // exit the process: a worker left inside onnxruntime would abort it natively.
      const started = loads.flatMap((l) => (l.status === 'fulfilled' ? [l.value.worker] : []));
      for (const w of started) discarded.add(w);
      await Promise.allSettled(started.map((w) => w.close()));
      throw firstFailure;
    }
    const dense = loads.map((l) => (l as PromiseFulfilledResult<{ dir: string; worker: ModelWorker }>).value);
    for (const { dir, worker } of dense) {
      // A model sliced offline (`slice --out DIR`) is served as it is, with its parent and slicing
      // info; a quantized variant's parent is its float model.
      const { id } = worker.info;
      const slicing = worker.info.slicing;
      const root = slicing ? (slicing.source_model ?? slicedParentId(worker.info.root)) : worker.info.root;
      const parent = id === root ? null : root;
      const chat = ChatTemplate.forModel(id, worker.info.tokenizerConfig, chatTemplate ?? null, null, worker.info);
      models.add({ id, parent, root, path: dir, created: Math.floor(Date.now() / 1000), worker, info: worker.info, chatTemplate: chat });
      metrics.addModel(id);
      logger.info(
        { model: id, device: worker.info.device, precision: worker.info.precision, max_context: worker.info.maxContext, parameters: worker.info.parameters, ...(parent ? { parent } : {}), ...(slicing ? { sparsity: slicing.sparsity } : {}), chat_template: chat?.origin ?? null },
        'model ready',
      );
      if (chat?.parseError) logger.warn({ model: id }, `${chat.parseError}; chat requests to it get a 400 until a --chat-template is given`);
    }
    // One entry per dense model directory to slice (its float id and width), whatever its precisions.
    const roots = [...new Map(dense.filter(({ worker }) => worker.info.slicing === null).map(({ dir, worker }) => [dir, { id: worker.info.root, path: dir, hidden: worker.info.originalHiddenSize }])).values()];
    if (opts.sparsitiesExplicit && opts.sparsities.length > 0 && roots.length === 0) {
      throw new Error(`--sparsity ${opts.sparsities.join(', ')}: every --model is sliced already (${dense.map(({ worker }) => worker.info.id).join(', ')}); pass a dense model to slice, or drop --sparsity`);
    }
    // A startup variant that cannot be served stops the server (as a model named on vLLM's
    // command line does), before any slicing starts when the width alone rules it out.
    for (const r of roots) checkStartupSparsities(r.id, r.hidden, opts.sparsities);
    // As vLLM refuses a max_model_len its KV cache cannot hold: a full-length request could
    // never be admitted, while /v1/models advertises it.
    for (const { worker } of dense) {
      const context = worker.info.maxContext;
      if (opts.kvCacheTokens !== undefined && opts.kvCacheTokens < context) {
        throw new Error(`--kv-cache-tokens ${opts.kvCacheTokens} is below the context length ${context} of ${worker.info.id}: a request of full length could never be admitted; pass ${context} or more`);
      }
    }
    const startup = roots.flatMap((r) => opts.sparsities.flatMap((s) => precisions.map((q) => jobs.enqueue({ id: r.id, path: r.path }, s, q))));
    await jobs.idle();
    const failed = startup.find((job) => job.status === 'failed');
    if (failed && ctx.state() !== 'stopping') throw new Error(`startup model ${failed.model} could not be served: ${failed.error?.message ?? 'slicing failed'}`);
    if (state !== 'loading') return; // stopping: not ready, and not to be logged as such
    state = 'ready';
    logger.info({ models: models.list().map((m) => m.id) }, 'ready');
  })();
  ready.catch(() => undefined);

  const shutdown = async (timeoutMs = 30_000): Promise<void> => {
    if (state === 'stopping') return;
    state = 'stopping';
    logger.info({ in_flight: runs.size, timeout_ms: timeoutMs }, 'shutting down');
    jobs.stop();
    if (runs.size > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, timeoutMs);
        drained = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    // Requests still running are cut: each ends its response (final SSE chunk with 'abort' and
    // [DONE], a 503, a WebSocket `done`); wait briefly for those last writes before closing.
    for (const run of [...runs]) run.abort();
    if (runs.size > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 1000);
        drained = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    for (const client of wss.clients) client.close(1001, closeReason(1001));
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
    await ready.catch(() => undefined);
    await jobs.idle();
    await models.closeAll();
    logger.info('stopped');
  };

  return { url, port, ready, models, metrics, jobs, shutdown };
}

/**
 * Reads `--chat-template <file>` once at startup.
 * @throws Error (one line naming the flag and the file) when it is unreadable or does not parse
 */
function readChatTemplate(file: string): { source: string; file: string } {
  const template = ChatTemplate.fromFile(file, {});
  return { source: template.source, file };
}

/** The dense parent of an offline slice that does not record it: the id without `-sliced-<sparsity>`, or the id itself. */
function slicedParentId(id: string): string {
  const m = /^(.+)-sliced-[0-9.]+$/.exec(id);
  return m ? m[1] : id;
}
