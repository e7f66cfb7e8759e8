/**
 * The served models: each entry is a model worker (engine/model-worker.ts) plus what
 * `/v1/models` shows about it. A dense float model has no parent; a variant derived from it
 * (sliced, quantized, or both) has the dense model's id as parent and root.
 */
import type { ModelWorker } from '../engine/model-worker.js';
import type { ModelInfo, QuantizationInfo, WeightPrecision } from '../engine/protocol.js';
import type { SliceQuality } from '../models/types.js';
import type { ChatTemplate } from './chat-template.js';
import { Errors } from './errors.js';

/** A model being served. */
export interface ServedModel {
  id: string;
  /** The dense float model this derives from (sliced and/or quantized); null for that model itself. */
  parent: string | null;
  /** The dense float model's id (its own id for a dense float model). */
  root: string;
  /** Directory of the dense model. */
  path: string;
  /** Unix seconds. */
  created: number;
  worker: ModelWorker;
  info: ModelInfo;
  /** The chat template (`--chat-template`, else the model's own, else its parent's); null: no chat. */
  chatTemplate: ChatTemplate | null;
}

/** Models that are not served yet but will be (slicing jobs queued or running). */
export interface PendingModels {
  /** The job making model `id`, if one is queued or running: its progress (0..1) and start time (unix s, null while queued). */
  pending(id: string): PendingModel | undefined;
  /** Starts serving model `id` if it can be had without computing (a slice another replica cached); its job, or undefined. */
  discover?(id: string): PendingModel | undefined;
}

/** A model on its way: a slicing job's progress, or (`loading`) a model the server loads at startup. */
export interface PendingModel {
  /** 0..1 */
  progress: number;
  /** Unix seconds; null while queued. */
  started_at: number | null;
  /** True for a model named on the command line that is still loading (no progress to report). */
  loading?: boolean;
}

/** Seconds a client is told to wait for a model being sliced: the job's remaining time at its pace so far, 1..60 (5 when unknown). */
export function retryAfterSeconds(job: { progress: number; started_at: number | null }, nowS = Date.now() / 1000): number {
  if (job.started_at === null || job.progress <= 0) return 5;
  const elapsed = Math.max(0, nowS - job.started_at);
  return Math.min(60, Math.max(1, Math.ceil((elapsed * (1 - job.progress)) / job.progress)));
}

/**
 * The served model `id`.
 * @throws ApiError 503 `model_loading` with Retry-After while a slicing job makes it (startup
 *   variants, POST /v1/slices jobs, and a slice found in the shared cache, whose loading the
 *   request starts), else 404 `model_not_found`
 */
export function lookupModel(models: ModelRegistry, pending: PendingModels, id: string): ServedModel {
  if (models.has(id)) return models.get(id);
  const job = pending.pending(id) ?? pending.discover?.(id);
  if (job) throw Errors.modelLoading(id, Math.round(job.progress * 100), retryAfterSeconds(job), job.loading ? 'the server is starting and loads it' : undefined);
  throw Errors.modelNotFound(id);
}

/** `/v1/models` entry (OpenAI `model` object plus vLLM's `root`, `parent`, `max_model_len`). */
export interface ModelCard {
  id: string;
  object: 'model';
  created: number;
  owned_by: 'sliceserve';
  root: string;
  parent?: string;
  max_model_len: number;
  /** Weight precision: float32 / float16 (the graph dtype) or the quantization preset, int8 / int4. */
  precision: WeightPrecision;
  slicing?: {
    sparsity: number;
    hidden_size: number;
    original_hidden_size: number;
    parameters: number;
    /** Perplexity of this slice on the held-out sample, and of its dense model (null when not measured). */
    perplexity: number | null;
    dense_perplexity: number | null;
    held_out: Omit<QualityCard, 'perplexity' | 'dense_perplexity'> | null;
  };
  /** How the weights are quantized (docs/quantization.md); absent for float weights. */
  quantization?: QuantizationInfo;
}

/** The quality cost of a slice as the API shows it (models/types.ts SliceQuality). */
export interface QualityCard {
  perplexity: number;
  dense_perplexity: number;
  /** Held-out file (basename), windows, tokens per window, predicted tokens. */
  file: string;
  windows: number;
  seq_len: number;
  tokens: number;
}

/** The API form of a slice's recorded quality, or null when it was not measured. */
export function qualityCard(q: SliceQuality | undefined): QualityCard | null {
  return q ? { perplexity: q.perplexity, dense_perplexity: q.dense_perplexity, file: q.file, windows: q.windows, seq_len: q.seq_len, tokens: q.tokens } : null;
}

/** Map of model id -> served model. */
export class ModelRegistry {
  private readonly models = new Map<string, ServedModel>();

  /** Adds a model; @throws Error if the id is taken. */
  add(model: ServedModel): void {
    if (this.models.has(model.id)) throw new Error(`model id ${model.id} is already served`);
    this.models.set(model.id, model);
  }

  has(id: string): boolean {
    return this.models.has(id);
  }

  /** @throws ApiError 404 (model_not_found) */
  get(id: string): ServedModel {
    const m = this.models.get(id);
    if (!m) throw Errors.modelNotFound(id);
    return m;
  }

  list(): ServedModel[] {
    return [...this.models.values()];
  }

  /** The `/v1/models` card of a model. */
  static card(m: ServedModel): ModelCard {
    const card: ModelCard = {
      id: m.id,
      object: 'model',
      created: m.created,
      owned_by: 'sliceserve',
      root: m.root,
      max_model_len: m.info.maxContext,
      precision: m.info.precision,
    };
    if (m.parent !== null) card.parent = m.parent;
    if (m.info.slicing) {
      const quality = qualityCard(m.info.slicing.quality);
      card.slicing = {
        sparsity: m.info.slicing?.sparsity ?? NaN,
        hidden_size: m.info.hiddenSize,
        original_hidden_size: m.info.slicing?.original_hidden_size ?? m.info.originalHiddenSize,
        parameters: m.info.parameters,
        perplexity: quality?.perplexity ?? null,
        dense_perplexity: quality?.dense_perplexity ?? null,
        held_out: quality ? { file: quality.file, windows: quality.windows, seq_len: quality.seq_len, tokens: quality.tokens } : null,
      };
    }
    if (m.info.quantization) card.quantization = m.info.quantization;
    return card;
  }

  /** Stops every worker. */
  async closeAll(): Promise<void> {
    await Promise.all(this.list().map((m) => m.worker.close()));
  }
}
