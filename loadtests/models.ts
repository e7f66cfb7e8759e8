/**
 * Which served models a benchmark measures, and their shapes for the FLOPs count.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { inferSliceHead, matmulFlopsPerToken, matmulWeightsPerToken, parameterCount, type MatmulShape } from './flops.js';
import type { DecoderConfig } from '../models/config.js';
import { parseDecoderConfig } from '../models/registry.js';
import type { ModelEntry } from './report.js';
import type { ModelCard } from './server-process.js';

/** The dense model and the sliced variants to measure. */
export interface Selection {
  dense: ModelCard;
  sliced: ModelCard[];
}

/** Sparsities are compared to this tolerance (0.25 vs 0.250000001). */
const EPS = 1e-6;

/**
 * Picks the dense model (an entry without `parent`: the one named `denseId` when given, else
 * the first) and its sliced variants (entries whose `parent` is the dense id) with the
 * wanted sparsities, in the order of `sparsities` (all variants, by sparsity, when null).
 *
 * @throws Error naming what `/v1/models` offers when the dense model or a sparsity is missing.
 */
export function selectModels(cards: readonly ModelCard[], denseId: string | null, sparsities: readonly number[] | null): Selection {
  const denses = cards.filter((c) => !c.parent);
  const dense = denseId ? denses.find((c) => c.id === denseId) : denses[0];
  const offered = cards.map((c) => c.id).join(', ') || 'none';
  if (!dense) throw new Error(`no dense model${denseId ? ` "${denseId}"` : ''} in /v1/models (offered: ${offered})`);
  const children = cards.filter((c) => c.parent === dense.id && c.slicing);
  let sliced: ModelCard[];
  if (sparsities === null) {
    sliced = [...children].sort((a, b) => a.slicing!.sparsity - b.slicing!.sparsity);
  } else {
    sliced = sparsities.map((s) => {
      const c = children.find((x) => Math.abs(x.slicing!.sparsity - s) < EPS);
      if (!c) throw new Error(`no variant of "${dense.id}" sliced at sparsity ${s} in /v1/models (offered: ${offered})`);
      return c;
    });
  }
  return { dense, sliced };
}

/** Whether `/v1/models` already lists the dense model and every wanted sparsity. */
export function hasModels(cards: readonly ModelCard[], denseId: string | null, sparsities: readonly number[]): boolean {
  try {
    selectModels(cards, denseId, sparsities);
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

/**
 * Report entries (widths, parameter count, matmul weights and FLOPs per token) for the
 * selected models. The dense parameter count is computed from the shape (norms included); a
 * sliced model's d' and parameter count come from its `slicing` object, and whether its head
 * was sliced is inferred from the count (see flops.ts).
 *
 * @throws Error when a variant's `original_hidden_size` differs from the dense hidden_size.
 */
export function modelEntries(sel: Selection, dense: MatmulShape): ModelEntry[] {
  const d = dense.hidden_size;
  const entry = (id: string, sparsity: number, s: number, parameters: number | null, sliceHead: boolean): ModelEntry => {
    const shape = { ...dense, sliced_hidden_size: s, slice_head: sliceHead };
    return {
      id,
      sparsity,
      hidden_size: s,
      original_hidden_size: d,
      parameters,
      slice_head: sliceHead,
      matmul_weights_per_token: matmulWeightsPerToken(shape),
      matmul_flops_per_token: matmulFlopsPerToken(shape),
    };
  };
  return [
    entry(sel.dense.id, 0, d, parameterCount(dense, true), false),
    ...sel.sliced.map((c) => {
      const s = c.slicing!;
      if (s.original_hidden_size !== d) {
        throw new Error(`${c.id}: original_hidden_size ${s.original_hidden_size} differs from the dense model's hidden_size ${d}; is --model the right directory?`);
      }
      return entry(c.id, s.sparsity, s.hidden_size, s.parameters ?? null, inferSliceHead(dense, s.hidden_size, s.parameters));
    }),
  ];
}
