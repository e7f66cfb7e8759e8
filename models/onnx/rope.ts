/**
 * RoPE inverse frequencies, as transformers' modeling_rope_utils.py computes them, in float64:
 * - default: `inv_freq_i = theta^(-2i / dim)`, i = 0..dim/2-1, dim = the rotary dimension;
 * - linear: `inv_freq_i / factor` (positions divided by the factor);
 * - llama3 (Llama 3.1/3.2, `_compute_llama3_parameters`): with wavelength `2 pi / inv_freq_i`,
 *   low- and high-frequency wavelengths `L0 / low_freq_factor` and `L0 / high_freq_factor`
 *   (L0 = original_max_position_embeddings): wavelengths above the low-frequency one are divided
 *   by `factor`, those below the high-frequency one are kept, and in between
 *   `(1 - s) inv_freq / factor + s inv_freq` with `s = (L0 / wavelength - low) / (high - low)`;
 * - dynamic: the default frequencies here; the graph rescales the base per row once a sequence
 *   passes the original context (models/onnx/blocks.ts `dynamicRope`).
 */
import type { RotarySpec } from '../config.js';

/**
 * @returns Float64Array of rotary_dim / 2 inverse frequencies (radians per position).
 */
export function ropeInverseFrequencies(spec: RotarySpec): Float64Array {
  const dim = spec.rotary_dim;
  const inv = Float64Array.from({ length: dim / 2 }, (_, i) => Math.pow(spec.rope_theta, (-2 * i) / dim));
  const s = spec.rope_scaling;
  if (!s || s.rope_type === 'default' || s.rope_type === 'dynamic') return inv;
  if (s.rope_type === 'linear') return inv.map((f) => f / s.factor);
  const L0 = s.original_max_position_embeddings!;
  const low = s.low_freq_factor!;
  const high = s.high_freq_factor!;
  const lowWavelength = L0 / low;
  const highWavelength = L0 / high;
  return inv.map((f) => {
    const wavelength = (2 * Math.PI) / f;
    if (wavelength < highWavelength) return f;
    if (wavelength > lowWavelength) return f / s.factor;
    const smooth = (L0 / wavelength - low) / (high - low);
    return (1 - smooth) * (f / s.factor) + smooth * f;
  });
}
