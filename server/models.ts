/**
 * The served models: each entry is a model worker (engine/model-worker.ts) plus what
 * `/v1/models` shows about it. A dense float model has no parent; a variant derived from it
 * (sliced, quantized, or both) has the dense model's id as parent and root.
 */
import type { ModelWorker } from '../engine/model-worker.js';
import type { ModelInfo, QuantizationInfo, WeightPrecision } from '../engine/protocol.js';
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
  slicing?: { sparsity: number; hidden_size: number; original_hidden_size: number; parameters: number };
  /** How the weights are quantized (docs/quantization.md); absent for float weights. */
  quantization?: QuantizationInfo;
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
      card.slicing = {
        sparsity: m.info.slicing?.sparsity ?? NaN,
        hidden_size: m.info.hiddenSize,
        original_hidden_size: m.info.slicing?.original_hidden_size ?? m.info.originalHiddenSize,
        parameters: m.info.parameters,
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
