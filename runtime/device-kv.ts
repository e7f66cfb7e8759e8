/**
 * Bookkeeping for a KV cache that stays in the session's own output tensors between steps
 * (the "device-resident" past of DecoderSession on WebGPU): pure functions, no onnxruntime.
 *
 * The graph's `present.{i}.key|value` is `Concat(past, new)` along the past axis
 * (models/onnx/blocks.ts), so feeding a step's present back as the next step's past grows
 * every row by the step's sequence length S, whether or not that row had S real tokens. Each
 * row therefore carries a set of VALID past positions, kept here as sorted, disjoint
 * half-open ranges; everything else (right padding of a re-laid past, the left padding of a
 * multi-token step's new tokens) is masked in `attention_bias`.
 *
 * A past can be fed back only when the next step has exactly the same sequences in the same
 * rows and each sequence brings exactly one new token (decode); anything else re-lays the
 * past from the host caches ({@link planDevicePast}).
 */
import { MASKED } from '../models/onnx/contract.js';

/** Half-open range [start, end) of past positions. */
export type Range = readonly [start: number, end: number];

/** What the session keeps about the past it holds in output tensors. */
export interface DevicePastState<K> {
  /** The sequence each batch row belongs to (row r of every present tensor). */
  rows: readonly K[];
  /** Past length of the held tensors (their `past` axis), > 0. */
  past: number;
  /** Valid positions of each row, sorted disjoint ranges within [0, past). */
  valid: readonly (readonly Range[])[];
}

/** One sequence of the coming step: its identity, cached length, and new token count. */
export interface PlannedInput<K> {
  key: K;
  /** Tokens already in its cache (before this step). */
  length: number;
  /** New tokens this step (>= 1). */
  newTokens: number;
}

/**
 * The decision for one step: feed the held tensors back (`reuse`, with the row of each input
 * in the order given) or re-lay the past from the host caches (`reason` says why).
 */
export type DevicePastPlan = { reuse: true; rowOf: number[] } | { reuse: false; reason: DeviceRebuildReason };

/** Why a step cannot reuse the held past. */
export type DeviceRebuildReason = 'no past held' | 'batch changed' | 'not a decode step' | 'row out of sync' | 'too much padding';

/** Number of positions covered by `ranges`. */
export function validCount(ranges: readonly Range[]): number {
  let n = 0;
  for (const [a, b] of ranges) n += b - a;
  return n;
}

/**
 * Decides whether a step can feed the held past tensors back as its past.
 *
 * Reuse needs: a held state; the same set of sequences as its rows (any input order, each row
 * used once, no row left over); one new token per sequence; each row's valid count equal to
 * its sequence's cached length (a cache cleared or stepped elsewhere is out of sync); and the
 * padding bound `past + 1 <= longest + maxPadding`, where `longest` is the longest sequence
 * after the step (the held past only ever grows, so masked positions are dropped by a re-lay).
 * @param maxPadding masked positions allowed beyond the longest sequence (>= 0).
 * @returns the plan; `rowOf[b]` is the row of `inputs[b]`.
 */
export function planDevicePast<K>(state: DevicePastState<K> | undefined, inputs: readonly PlannedInput<K>[], maxPadding: number): DevicePastPlan {
  if (!state) return { reuse: false, reason: 'no past held' };
  if (inputs.length !== state.rows.length) return { reuse: false, reason: 'batch changed' };
  const rowByKey = new Map<K, number>();
  state.rows.forEach((k, r) => rowByKey.set(k, r));
  const rowOf: number[] = [];
  const used = new Set<number>();
  for (const inp of inputs) {
    const r = rowByKey.get(inp.key);
    if (r === undefined || used.has(r)) return { reuse: false, reason: 'batch changed' };
    used.add(r);
    rowOf.push(r);
  }
  if (inputs.some((inp) => inp.newTokens !== 1)) return { reuse: false, reason: 'not a decode step' };
  if (inputs.some((inp, b) => validCount(state.valid[rowOf[b]]) !== inp.length)) return { reuse: false, reason: 'row out of sync' };
  const longest = Math.max(...inputs.map((inp) => inp.length + 1));
  if (state.past + 1 > longest + maxPadding) return { reuse: false, reason: 'too much padding' };
  return { reuse: true, rowOf };
}

/**
 * Valid ranges of a past just re-laid from the host: row r holds its `lengths[r]` entries from
 * position 0 (right-padded).
 */
export function freshValid(lengths: readonly number[]): Range[][] {
  return lengths.map((n) => (n > 0 ? [[0, n] as Range] : []));
}

/**
 * Valid ranges of the present that a step returns, `Concat(past, new)` of length past + S:
 * row r keeps its past ranges and gains its `counts[r]` real new tokens, which sit at the END
 * of the S new positions (new tokens are left-padded), i.e. [past + S - counts[r], past + S).
 * A range that continues the row's last one is merged into it.
 * @throws RangeError when a count is outside 1..S or rows and counts differ in number.
 */
export function appendValid(valid: readonly (readonly Range[])[], past: number, S: number, counts: readonly number[]): Range[][] {
  if (valid.length !== counts.length) throw new RangeError(`appendValid: ${valid.length} rows but ${counts.length} token counts`);
  return valid.map((ranges, r) => {
    const s = counts[r];
    if (!(s >= 1 && s <= S)) throw new RangeError(`appendValid: row ${r} has ${s} new tokens, expected 1..${S}`);
    const start = past + S - s;
    const out = ranges.slice();
    const last = out[out.length - 1];
    if (last && last[1] === start) out[out.length - 1] = [last[0], past + S];
    else out.push([start, past + S]);
    return out;
  });
}

/**
 * The `attention_bias` input [rows, S, past + S] (models/onnx/contract.ts: 0 = attend,
 * {@link MASKED} = hidden) for a step whose row r has the past positions `valid[r]` and
 * `counts[r]` new tokens, left-padded to S: query i of row r (real when i >= S - counts[r])
 * sees the row's valid past and the new positions from its first real token up to itself
 * (causal). Padding query rows are fully masked (their outputs are never read).
 * @returns a Float32Array of rows * S * (past + S) elements.
 * @throws RangeError when a range leaves [0, past) or a count is outside 1..S.
 */
export function attentionBiasFromValid(valid: readonly (readonly Range[])[], past: number, S: number, counts: readonly number[]): Float32Array {
  const B = valid.length;
  const T = past + S;
  const bias = new Float32Array(B * S * T).fill(MASKED);
  for (let r = 0; r < B; r++) {
    const s = counts[r];
    if (!(s >= 1 && s <= S)) throw new RangeError(`attention bias: row ${r} has ${s} new tokens, expected 1..${S}`);
    for (const [a, b] of valid[r]) {
      if (a < 0 || b > past || a > b) throw new RangeError(`attention bias: row ${r} range [${a}, ${b}) is outside the past [0, ${past})`);
    }
    const padQ = S - s;
    for (let i = padQ; i < S; i++) {
      const off = (r * S + i) * T;
      for (const [a, b] of valid[r]) bias.fill(0, off + a, off + b);
      bias.fill(0, off + past + padQ, off + past + i + 1);
    }
  }
  return bias;
}
