/**
 * Token sampling from logits: penalties, temperature, top-k, top-p, seeded randomness.
 *
 * Order of operations (as in vLLM / Hugging Face `generate`):
 *   1. logit_bias is added;
 *   2. presence and frequency penalties (OpenAI API definition:
 *      `logit[j] -= frequency_penalty * count[j] + presence_penalty * (count[j] > 0)`),
 *      counted over the generated tokens;
 *   3. temperature 0 -> greedy argmax (lowest id on ties); otherwise logits / temperature;
 *   4. top-k, then top-p (nucleus: the smallest set of most likely tokens whose probability
 *      sums to >= top_p; Holtzman et al. 2020), renormalised;
 *   5. one draw from a seeded PRNG.
 * The returned logprob is log-softmax of the penalised logits at temperature 1 (before top-k /
 * top-p), which is what OpenAI-compatible servers report.
 */
import { logprobAt, logSumExp, topIndices } from '../runtime/logprobs.js';

export { topIndices } from '../runtime/logprobs.js';

export interface SamplingParams {
  /** 0 = greedy. */
  temperature: number;
  /** Nucleus mass in (0, 1]; 1 disables. */
  topP: number;
  /** Keep the k most likely tokens; 0 or negative disables. */
  topK: number;
  /** Seed for reproducible sampling; random when undefined. */
  seed?: number;
  presencePenalty: number;
  frequencyPenalty: number;
  /** Token id -> additive bias. */
  logitBias?: Record<number, number>;
}

export const DEFAULT_SAMPLING: SamplingParams = { temperature: 1, topP: 1, topK: 0, presencePenalty: 0, frequencyPenalty: 0 };

export interface SampledToken {
  token: number;
  /** Natural log of the token's probability (see module doc). */
  logprob: number;
}

/** A sampled token whose logprob is null unless it was asked for (see {@link Sampler.sample}). */
export interface SampledTokenMaybeScored {
  token: number;
  logprob: number | null;
}

/** Index of the largest value (lowest index on ties). One pass, no copies. */
export function argmax(x: Float32Array | Float64Array): number {
  let best = 0;
  let bestValue = x[0];
  for (let i = 1; i < x.length; i++) {
    const v = x[i];
    if (v > bestValue) {
      bestValue = v;
      best = i;
    }
  }
  return best;
}

/** A seeded PRNG (sfc32), floats in [0, 1). */
export function seededRandom(seed: number): () => number {
  let a = 0x9e3779b9 ^ seed;
  let b = 0x243f6a88 ^ Math.floor(seed / 4294967296);
  let c = 0xb7e15162;
  let d = 1;
  const next = (): number => {
    a >>>= 0;
    b >>>= 0;
    c >>>= 0;
    d >>>= 0;
    const t = (a + b + d) >>> 0;
    d = (d + 1) >>> 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) >>> 0;
    c = (c << 21) | (c >>> 11);
    c = (c + t) >>> 0;
    return t / 4294967296;
  };
  for (let i = 0; i < 12; i++) next();
  return next;
}

/** log-softmax of `x` in float64 (normaliser: runtime/logprobs.ts `logSumExp`). */
export function logSoftmax(x: Float32Array | Float64Array): Float64Array {
  const lse = logSumExp(x);
  const out = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = x[i] - lse;
  return out;
}

/** One request's sampler: holds its PRNG so a seeded request is reproducible. */
export class Sampler {
  private readonly random: () => number;

  constructor(readonly params: SamplingParams) {
    if (!(params.temperature >= 0)) throw new RangeError(`temperature must be >= 0, got ${params.temperature}`);
    if (!(params.topP > 0 && params.topP <= 1)) throw new RangeError(`top_p must be in (0, 1], got ${params.topP}`);
    this.random = seededRandom(params.seed ?? Math.floor(Math.random() * 2 ** 32));
  }

  /** Whether {@link sample} is the argmax of the raw logits (temperature 0, no logit_bias, no penalties). */
  isPlainGreedy(): boolean {
    return this.params.temperature === 0 && !this.adjusts();
  }

  /** Whether logit_bias or a penalty changes the logits. */
  private adjusts(): boolean {
    const p = this.params;
    return !!(p.presencePenalty || p.frequencyPenalty || (p.logitBias && Object.keys(p.logitBias).length > 0));
  }

  /** Logits after bias and penalties (float64 copy). */
  processed(logits: Float32Array, generated: readonly number[]): Float64Array {
    const x = Float64Array.from(logits);
    const p = this.params;
    if (p.logitBias) for (const [id, b] of Object.entries(p.logitBias)) if (Number(id) < x.length) x[Number(id)] += b;
    if (p.presencePenalty || p.frequencyPenalty) {
      const counts = new Map<number, number>();
      for (const t of generated) counts.set(t, (counts.get(t) ?? 0) + 1);
      for (const [t, n] of counts) if (t < x.length) x[t] -= p.frequencyPenalty * n + p.presencePenalty;
    }
    return x;
  }

  /**
   * Picks the next token.
   * @param logits [vocab] logits of the last position.
   * @param generated tokens generated so far by this sequence (for penalties).
   * @param withLogprob compute the token's logprob (an extra exp pass over the vocabulary,
   *   ~0.3 ms at 32k tokens); when false, `logprob` is null. Servers compute it only when the
   *   request asks for logprobs, as vLLM does.
   */
  sample(logits: Float32Array, generated: readonly number[]): SampledToken;
  sample(logits: Float32Array, generated: readonly number[], withLogprob: boolean): SampledTokenMaybeScored;
  sample(logits: Float32Array, generated: readonly number[], withLogprob = true): SampledTokenMaybeScored {
    const p = this.params;
    if (p.temperature === 0 && !this.adjusts()) {
      // Greedy without bias or penalties: argmax (and its log-softmax if asked), no copies.
      const best = argmax(logits);
      return { token: best, logprob: withLogprob ? logprobAt(logits, best) : null };
    }
    const x = this.processed(logits, generated);
    const lse = withLogprob ? logSumExp(x) : 0;
    const scored = (token: number) => ({ token, logprob: withLogprob ? x[token] - lse : null });
    if (p.temperature === 0) return scored(argmax(x));
    const candidates = p.topK > 0 ? topIndices(x, p.topK) : p.topP < 1 ? plausible(x, p.temperature) : null;
    if (!candidates) {
      // Plain temperature sampling: one O(vocab) pass, no sort.
      const probs = softmax(Array.from(x, (v) => v / p.temperature));
      let r = this.random();
      for (let i = 0; i < probs.length; i++) {
        r -= probs[i];
        if (r < 0) return scored(i);
      }
      return scored(probs.length - 1);
    }
    const probs = softmax(candidates.map((i) => x[i] / p.temperature));
    let keep = probs.length;
    if (p.topP < 1) {
      let cum = 0;
      for (let i = 0; i < probs.length; i++) {
        cum += probs[i];
        if (cum >= p.topP) {
          keep = i + 1;
          break;
        }
      }
    }
    const mass = probs.slice(0, keep).reduce((a, b) => a + b, 0);
    let r = this.random() * mass;
    for (let i = 0; i < keep; i++) {
      r -= probs[i];
      if (r < 0) return scored(candidates[i]);
    }
    return scored(candidates[keep - 1]);
  }

  /** The `k` most likely tokens with their logprobs (same definition as {@link sample}). */
  topLogprobs(logits: Float32Array, k: number, generated: readonly number[] = []): SampledToken[] {
    const lp = logSoftmax(this.processed(logits, generated));
    return topIndices(lp, k).map((token) => ({ token, logprob: lp[token] }));
  }
}

/**
 * Tokens whose logit is within 40 * temperature of the maximum, most likely first: each token
 * left out has probability below e^-40 (~4e-18) at that temperature, so over any vocabulary
 * the mass left out is below 1e-12; nucleus (top-p) sampling over these is exact to that
 * precision without sorting the whole vocabulary.
 */
function plausible(x: Float64Array, temperature: number): number[] {
  let max = -Infinity;
  for (const v of x) if (v > max) max = v;
  const keep: number[] = [];
  const floor = max - 40 * temperature;
  for (let i = 0; i < x.length; i++) if (x[i] >= floor) keep.push(i);
  return keep.sort((a, b) => x[b] - x[a] || a - b);
}

function softmax(x: number[]): number[] {
  // A loop, not Math.max(...x): spreading a 150k-entry vocabulary overflows the call stack.
  let max = -Infinity;
  for (const v of x) if (v > max) max = v;
  const e = x.map((v) => Math.exp(v - max));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / s);
}
