/**
 * Rotary position embeddings as transformers computes them, in float64.
 *
 * Sources (transformers, src/transformers/modeling_rope_utils.py):
 * - `_compute_default_rope_parameters`: inv_freq[i] = 1 / theta^(2i / dim), i < dim/2;
 * - `_compute_linear_scaling_rope_parameters`: inv_freq / factor;
 * - `_compute_dynamic_ntk_parameters`: base' = theta * ((factor * L / M) - (factor - 1))^(dim / (dim - 2))
 *   with L = max(seq_len, M), M = max_position_embeddings (not original_max_position_embeddings);
 * - `dynamic_rope_update` / `dynamic_frequency_update`: seq_len = max(position_ids) + 1 of the
 *   forward call; the frequencies are recomputed when it grows past the cached length and reset
 *   to the default ones below M. For a call over positions s..s+T-1 that is L = max(s + T, M)
 *   for every position of the call: a full pass of T > M tokens rotates even its first
 *   positions with the frequencies of T, while `generate` rotates each new token with those of
 *   its own length and keeps the cached keys as they were (forward.ts does both through its KV
 *   cache). The reference is stateless: transformers' module keeps frequencies grown by an
 *   earlier, longer call for a later call of length in [M, that length), which is not modelled;
 * - `_compute_llama3_parameters`: wavelen = 2 pi / inv_freq; wavelen < L_orig / high_freq_factor
 *   keeps inv_freq, wavelen > L_orig / low_freq_factor divides it by factor, in between
 *   smooth = (L_orig / wavelen - low) / (high - low) and
 *   inv = (1 - smooth) * inv / factor + smooth * inv;
 * - `attention_factor` (cos/sin multiplier) is 1 for all four types.
 * Layout (models/llama/modeling_llama.py `rotate_half`, `apply_rotary_pos_emb`): the rotated
 * part of a head is split in halves, out1 = x1 cos - x2 sin, out2 = x2 cos + x1 sin, with the
 * angle of pair i = pos * inv_freq[i] (emb = cat(freqs, freqs)). Partial rotary (Phi, Phi-3):
 * only the first rotaryDim dims of each head are rotated, the rest pass through.
 * transformers computes inv_freq and the angles in float32; this reference uses float64.
 */
import type { RopeSpec } from './config.js';

/** inv_freq of the default RoPE for a rotated width `dim` and base `theta` (length dim/2). */
export function defaultInvFreq(theta: number, dim: number): Float64Array {
  const out = new Float64Array(dim / 2);
  for (let i = 0; i < dim / 2; i++) out[i] = 1 / theta ** ((2 * i) / dim);
  return out;
}

/**
 * The inverse frequencies of `rope` for a forward pass over `seqLen` positions (0..seqLen-1).
 * `seqLen` matters only for `dynamic`.
 */
export function ropeInvFreq(rope: RopeSpec, seqLen: number): Float64Array {
  const dim = rope.rotaryDim;
  switch (rope.type) {
    case 'default':
      return defaultInvFreq(rope.theta, dim);
    case 'linear': {
      const inv = defaultInvFreq(rope.theta, dim);
      for (let i = 0; i < inv.length; i++) inv[i] /= rope.factor;
      return inv;
    }
    case 'dynamic': {
      const m = rope.maxPositionEmbeddings;
      const l = Math.max(seqLen, m);
      const base = rope.theta * ((rope.factor * l) / m - (rope.factor - 1)) ** (dim / (dim - 2));
      return defaultInvFreq(base, dim);
    }
    case 'llama3': {
      const inv = defaultInvFreq(rope.theta, dim);
      const old = rope.originalMaxPositionEmbeddings;
      const lowWavelen = old / rope.lowFreqFactor;
      const highWavelen = old / rope.highFreqFactor;
      const out = new Float64Array(inv.length);
      for (let i = 0; i < inv.length; i++) {
        const wavelen = (2 * Math.PI) / inv[i]!;
        const scaled = wavelen > lowWavelen ? inv[i]! / rope.factor : inv[i]!;
        const medium = !(wavelen < highWavelen) && !(wavelen > lowWavelen);
        if (medium) {
          const smooth = (old / wavelen - rope.lowFreqFactor) / (rope.highFreqFactor - rope.lowFreqFactor);
          out[i] = ((1 - smooth) * scaled) / rope.factor + smooth * scaled;
        } else {
          out[i] = scaled;
        }
      }
      return out;
    }
  }
}

/**
 * Rotates one head in place: the first `invFreq.length * 2` dims in half-split layout at
 * position `pos`; the remaining dims (partial rotary) are untouched.
 * @param head a head_dim-long slice.
 */
export function applyRotary(head: Float64Array, invFreq: Float64Array, pos: number): void {
  const half = invFreq.length;
  for (let i = 0; i < half; i++) {
    const angle = pos * invFreq[i]!;
    const c = Math.cos(angle);
    const s = Math.sin(angle);
    const x1 = head[i]!;
    const x2 = head[i + half]!;
    head[i] = x1 * c - x2 * s;
    head[i + half] = x2 * c + x1 * s;
  }
}
