/**
 * Benchmark prompts: token-id arrays of an exact length, random and different for every
 * request, so that no server-side prefix cache can reuse a previous request's prefill
 * (the peer llama.cpp measurement defeats prefix caching the same way).
 */
import { SeededRandom } from '../models/synth.js';

/** Options of {@link makePrompt}. */
export interface PromptOptions {
  /** Prompt length in tokens, BOS included (>= 1). */
  promptTokens: number;
  /** The model's vocabulary size; ids are drawn from [firstId, vocabSize). */
  vocabSize: number;
  /** BOS id, placed first (Llama-2: 1); null for a model without BOS (Qwen): every id random. */
  bosTokenId: number | null;
  /** Smallest id drawn (default 3: after Llama's <unk>, <s>, </s>). */
  firstId?: number;
  /** Run seed. */
  seed: number;
}

/**
 * The prompt of request number `index` (0-based) of a run: BOS (when the model has one) followed
 * by uniformly random ids up to `promptTokens`, from a stream seeded by (seed, index). The same
 * (seed, index) gives the same prompt, so every model at a given level and round receives
 * the same prompts; two different indices share a prefix beyond BOS with probability
 * ~1/vocabSize.
 *
 * @throws RangeError when promptTokens < 1 or the id range is empty.
 */
export function makePrompt(index: number, opts: PromptOptions): number[] {
  const first = opts.firstId ?? 3;
  if (!(opts.promptTokens >= 1)) throw new RangeError(`promptTokens must be >= 1, got ${opts.promptTokens}`);
  if (!(opts.vocabSize > first)) throw new RangeError(`vocabSize ${opts.vocabSize} leaves no ids above ${first}`);
  const rng = new SeededRandom(Math.imul(opts.seed ^ 0x5bd1e995, 0x27d4eb2f) ^ Math.imul(index + 1, 0x9e3779b1));
  const ids = opts.bosTokenId === null ? [] : [opts.bosTokenId];
  while (ids.length < opts.promptTokens) ids.push(rng.nextInt(first, opts.vocabSize));
  return ids;
}
