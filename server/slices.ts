/**
 * Slicing on demand: `POST /v1/slices {"model": "<dense id>", "sparsity": 0.3}` queues a job
 * that slices the dense model with SliceGPT (Ashkboos et al. 2024) and starts serving the
 * result as `<dense id>-sliced-<sparsity>`; with `"quantize": "int8" | "int4"` the slice is then
 * quantized (slicer/quantize.ts) and served as `<dense id>-sliced-<sparsity>-<int8|int4>`
 * (a quantized dense model slices at its own precision unless `quantize` says otherwise).
 * Jobs run one at a time, each inside the new model's own worker thread (engine/worker.ts), so
 * serving never stalls; a failed job reports its error and everything else keeps serving.
 * Startup variants (`--sparsity` x `--quantize`) are jobs too.
 *
 * Replicas on one cache directory share slices: a job takes the cache lock of its model
 * (server/cache-lock.ts) before slicing, so that replicas asked for the same slice at once
 * compute it once and the others load it from the cache; and a request for a sliced model that
 * this replica does not serve but whose artifact another replica left in the cache starts a job
 * that loads it ({@link SliceJobManager.discover}).
 */
import { createHash, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import { z } from 'zod';
import type { LogListener, ModelWorker, ProgressListener } from '../engine/model-worker.js';
import type { WorkerModelSpec } from '../engine/protocol.js';
import { acquireSliceLock } from './cache-lock.js';
import { ChatTemplate } from './chat-template.js';
import { Errors } from './errors.js';
import type { ServerMetrics } from './metrics.js';
import { type ModelRegistry, type QualityCard, qualityCard } from './models.js';
import { parseWith } from './protocol.js';
import { QUANT_CHOICES, QUANT_ROTATIONS, quantizedModelId, type QuantChoice, type QuantRotation } from '../slicer/quantize.js';
import { largestUsableSparsity, slicedWidth } from '../slicer/width.js';

/** Body of `POST /v1/slices`. */
export const sliceRequestSchema = z.object({
  model: z.string().min(1),
  sparsity: z.number().gt(0).lt(1),
  cal_windows: z.number().int().min(1).max(4096).nullish(),
  /** Weight precision of the slice: 'none' (float), 'int8', 'int4'; default the model's own. */
  quantize: z.enum(QUANT_CHOICES as [QuantChoice, ...QuantChoice[]], { message: `must be one of ${QUANT_CHOICES.map((c) => `"${c}"`).join(', ')} ("none" = float weights)` }).nullish(),
  /** Residual rotation before quantizing (default the server's --quant-rotation). */
  quant_rotation: z.enum(QUANT_ROTATIONS as [QuantRotation, ...QuantRotation[]], { message: `must be one of ${QUANT_ROTATIONS.map((c) => `"${c}"`).join(', ')}` }).nullish(),
});

/** The `--quantize` choice of a served model's precision (float dtypes are 'none'). */
export function quantChoiceOf(precision: string): QuantChoice {
  return precision === 'int8' || precision === 'int4' ? precision : 'none';
}

/** State of a slicing job (`GET /v1/slices/<id>`). */
export interface SliceJob {
  id: string;
  object: 'slice_job';
  /** Id of the sliced model (served once the job succeeded). */
  model: string;
  /** Dense model it is sliced from. */
  parent: string;
  sparsity: number;
  /** Weight precision of the slice: 'none' (float), 'int8', 'int4'. */
  quantize: QuantChoice;
  status: 'queued' | 'running' | 'succeeded' | 'failed';
  /** 0..1 */
  progress: number;
  /** Last phase reported: 'load', then the slicer's phases; 'loaded from cache' when the slice came from the cache. */
  phase: string | null;
  /** Once succeeded: the slice's and the dense model's perplexity on the held-out sample (null when not measured). */
  quality: QualityCard | null;
  error: { message: string } | null;
  /** Unix seconds. */
  created_at: number;
  started_at: number | null;
  finished_at: number | null;
}

/** Starts a worker for a model spec (engine/model-worker.ts `ModelWorker.start`, bound to the server's options). */
export type StartWorker = (spec: WorkerModelSpec, onProgress: ProgressListener, signal: AbortSignal, onLog?: LogListener) => Promise<ModelWorker>;

/** Options of the job manager. */
export interface SliceJobOptions {
  models: ModelRegistry;
  metrics: ServerMetrics;
  logger: Logger;
  startWorker: StartWorker;
  /** Calibration text (required to slice). */
  calibrationFile: string;
  calWindows?: number;
  cacheDir?: string;
  /** Held-out text on which each slice's and its dense model's perplexity are measured. */
  heldOutFile?: string;
  /** Held-out windows (0 = not measured). */
  heldOutWindows?: number;
  /** `--chat-template` (source and file), which every model answers chat with. */
  chatTemplate?: { source: string; file: string };
  /** Residual rotation before quantizing a slice (default 'auto'). */
  quantRotation?: QuantRotation;
}

/** What a job slices: the dense float model (id and directory) and its width. */
export interface SliceSource {
  /** Id of the dense float model (the job's parent). */
  id: string;
  /** Its directory. */
  path: string;
}

/** A queued job with what it needs to run. */
interface QueuedJob {
  job: SliceJob;
  source: SliceSource;
  calWindows?: number;
  rotation?: QuantRotation;
}

/** The sliced model's id: `<dense id>-sliced-<sparsity>` (the slicer names it the same way). */
export function slicedModelId(denseId: string, sparsity: number): string {
  return `${denseId}-sliced-${sparsity}`;
}

/** The server slices with the slicer's default round interval. */
const ROUND_INTERVAL = 8;

/** d' of a sparsity for a hidden size, or null when the sparsity leaves no columns. */
export function widthOrNull(sparsity: number, hiddenSize: number): number | null {
  try {
    return slicedWidth(sparsity, hiddenSize, ROUND_INTERVAL);
  } catch {
    return null;
  }
}

/**
 * The largest sparsity, to three decimals (rounded down), that still leaves columns of
 * `hiddenSize`, or null when none does (a hidden size below the round interval).
 */
export function maxUsableSparsity(hiddenSize: number): number | null {
  return largestUsableSparsity(hiddenSize, ROUND_INTERVAL);
}

/**
 * Why `sparsity` cannot slice model `id` (hidden size `hiddenSize`) and what to use instead;
 * for sparsities whose d' is 0.
 */
export function noWidthReason(id: string, sparsity: number, hiddenSize: number): string {
  const max = maxUsableSparsity(hiddenSize);
  const fix = max === null ? `${id} cannot be sliced (its hidden size is below the round interval ${ROUND_INTERVAL})` : `the largest usable sparsity is ${max}`;
  return `sparsity ${sparsity} leaves no columns of ${id}'s hidden size ${hiddenSize} (d' = floor((1 - ${sparsity}) * ${hiddenSize} / ${ROUND_INTERVAL}) * ${ROUND_INTERVAL} = 0); ${fix}`;
}

/**
 * Checks the startup sparsities of dense model `id`: each must leave a d' > 0, and no two may
 * give the same d' (they would be the same model, as POST /v1/slices answers with 409).
 * @throws Error with a one-line message naming the `--sparsity` values and the fix
 */
export function checkStartupSparsities(id: string, hiddenSize: number, sparsities: readonly number[]): void {
  const seen = new Map<number, number>();
  for (const s of sparsities) {
    const width = widthOrNull(s, hiddenSize);
    if (width === null) throw new Error(`--sparsity ${s} cannot slice ${id}: ${noWidthReason(id, s, hiddenSize)}`);
    const twin = seen.get(width);
    if (twin !== undefined) {
      throw new Error(`--sparsity ${twin} and --sparsity ${s} both slice ${id} to d' = ${width}, the same model; keep one of them`);
    }
    seen.set(width, s);
  }
}

/** Sliced variants (served, queued or running) per dense model that POST /v1/slices accepts. */
export const MAX_SLICED_VARIANTS = 8;

/**
 * Finished jobs (succeeded or failed) kept for `GET /v1/slices`; older ones are forgotten, so
 * that a client retrying a failing request cannot grow the server's memory without bound.
 */
export const MAX_FINISHED_JOBS = 256;

/** Queue of slicing jobs, run one at a time. */
export class SliceJobManager {
  private readonly jobs = new Map<string, SliceJob>();
  private readonly queue: QueuedJob[] = [];
  private running: Promise<void> | null = null;
  private stopped = false;
  private readonly abort = new AbortController();
  private readonly settledListeners: (() => void)[] = [];

  constructor(private readonly opts: SliceJobOptions) {}

  /**
   * Validates a `POST /v1/slices` body and queues a job.
   * @returns the new job, or the queued/running job for the same model
   * @throws ApiError 400 (bad fields, a sliced parent, a sparsity that leaves d' = 0), 404 (unknown model), 409 (model already
   *   served, or served or being sliced at the same width d' and precision under another sparsity)
   */
  submit(body: unknown): { job: SliceJob; created: boolean } {
    const req = parseWith(sliceRequestSchema, body);
    const served = this.opts.models.get(req.model);
    if (served.info.slicing) throw Errors.invalid(`Model '${req.model}' is itself sliced; slice its dense model '${served.root}'.`, 'model');
    const root = served.root;
    const hidden = served.info.originalHiddenSize;
    const quantize = req.quantize ?? quantChoiceOf(served.info.precision);
    const width = widthOrNull(req.sparsity, hidden);
    if (width === null) throw Errors.invalid(`${capitalize(noWidthReason(root, req.sparsity, hidden))}.`, 'sparsity');
    const model = quantizedModelId(slicedModelId(root, req.sparsity), quantize);
    const pending = [...this.jobs.values()].find((j) => j.model === model && (j.status === 'queued' || j.status === 'running'));
    if (pending) return { job: pending, created: false };
    if (this.opts.models.has(model)) throw Errors.conflict(`Model '${model}' is already served.`, 'sparsity');
    // Sparsities that round to the same width d' give the same model: serve it once (per precision).
    const twin = this.opts.models.list().find((m) => m.root === root && m.info.slicing && m.info.hiddenSize === width && quantChoiceOf(m.info.precision) === quantize);
    if (twin) throw Errors.conflict(`Model '${twin.id}' already serves ${root} at the same sliced width d' = ${width}${quantize === 'none' ? '' : ` and precision ${quantize}`}; use it.`, 'sparsity');
    const slicing = [...this.jobs.values()].find(
      (j) => j.parent === root && j.quantize === quantize && (j.status === 'queued' || j.status === 'running') && widthOrNull(j.sparsity, hidden) === width,
    );
    if (slicing) throw Errors.conflict(`Job '${slicing.id}' is already slicing ${root} to the same width d' = ${width} as '${slicing.model}'; poll GET /v1/slices/${slicing.id} and use that model.`, 'sparsity');
    // Each variant holds a worker thread and its weights for the server's lifetime: bound them.
    const variants = this.opts.models.list().filter((m) => m.root === root && m.info.slicing).length + [...this.jobs.values()].filter((j) => j.parent === root && (j.status === 'queued' || j.status === 'running')).length;
    if (variants >= MAX_SLICED_VARIANTS) throw Errors.conflict(`${root} already has ${variants} sliced variants (the limit is ${MAX_SLICED_VARIANTS}); restart the server with the --sparsity values you need.`, 'sparsity');
    if (this.stopped) throw Errors.unavailable('The server is shutting down.', 'shutting_down');
    return { job: this.enqueue({ id: root, path: served.path }, req.sparsity, quantize, { calWindows: req.cal_windows ?? undefined, rotation: req.quant_rotation ?? undefined }), created: true };
  }

  /** Queues a job slicing the dense float model `source` at `sparsity`, then quantizing it (startup variants). */
  enqueue(source: SliceSource, sparsity: number, quantize: QuantChoice = 'none', extra: { calWindows?: number; rotation?: QuantRotation } = {}): SliceJob {
    const job: SliceJob = {
      id: `slice-${randomUUID().replace(/-/g, '').slice(0, 16)}`,
      object: 'slice_job',
      model: quantizedModelId(slicedModelId(source.id, sparsity), quantize),
      parent: source.id,
      sparsity,
      quantize,
      status: 'queued',
      progress: 0,
      phase: null,
      quality: null,
      error: null,
      created_at: Math.floor(Date.now() / 1000),
      started_at: null,
      finished_at: null,
    };
    this.jobs.set(job.id, job);
    // Startup variants are queued once the dense model loaded, which can be after a SIGTERM.
    if (this.stopped) {
      this.cancel(job);
      return job;
    }
    this.queue.push({ job, source, calWindows: extra.calWindows, rotation: extra.rotation });
    this.pump();
    return job;
  }

  /** The queued or running job that makes model `id`, if any (server/models.ts `PendingModels`). */
  pending(id: string): SliceJob | undefined {
    return [...this.jobs.values()].find((j) => j.model === id && (j.status === 'queued' || j.status === 'running'));
  }

  /** Marks a job that never ran as cancelled by the shutdown, and logs it. */
  private cancel(job: SliceJob): void {
    job.status = 'failed';
    job.error = { message: 'cancelled: the server is shutting down' };
    job.finished_at = Math.floor(Date.now() / 1000);
    this.forgetOldJobs();
    this.opts.logger.info({ job: job.id, model: job.model, error: job.error.message }, 'slicing job cancelled by the shutdown');
  }

  /** Drops the oldest finished jobs beyond {@link MAX_FINISHED_JOBS} (the map keeps insertion order). */
  private forgetOldJobs(): void {
    let finished = [...this.jobs.values()].filter((j) => j.finished_at !== null).length;
    for (const [id, j] of this.jobs) {
      if (finished <= MAX_FINISHED_JOBS) break;
      if (j.finished_at === null) continue;
      this.jobs.delete(id);
      finished--;
    }
  }

  /** @throws ApiError 404 */
  get(id: string): SliceJob {
    const job = this.jobs.get(id);
    if (!job) throw Errors.notFound(`Slicing job '${id}'`);
    return job;
  }

  list(): SliceJob[] {
    return [...this.jobs.values()];
  }

  /** Resolves when no job is queued or running. */
  idle(): Promise<void> {
    if (!this.running && this.queue.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.settledListeners.push(resolve));
  }

  /** Refuses new jobs, drops queued ones and stops the running one. */
  stop(): void {
    this.stopped = true;
    this.abort.abort();
    for (const { job } of this.queue.splice(0)) this.cancel(job);
    if (!this.running) for (const resolve of this.settledListeners.splice(0)) resolve();
  }

  private pump(): void {
    if (this.running) return;
    const next = this.queue.shift();
    if (!next) {
      for (const resolve of this.settledListeners.splice(0)) resolve();
      return;
    }
    this.running = this.run(next).finally(() => {
      this.running = null;
      this.pump();
    });
  }

  private async run({ job, source, calWindows, rotation }: QueuedJob): Promise<void> {
    const { models, metrics, logger } = this.opts;
    job.status = 'running';
    job.started_at = Math.floor(Date.now() / 1000);
    const start = performance.now();
    metrics.sliceStarted(job.model);
    logger.info({ job: job.id, model: job.model, sparsity: job.sparsity, quantize: job.quantize }, 'slicing job started');
    let release: (() => Promise<void>) | null = null;
    try {
      if (this.opts.cacheDir) {
        release = await acquireSliceLock(this.opts.cacheDir, job.model, {
          signal: this.abort.signal,
          onWait: () => {
            job.phase = 'waiting for the slice cache lock (another replica is slicing this model)';
            logger.info({ job: job.id, model: job.model }, 'waiting for the slice cache lock: another process is slicing this model');
          },
          onCompromised: (err) => logger.warn({ job: job.id, model: job.model, err: err.message }, 'slice cache lock lost'),
        });
      }
      const worker = await this.opts.startWorker(
        {
          path: source.path,
          id: source.id,
          slice: {
            sparsity: job.sparsity,
            calibrationFile: this.opts.calibrationFile,
            calWindows: calWindows ?? this.opts.calWindows,
            cacheDir: this.opts.cacheDir,
            heldOutFile: this.opts.heldOutFile,
            heldOutWindows: this.opts.heldOutWindows,
          },
          ...(job.quantize === 'none' ? {} : { quantize: { preset: job.quantize, rotation: rotation ?? this.opts.quantRotation, cacheDir: this.opts.cacheDir } }),
        },
        ({ phase, fraction }) => {
          job.phase = phase;
          // Progress stays monotone and below 1 until the sliced model serves.
          job.progress = Math.max(job.progress, Math.min(0.99, fraction));
          metrics.sliceProgressed(job.model, job.progress);
        },
        this.abort.signal,
        ({ level, msg }) => logger[level]({ job: job.id, model: job.model }, msg),
      );
      if (worker.info.id !== job.model) logger.warn({ expected: job.model, got: worker.info.id }, 'sliced model id differs from the expected one');
      if (this.stopped) {
        await worker.close();
        throw new Error('cancelled: the server is shutting down');
      }
      // The float parent's chat template, when it is served (it may be served quantized only).
      const parentTemplate = models.has(source.id) ? models.get(source.id).chatTemplate : null;
      const chatTemplate = ChatTemplate.forModel(job.model, worker.info.tokenizerConfig, this.opts.chatTemplate ?? null, parentTemplate, worker.info);
      models.add({ id: job.model, parent: source.id, root: source.id, path: source.path, created: Math.floor(Date.now() / 1000), worker, info: { ...worker.info, id: job.model }, chatTemplate });
      metrics.addModel(job.model);
      job.status = 'succeeded';
      job.progress = 1;
      job.quality = qualityCard(worker.info.slicing?.quality);
      metrics.sliceEnded(job.model, true, (performance.now() - start) / 1000);
      logger.info({ job: job.id, model: job.model, seconds: (performance.now() - start) / 1000 }, 'slicing job succeeded');
    } catch (err) {
      job.status = 'failed';
      job.error = { message: err instanceof Error ? err.message : String(err) };
      metrics.sliceEnded(job.model, false, (performance.now() - start) / 1000);
      if (this.stopped) logger.info({ job: job.id, model: job.model, error: job.error.message }, 'slicing job cancelled by the shutdown');
      else logger.error({ job: job.id, model: job.model, error: job.error.message }, 'slicing job failed');
    } finally {
      job.finished_at = Math.floor(Date.now() / 1000);
      this.forgetOldJobs();
      await release?.().catch((err: Error) => logger.warn({ model: job.model, err: err.message }, 'could not release the slice cache lock'));
    }
  }

  /**
   * Starts serving sliced model `id` when another replica left it in the shared cache: `id` is
   * `<served dense id>-sliced-<sparsity>` (or that with `-int8` / `-int4`), and the cache holds an artifact of it made with this
   * server's calibration text and window count. The job loads it (the slicer finds it by its
   * key); nothing is recomputed for a request.
   * @returns the queued job, or undefined when `id` is not such a model (then it is unknown)
   */
  discover(id: string): SliceJob | undefined {
    const cacheDir = this.opts.cacheDir;
    const m = /^(.+)-sliced-([0-9.]+)(?:-(int8|int4))?$/.exec(id);
    if (!cacheDir || !m || this.stopped || !this.opts.models.has(m[1])) return undefined;
    const sparsity = Number(m[2]);
    const quantize: QuantChoice = (m[3] as QuantChoice | undefined) ?? 'none';
    if (quantizedModelId(slicedModelId(m[1], sparsity), quantize) !== id) return undefined;
    if (!this.cachedArtifact(cacheDir, id)) return undefined;
    try {
      const { job } = this.submit({ model: m[1], sparsity, quantize });
      this.opts.logger.info({ job: job.id, model: id }, 'serving a slice found in the shared cache');
      return job;
    } catch {
      return undefined; // not sliceable here (limits, a twin width): an unknown model
    }
  }

  /** Whether the cache holds an artifact of `id` calibrated as this server calibrates. */
  private cachedArtifact(cacheDir: string, id: string): boolean {
    let names: string[];
    try {
      // Entries are `<id>-<16 hex digits of the key>` (slicer/index.ts, slicer/quantize.ts): not `<id>-int8-<key>`.
      names = fs.readdirSync(cacheDir).filter((n) => n.length === id.length + 17 && n.startsWith(`${id}-`) && /^[0-9a-f]{16}$/.test(n.slice(id.length + 1)));
    } catch {
      return false;
    }
    const windows = this.opts.calWindows ?? 128;
    return names.some((n) => {
      try {
        const slicing = JSON.parse(fs.readFileSync(path.join(cacheDir, n, 'config.json'), 'utf8')).sliceserve;
        return slicing?.calibration?.sha256 === this.calibrationHash() && slicing.calibration.windows === windows;
      } catch {
        return false;
      }
    });
  }

  private calibrationSha256: string | null = null;

  /** sha256 of the calibration file (as the slicer records it), computed once. */
  private calibrationHash(): string {
    this.calibrationSha256 ??= createHash('sha256').update(fs.readFileSync(this.opts.calibrationFile)).digest('hex');
    return this.calibrationSha256;
  }
}

function capitalize(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}
