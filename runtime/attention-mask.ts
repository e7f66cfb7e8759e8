/**
 * The sliding-window mask (models/onnx/contract.ts `sliding_attention_bias`) derived from a
 * step's full causal mask: the query at absolute position i keeps only keys at positions j with
 * i - W < j (transformers' masking_utils `sliding_window_overlay`; Mistral's `sliding_window`).
 * A step's rows hold keys in their own slot order (resident rows, left-padded new tokens,
 * device-held pasts with gaps), so the absolute position of every key slot and query is given
 * by the caller.
 */
import { MASKED } from '../models/onnx/contract.js';

/** Absolute positions of a step's key slots and queries; -1 where a slot holds no entry. */
export interface StepPositions {
  /** [B * T]: position of key slot t of row r at r * T + t. */
  keys: Int32Array;
  /** [B * S]: position of query i of row r at r * S + i. */
  queries: Int32Array;
}

/**
 * A copy of `full` [B, S, T] with every key at or before `query - window` masked too.
 * @throws RangeError for a window < 1 or arrays of the wrong sizes.
 */
export function slidingWindowBias(full: Float32Array, B: number, S: number, T: number, window: number, positions: StepPositions): Float32Array {
  if (!(Number.isInteger(window) && window >= 1)) throw new RangeError(`sliding window must be an integer >= 1, got ${window}`);
  if (full.length !== B * S * T || positions.keys.length !== B * T || positions.queries.length !== B * S) {
    throw new RangeError(`sliding window mask: sizes do not match [${B}, ${S}, ${T}]`);
  }
  const out = Float32Array.from(full);
  for (let r = 0; r < B; r++) {
    for (let i = 0; i < S; i++) {
      const limit = positions.queries[r * S + i] - window;
      const row = (r * S + i) * T;
      for (let t = 0; t < T; t++) if (positions.keys[r * T + t] <= limit) out[row + t] = MASKED;
    }
  }
  return out;
}

/**
 * Positions of a host-path step (runtime/decoder-session.ts): row r has `lengths[r]` cached
 * entries at slots 0..length-1 of a past of capacity P (slot = position), and `counts[r]` new
 * tokens left-padded into the S new slots P..P+S-1.
 */
export function hostStepPositions(lengths: readonly number[], counts: readonly number[], P: number, S: number): StepPositions {
  const B = lengths.length;
  const T = P + S;
  const keys = new Int32Array(B * T).fill(-1);
  const queries = new Int32Array(B * S).fill(-1);
  for (let r = 0; r < B; r++) {
    const len = lengths[r];
    const pad = S - counts[r];
    for (let t = 0; t < Math.min(len, P); t++) keys[r * T + t] = t;
    for (let i = pad; i < S; i++) {
      keys[r * T + P + i] = len + i - pad;
      queries[r * S + i] = len + i - pad;
    }
  }
  return { keys, queries };
}

/**
 * Positions of a device-KV step (runtime/device-kv.ts): row r's past entries sit in the sorted
 * ranges `valid[r]`, holding positions 0, 1, ... in slot order; its `counts[r]` new tokens are
 * left-padded into the S new slots.
 */
export function validStepPositions(valid: readonly (readonly (readonly [number, number])[])[], past: number, counts: readonly number[], S: number): StepPositions {
  const B = valid.length;
  const T = past + S;
  const keys = new Int32Array(B * T).fill(-1);
  const queries = new Int32Array(B * S).fill(-1);
  for (let r = 0; r < B; r++) {
    let n = 0;
    for (const [a, b] of valid[r]) for (let t = a; t < b; t++) keys[r * T + t] = n++;
    const pad = S - counts[r];
    for (let i = pad; i < S; i++) {
      keys[r * T + past + i] = n + i - pad;
      queries[r * S + i] = n + i - pad;
    }
  }
  return { keys, queries };
}
