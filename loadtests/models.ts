/**
 * Which served models a benchmark measures, and their shapes for the FLOPs count.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { inferSliceHead, matmulFlopsPerToken, matmulWeightsPerToken, parameterCount, weightBytesPerToken, type MatmulQuantization, type MatmulShape } from './flops.js';
import type { DecoderConfig } from '../models/config.js';
import { parseDecoderConfig } from '../models/registry.js';
import type { ModelEntry } from './report.js';
import type { ModelCard } from './server-process.js';

/** A weight precision the load test measures: float weights (none), int8 or int4 (serve --quantize). */
export type BenchPrecision = 'none' | 'int8' | 'int4';

/** The precision of a `/v1/models` card (servers before issue 13 serve float weights only). */
export function precisionOf(card: ModelCard): BenchPrecision {
  const p = card.quantization?.method ?? card.precision;
  return p === 'int8' || p === 'int4' ? p : 'none';
}

/** One precision's dense model and sliced variants. */
export interface PrecisionSelection {
  precision: BenchPrecision;
  dense: ModelCard;
  sliced: ModelCard[];
}

/** The models to measure: for each precision, the dense model and the sliced variants. */
export interface Selection {
  /** The dense float model's id (the root of every variant). */
  root: string;
  byPrecision: PrecisionSelection[];
}

/** Sparsities are compared to this tolerance (0.25 vs 0.250000001). */
const EPS = 1e-6;

/**
 * Picks, for each wanted precision, the dense model (no `slicing`, root `denseId` when given,
 * else the root of the first dense entry) and its sliced variants with the wanted sparsities,
 * in the order of `sparsities` (all variants, by sparsity, when null).
 *
 * @param precisions default: float weights only.
 * @throws Error naming what `/v1/models` offers when the dense model, a precision or a sparsity is missing.
 */
export function selectModels(cards: readonly ModelCard[], denseId: string | null, sparsities: readonly number[] | null, precisions: readonly BenchPrecision[] = ['none']): Selection {
  const rootOf = (c: ModelCard) => c.root ?? c.parent ?? c.id;
  const denses = cards.filter((c) => !c.slicing);
  const offered = cards.map((c) => c.id).join(', ') || 'none';
  const first = denseId ? denses.find((c) => rootOf(c) === denseId || c.id === denseId) : denses[0];
  if (!first) throw new Error(`no dense model${denseId ? ` "${denseId}"` : ''} in /v1/models (offered: ${offered})`);
  const root = rootOf(first);
  const byPrecision = precisions.map((precision): PrecisionSelection => {
    const what = precision === 'none' ? '' : ` at ${precision}`;
    const dense = denses.find((c) => rootOf(c) === root && precisionOf(c) === precision);
    if (!dense) throw new Error(`no dense model "${root}"${what} in /v1/models (offered: ${offered}); serve it with --quantize ${precision}`);
    const children = cards.filter((c) => c.slicing && rootOf(c) === root && precisionOf(c) === precision);
    let sliced: ModelCard[];
    if (sparsities === null) {
      sliced = [...children].sort((a, b) => a.slicing!.sparsity - b.slicing!.sparsity);
    } else {
      sliced = sparsities.map((s) => {
        const c = children.find((x) => Math.abs(x.slicing!.sparsity - s) < EPS);
        if (!c) throw new Error(`no variant of "${root}" sliced at sparsity ${s}${what} in /v1/models (offered: ${offered})`);
        return c;
      });
    }
    return { precision, dense, sliced };
  });
  return { root, byPrecision };
}

/** The precisions (none, int8, int4, in that order) at which `/v1/models` serves the dense model and every wanted sparsity. */
export function offeredPrecisions(cards: readonly ModelCard[], denseId: string | null, sparsities: readonly number[]): BenchPrecision[] {
  return (['none', 'int8', 'int4'] as const).filter((p) => hasModels(cards, denseId, sparsities, [p]));
}

/** Whether `/v1/models` already lists the dense model and every wanted sparsity at every wanted precision. */
export function hasModels(cards: readonly ModelCard[], denseId: string | null, sparsities: readonly number[], precisions: readonly BenchPrecision[] = ['none']): boolean {
  try {
    selectModels(cards, denseId, sparsities, precisions);
    return true;
  } catch {
    return false;
  }
}

/**
 * The dense shape from a Hugging Face `config.json` (its directory or the file), read by the
 * family's own config parser (models/registry.ts).
 *
 * @throws Error when the file is missing, or ModelLoadError when the registry refuses it.
 */
export function readDenseShape(modelDir: string): MatmulShape & { bos_token_id: number | null } {
  const file = modelDir.endsWith('.json') ? modelDir : path.join(modelDir, 'config.json');
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
  } catch (err) {
    throw new Error(`cannot read ${file}: ${(err as Error).message}; --model must be a Hugging Face model directory`);
  }
  return matmulShapeOf(parseDecoderConfig(json, file));
}

/** The widths of a decoder config that the FLOPs count needs (a dense config: d' = d). */
export function matmulShapeOf(c: DecoderConfig): MatmulShape & { bos_token_id: number | null } {
  return {
    hidden_size: c.hidden_size,
    intermediate_size: c.intermediate_size,
    num_hidden_layers: c.num_hidden_layers,
    num_attention_heads: c.num_attention_heads,
    num_key_value_heads: c.num_key_value_heads,
    head_dim: c.head_dim,
    vocab_size: c.vocab_size,
    gated_mlp: c.gated_mlp,
    block: c.block,
    position_embeddings: c.positions.kind === 'learned' ? c.max_position_embeddings + c.positions.offset : 0,
    bos_token_id: c.bos_token_id,
  };
}

/** The card's quantization as flops.ts counts its bytes, or null for float weights. */
function quantizationOf(card: ModelCard): MatmulQuantization | null {
  const q = card.quantization;
  return q ? { linear: q.linear, head: q.head, shortcuts: q.shortcuts } : null;
}

/**
 * Report entries (widths, parameter count, matmul weights, FLOPs and weight bytes per token)
 * for the selected models, precision by precision (dense first, then its slices). The dense
 * parameter count is computed from the shape (norms included); a sliced model's d' and parameter
 * count come from its `slicing` object, and whether its head was sliced is inferred from the
 * count (see flops.ts). Bytes per token count quantized weights in their MatMulNBits layout.
 *
 * @throws Error when a variant's `original_hidden_size` differs from the dense hidden_size.
 */
export function modelEntries(sel: Selection, dense: MatmulShape): ModelEntry[] {
  const d = dense.hidden_size;
  const entry = (card: ModelCard, precision: BenchPrecision, sparsity: number, s: number, parameters: number | null, sliceHead: boolean): ModelEntry => {
    const shape = { ...dense, sliced_hidden_size: s, slice_head: sliceHead };
    const q = quantizationOf(card);
    return {
      id: card.id,
      sparsity,
      precision,
      hidden_size: s,
      original_hidden_size: d,
      parameters,
      slice_head: sliceHead,
      matmul_weights_per_token: matmulWeightsPerToken(shape),
      matmul_flops_per_token: matmulFlopsPerToken(shape),
      weight_bytes_per_token: weightBytesPerToken(shape, q),
      ...(q ? { quantization: q } : {}),
    };
  };
  return sel.byPrecision.flatMap(({ precision, dense: denseCard, sliced }) => [
    entry(denseCard, precision, 0, d, parameterCount(dense, true), false),
    ...sliced.map((c) => {
      const s = c.slicing!;
      if (s.original_hidden_size !== d) {
        throw new Error(`${c.id}: original_hidden_size ${s.original_hidden_size} differs from the dense model's hidden_size ${d}; is --model the right directory?`);
      }
      return entry(c, precision, s.sparsity, s.hidden_size, s.parameters ?? null, inferSliceHead(dense, s.hidden_size, s.parameters));
    }),
  ]);
}
