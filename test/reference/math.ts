/**
 * Float64 building blocks of the reference forward pass (test/reference/forward.ts): norms,
 * activations, a linear layer over [out, in] weights and a stable softmax.
 *
 * Everything here is written from PyTorch's and transformers' definitions, not from SliceServe's
 * product code, so that the reference stays an independent oracle. Weights stay Float32Array;
 * every product and sum is taken in float64 (a float32 value times a float32 value is exact in
 * float64, so only the accumulation rounds).
 */

/** Thrown for a config or checkpoint the reference does not implement (it never guesses). */
export class ReferenceUnsupportedError extends Error {
  override name = 'ReferenceUnsupportedError';
}

/** Thrown for a checkpoint that contradicts its config (missing tensor, wrong shape, ...). */
export class ReferenceWeightError extends Error {
  override name = 'ReferenceWeightError';
}

/** A tensor as the reference reads it: row-major, `data.length` = product of `shape`. */
export interface ReferenceTensor {
  shape: readonly number[];
  data: Float32Array;
}

/** Weights by the checkpoint's own tensor names. */
export type ReferenceWeights = ReadonlyMap<string, ReferenceTensor>;

/**
 * The activations transformers' `ACT2FN` maps these names to (src/transformers/activations.py):
 * - `silu`, `swish`: x * sigmoid(x) (`nn.SiLU`);
 * - `relu`: max(0, x);
 * - `gelu`: the exact GELU, x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)) (`GELUActivation`);
 * - `gelu_new`: the tanh approximation 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
 *   (`NewGELUActivation`, GPT-2 and Phi-2);
 * - `gelu_pytorch_tanh`: the same tanh formula through `F.gelu(approximate="tanh")`;
 * - `gelu_fast`: 0.5 x (1 + tanh(0.7978845608 x (1 + 0.044715 x^2))) (`FastGELUActivation`),
 *   with its rounded constant.
 */
export type ActivationName = 'silu' | 'swish' | 'relu' | 'gelu' | 'gelu_new' | 'gelu_pytorch_tanh' | 'gelu_fast';

export const ACTIVATIONS: readonly ActivationName[] = ['silu', 'swish', 'relu', 'gelu', 'gelu_new', 'gelu_pytorch_tanh', 'gelu_fast'];

/**
 * erf(x) to about 1e-16 relative error: Maclaurin series for |x| < 2.5, continued fraction of
 * erfc (Lentz) beyond. JavaScript has no Math.erf.
 */
export function erf(x: number): number {
  if (Number.isNaN(x)) return NaN;
  const a = Math.abs(x);
  if (a < 2.5) {
    // erf(x) = 2/sqrt(pi) * sum_n (-1)^n x^(2n+1) / (n! (2n+1))
    let term = a;
    let sum = a;
    const a2 = a * a;
    for (let n = 1; n < 200; n++) {
      term *= -a2 / n;
      const add = term / (2 * n + 1);
      sum += add;
      if (Math.abs(add) < 1e-17 * Math.abs(sum)) break;
    }
    const r = (2 / Math.sqrt(Math.PI)) * sum;
    return x < 0 ? -r : r;
  }
  if (a > 6) return x < 0 ? -1 : 1;
  // erfc(a) = exp(-a^2)/sqrt(pi) * 1/(a + (1/2)/(a + 1/(a + (3/2)/(a + 2/(a + ...)))))
  // evaluated as the continued fraction K = a + (1/2)/(a + 1/(a + ...)) with modified Lentz.
  const tiny = 1e-300;
  let f = a;
  let c = a;
  let d = 0;
  for (let n = 1; n < 500; n++) {
    const an = n / 2;
    d = a + an * d;
    d = d === 0 ? tiny : d;
    c = a + an / c;
    c = c === 0 ? tiny : c;
    d = 1 / d;
    const delta = c * d;
    f *= delta;
    if (Math.abs(delta - 1) < 1e-16) break;
  }
  const erfc = Math.exp(-a * a) / Math.sqrt(Math.PI) / f;
  const r = 1 - erfc;
  return x < 0 ? -r : r;
}

/** The activation function of `name` (see {@link ActivationName}). */
export function activation(name: ActivationName): (x: number) => number {
  switch (name) {
    case 'silu':
    case 'swish':
      return (x) => x / (1 + Math.exp(-x));
    case 'relu':
      return (x) => (x > 0 ? x : 0);
    case 'gelu':
      return (x) => 0.5 * x * (1 + erf(x / Math.SQRT2));
    case 'gelu_new':
    case 'gelu_pytorch_tanh': {
      const c = Math.sqrt(2 / Math.PI);
      return (x) => 0.5 * x * (1 + Math.tanh(c * (x + 0.044715 * x * x * x)));
    }
    case 'gelu_fast':
      return (x) => 0.5 * x * (1 + Math.tanh(x * 0.7978845608 * (1 + 0.044715 * x * x)));
  }
}

/**
 * Parses an activation name from config.json.
 * @throws ReferenceUnsupportedError for any other name (quick_gelu, gelu_10, ...).
 */
export function parseActivation(value: unknown, key: string): ActivationName {
  if (typeof value !== 'string' || !(ACTIVATIONS as readonly string[]).includes(value)) {
    throw new ReferenceUnsupportedError(`${key} ${JSON.stringify(value)} is not supported by the reference; supported: ${ACTIVATIONS.join(', ')}`);
  }
  return value as ActivationName;
}

/**
 * RMSNorm as `LlamaRMSNorm`: `x / sqrt(sum(x^2) / divisor + eps) * weight`.
 * @param weight per-element scale, or null for a weightless norm (SliceGPT's fused form).
 * @param divisor the width the mean of squares divides by: x.length for a dense model, the
 *   ORIGINAL hidden_size for a sliced one (SliceGPT section 3.3; PROTOCOL.md 5.1).
 */
export function rmsNorm(x: Float64Array, weight: Float32Array | null, eps: number, divisor = x.length): Float64Array {
  let ss = 0;
  for (let i = 0; i < x.length; i++) ss += x[i]! * x[i]!;
  const inv = 1 / Math.sqrt(ss / divisor + eps);
  const out = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = x[i]! * inv * (weight ? weight[i]! : 1);
  return out;
}

/**
 * LayerNorm as `torch.nn.LayerNorm`: `(x - mean) / sqrt(var + eps) * weight + bias`, with the
 * biased (population) variance over the last dimension.
 * @param weight/bias null when `elementwise_affine` is false.
 */
export function layerNorm(x: Float64Array, weight: Float32Array | null, bias: Float32Array | null, eps: number): Float64Array {
  const n = x.length;
  let mean = 0;
  for (let i = 0; i < n; i++) mean += x[i]!;
  mean /= n;
  let v = 0;
  for (let i = 0; i < n; i++) v += (x[i]! - mean) ** 2;
  v /= n;
  const inv = 1 / Math.sqrt(v + eps);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = (x[i]! - mean) * inv * (weight ? weight[i]! : 1) + (bias ? bias[i]! : 0);
  return out;
}

/**
 * `Y = X W^T + b` for N tokens at once (PyTorch `nn.Linear`), W stored [out, in]. Plain
 * float64 dot products, computed four outputs by four tokens at a time so that each weight and
 * activation read serves four products (the sums are the same sequential sums over `in`).
 * @param x [n, in] row-major float64.
 * @returns [n, out] float64.
 * @throws ReferenceWeightError when `W` is not [out, in] or `b` not [out].
 */
export function linear(x: Float64Array, n: number, w: ReferenceTensor, b: ReferenceTensor | null, name: string): Float64Array {
  const inn = n === 0 ? 0 : x.length / n;
  if (w.shape.length !== 2 || w.shape[1] !== inn) {
    throw new ReferenceWeightError(`${name} has shape [${w.shape.join(', ')}] but its input has width ${inn}`);
  }
  const out = w.shape[0]!;
  if (b && (b.shape.length !== 1 || b.shape[0] !== out)) {
    throw new ReferenceWeightError(`${name} bias has shape [${b.shape.join(', ')}], expected [${out}]`);
  }
  const y = new Float64Array(n * out);
  const wd = w.data;
  const dot = (t: number, o: number): number => {
    let acc = 0;
    for (let i = 0, xb = t * inn, wb = o * inn; i < inn; i++) acc += x[xb + i]! * wd[wb + i]!;
    return acc;
  };
  const o4 = out - (out % 4);
  const t4 = n - (n % 4);
  for (let o = 0; o < o4; o += 4) {
    const w0 = o * inn, w1 = w0 + inn, w2 = w1 + inn, w3 = w2 + inn;
    for (let t = 0; t < t4; t += 4) {
      const x0 = t * inn, x1 = x0 + inn, x2 = x1 + inn, x3 = x2 + inn;
      let a00 = 0, a01 = 0, a02 = 0, a03 = 0, a10 = 0, a11 = 0, a12 = 0, a13 = 0;
      let a20 = 0, a21 = 0, a22 = 0, a23 = 0, a30 = 0, a31 = 0, a32 = 0, a33 = 0;
      for (let i = 0; i < inn; i++) {
        const v0 = x[x0 + i]!, v1 = x[x1 + i]!, v2 = x[x2 + i]!, v3 = x[x3 + i]!;
        const u0 = wd[w0 + i]!, u1 = wd[w1 + i]!, u2 = wd[w2 + i]!, u3 = wd[w3 + i]!;
        a00 += v0 * u0; a01 += v0 * u1; a02 += v0 * u2; a03 += v0 * u3;
        a10 += v1 * u0; a11 += v1 * u1; a12 += v1 * u2; a13 += v1 * u3;
        a20 += v2 * u0; a21 += v2 * u1; a22 += v2 * u2; a23 += v2 * u3;
        a30 += v3 * u0; a31 += v3 * u1; a32 += v3 * u2; a33 += v3 * u3;
      }
      const acc = [a00, a01, a02, a03, a10, a11, a12, a13, a20, a21, a22, a23, a30, a31, a32, a33];
      for (let r = 0; r < 4; r++) for (let c = 0; c < 4; c++) y[(t + r) * out + o + c] = acc[r * 4 + c]!;
    }
    for (let t = t4; t < n; t++) for (let c = 0; c < 4; c++) y[t * out + o + c] = dot(t, o + c);
  }
  for (let o = o4; o < out; o++) for (let t = 0; t < n; t++) y[t * out + o] = dot(t, o);
  if (b) for (let t = 0; t < n; t++) for (let o = 0; o < out; o++) y[t * out + o] += b.data[o]!;
  return y;
}

/**
 * `Y = X S` for N tokens with S stored [in, out] (SliceGPT's shortcut matrices, as
 * models/arch/spec.ts `LayerLayout.attnShortcut` documents them).
 * @param x [n, in]. @returns [n, out].
 */
export function matmul(x: Float64Array, n: number, s: ReferenceTensor, name: string): Float64Array {
  const inn = n === 0 ? 0 : x.length / n;
  if (s.shape.length !== 2 || s.shape[0] !== inn) {
    throw new ReferenceWeightError(`${name} has shape [${s.shape.join(', ')}] but its input has width ${inn}`);
  }
  const out = s.shape[1]!;
  const y = new Float64Array(n * out);
  for (let t = 0; t < n; t++) {
    for (let i = 0; i < inn; i++) {
      const xi = x[t * inn + i]!;
      const base = i * out;
      for (let o = 0; o < out; o++) y[t * out + o] += xi * s.data[base + o]!;
    }
  }
  return y;
}

/** Softmax in float64, max-subtracted; entries that are -Infinity get probability 0. */
export function softmax(scores: Float64Array): Float64Array {
  let max = -Infinity;
  for (const s of scores) if (s > max) max = s;
  const out = new Float64Array(scores.length);
  let sum = 0;
  for (let i = 0; i < scores.length; i++) {
    const e = scores[i] === -Infinity ? 0 : Math.exp(scores[i]! - max);
    out[i] = e;
    sum += e;
  }
  for (let i = 0; i < out.length; i++) out[i] /= sum;
  return out;
}

/** `log(sum(exp(x)))` in float64, max-subtracted. */
export function logSumExp(x: Float64Array): number {
  let max = -Infinity;
  for (const v of x) if (v > max) max = v;
  let sum = 0;
  for (const v of x) sum += Math.exp(v - max);
  return max + Math.log(sum);
}
