/**
 * The input processor: turns an {@link EngineRequest}'s prompts into token ids and checks
 * them against the model's limits, before the request may join the waiting queue. Errors
 * carry the HTTP status and the OpenAI error fields the front end returns.
 */
import type { TextTokenizer } from '../models/types.js';
import type { EngineErrorInfo, EngineRequest } from './protocol.js';

/** A request the engine refuses (a bad prompt or limits it cannot meet). */
export class EngineRequestError extends Error {
  constructor(
    message: string,
    readonly param: string | null,
    readonly code: string | null = null,
    readonly status = 400,
  ) {
    super(message);
    this.name = 'EngineRequestError';
  }

  /** The error as sent to the front end. */
  toInfo(): EngineErrorInfo {
    return {
      status: this.status,
      message: this.message,
      type: 'invalid_request_error',
      param: this.param,
      code: this.code,
    };
  }
}

/** Limits a request is checked against. */
export interface InputLimits {
  /** Context length in tokens (prompt + generated must fit). */
  maxContext: number;
  vocabSize: number;
  /** KV budget in tokens: one sequence's prompt + max_tokens must fit it. */
  kvCapacityTokens: number;
}

/**
 * Token ids of each prompt of `request`: text prompts are encoded as transformers'
 * `tokenizer(text)` (the family's special tokens, e.g. BOS for Llama, none for Qwen; as vLLM's
 * completions endpoint does) unless the prompt says `addSpecialTokens: false` (a rendered chat
 * template, which holds its own), token prompts are taken as given.
 * @throws EngineRequestError (status 400) for an empty token prompt, a token id outside
 *   [0, vocab), a prompt longer than the context (code `context_length_exceeded`), or
 *   prompt + max_tokens beyond the context or the KV budget; also for logit_bias or
 *   stop_token_ids entries outside the vocabulary.
 */
export function processInputs(request: EngineRequest, tokenizer: TextTokenizer, limits: InputLimits): number[][] {
  const { maxContext, vocabSize } = limits;
  for (const id of request.stopTokenIds) {
    if (!isTokenId(id, vocabSize)) {
      throw new EngineRequestError(`stop_token_ids: ${id} is not a token id of this model (0..${vocabSize - 1})`, 'stop_token_ids');
    }
  }
  for (const key of Object.keys(request.sampling.logitBias ?? {})) {
    if (!isTokenId(Number(key), vocabSize)) {
      throw new EngineRequestError(`logit_bias: ${key} is not a token id of this model (0..${vocabSize - 1})`, 'logit_bias');
    }
  }
  return request.prompts.map((prompt) => {
    let ids: number[];
    if ('text' in prompt) {
      ids = tokenizer.encode(prompt.text, { addSpecialTokens: prompt.addSpecialTokens !== false });
    } else {
      if (prompt.tokens.length === 0) throw new EngineRequestError('prompt: a token prompt must hold at least one token id', 'prompt');
      const bad = prompt.tokens.find((id) => !isTokenId(id, vocabSize));
      if (bad !== undefined) throw new EngineRequestError(`prompt: ${bad} is not a token id of this model (0..${vocabSize - 1})`, 'prompt');
      ids = [...prompt.tokens];
    }
    // A prompt that fills the context exactly is refused below, with the completion's share.
    if (ids.length > maxContext) {
      throw new EngineRequestError(
        `This model's maximum context length is ${maxContext} tokens, but the prompt is ${ids.length} tokens; shorten the prompt.`,
        'prompt',
        'context_length_exceeded',
      );
    }
    if (request.maxTokens === null && ids.length >= maxContext) {
      throw new EngineRequestError(
        `This model's maximum context length is ${maxContext} tokens, and the prompt is ${ids.length} tokens, which leaves no room for a completion; shorten the prompt.`,
        'messages',
        'context_length_exceeded',
      );
    }
    const maxTokens = completionBudget(request, ids.length, maxContext);
    const total = ids.length + maxTokens;
    if (total > maxContext) {
      throw new EngineRequestError(
        `This model's maximum context length is ${maxContext} tokens, but ${total} were requested (${ids.length} in the prompt, ${maxTokens} in the completion); lower max_tokens or shorten the prompt.`,
        'max_tokens',
        'context_length_exceeded',
      );
    }
    if (total > limits.kvCapacityTokens) {
      throw new EngineRequestError(
        `prompt + max_tokens = ${total} tokens exceeds the KV cache budget of ${limits.kvCapacityTokens} tokens; ${request.maxTokens === null ? 'set' : 'lower'} max_tokens.`,
        'max_tokens',
        'kv_cache_budget_exceeded',
      );
    }
    return ids;
  });
}

/**
 * Tokens a sequence of a `promptLength`-token prompt may generate: `request.maxTokens`, or for
 * null the rest of the context (vLLM: max_model_len - prompt length).
 */
export function completionBudget(request: Pick<EngineRequest, 'maxTokens'>, promptLength: number, maxContext: number): number {
  return request.maxTokens ?? Math.max(0, maxContext - promptLength);
}

function isTokenId(id: number, vocabSize: number): boolean {
  return Number.isInteger(id) && id >= 0 && id < vocabSize;
}
