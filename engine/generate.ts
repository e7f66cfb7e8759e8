/**
 * Single-sequence generation: prefill the prompt, then decode token by token with the KV cache.
 * The CLI's `generate` uses it; the server's continuous-batching engine (engine/scheduler.ts)
 * runs the same steps for many sequences at once.
 */
import type { TextTokenizer } from '../models/types.js';
import type { DecoderSession } from '../runtime/decoder-session.js';
import { IncrementalDetokenizer } from './detokenizer.js';
import { Sampler, type SamplingParams } from './sampler.js';

export interface GenerateOptions {
  /** Upper bound on generated tokens (>= 1). */
  maxTokens: number;
  sampling: SamplingParams;
  /** Stop when the model emits EOS (default true). */
  stopAtEos?: boolean;
  /** Called with the completion text added by each token (may be '' while a UTF-8 character is incomplete). */
  onText?: (delta: string) => void;
}

export interface GenerateResult {
  tokens: number[];
  logprobs: number[];
  /** Completion only: the text the tokens add after the prompt (engine/detokenizer.ts). */
  text: string;
  finishReason: 'stop' | 'length';
}

/**
 * Generates a completion of `promptIds`.
 * @param promptIds token ids including BOS, length >= 1.
 * @throws RangeError when the prompt does not fit the context length.
 */
export async function generate(session: DecoderSession, tokenizer: TextTokenizer, promptIds: readonly number[], options: GenerateOptions): Promise<GenerateResult> {
  if (promptIds.length === 0) throw new RangeError('the prompt encodes to no tokens');
  if (promptIds.length >= session.maxContext) {
    throw new RangeError(`the prompt has ${promptIds.length} tokens; the context length is ${session.maxContext}`);
  }
  const sampler = new Sampler(options.sampling);
  const cache = session.newCache();
  const tokens: number[] = [];
  const logprobs: number[] = [];
  const detokenizer = new IncrementalDetokenizer(tokenizer, promptIds);
  let text = '';
  const emit = (delta: string) => {
    if (!delta) return;
    text += delta;
    options.onText?.(delta);
  };
  let finishReason: 'stop' | 'length' = 'length';
  let logits = (await session.step([{ cache, tokens: promptIds }]))[0];
  while (tokens.length < options.maxTokens) {
    const next = sampler.sample(logits, tokens);
    if (tokenizer.eosTokenIds.includes(next.token) && options.stopAtEos !== false) {
      finishReason = 'stop';
      break;
    }
    tokens.push(next.token);
    logprobs.push(next.logprob);
    emit(detokenizer.push(next.token));
    if (tokens.length >= options.maxTokens || cache.length + 1 > session.maxContext) break;
    logits = (await session.step([{ cache, tokens: [next.token] }]))[0];
  }
  emit(detokenizer.flush());
  return { tokens, logprobs, text, finishReason };
}
