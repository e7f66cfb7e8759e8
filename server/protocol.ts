/**
 * The OpenAI completions protocol (as vLLM serves it, ../shared/reference/SERVING.md):
 * request validation with zod at the edge, conversion to an {@link EngineRequest}, and the
 * response / stream-chunk types. Snake_case on the wire, camelCase inside.
 */
import { z } from 'zod';
import type { EngineRequest, FinishReason, TokenEntry } from '../engine/protocol.js';
import { ApiError, Errors } from './errors.js';

const tokenIds = z.array(z.number().int().min(0)).min(1);

/** Fields of `POST /v1/completions` (and of a WebSocket `completion` message). */
export const completionRequestSchema = z.object({
  model: z.string().min(1),
  prompt: z.union([z.string(), z.array(z.string()).min(1), tokenIds, z.array(tokenIds).min(1)]),
  max_tokens: z.number().int().min(0).nullish(),
  temperature: z.number().min(0).max(2).nullish(),
  top_p: z.number().gt(0).max(1).nullish(),
  top_k: z.number().int().min(-1).nullish(),
  n: z.number().int().min(1).max(64).nullish(),
  best_of: z.number().int().min(1).nullish(),
  stop: z.union([z.string(), z.array(z.string()).max(16)]).nullish(),
  stream: z.boolean().nullish(),
  stream_options: z.object({ include_usage: z.boolean().nullish() }).nullish(),
  logprobs: z.number().int().min(0).max(20).nullish(),
  echo: z.boolean().nullish(),
  seed: z.number().int().min(-(2 ** 53)).max(2 ** 53).nullish(),
  presence_penalty: z.number().min(-2).max(2).nullish(),
  frequency_penalty: z.number().min(-2).max(2).nullish(),
  logit_bias: z.record(z.string().regex(/^\d+$/, 'keys must be token ids'), z.number().min(-100).max(100)).nullish(),
  user: z.string().nullish(),
  suffix: z.string().nullish(),
  // vLLM extras
  min_tokens: z.number().int().min(0).nullish(),
  stop_token_ids: z.array(z.number().int().min(0)).nullish(),
  ignore_eos: z.boolean().nullish(),
});

/** A validated completion request. */
export type CompletionRequest = z.infer<typeof completionRequestSchema>;

/** OpenAI's default max_tokens for completions. */
export const DEFAULT_MAX_TOKENS = 16;

/**
 * Validates `body` against {@link completionRequestSchema} plus the cross-field rules.
 * @param transport 'http' checks `stream_options` without `stream`; 'ws' ignores both.
 * @throws ApiError 400 naming the first offending field (`param`).
 */
export function parseCompletionRequest(body: unknown, transport: 'http' | 'ws'): CompletionRequest {
  const parsed = parseWith(completionRequestSchema, body);
  if (transport === 'http' && parsed.stream_options != null && !parsed.stream) {
    throw Errors.invalid('stream_options is only allowed when stream is true.', 'stream_options');
  }
  if (parsed.suffix) throw Errors.invalid('suffix is not supported by this server.', 'suffix', 'unsupported');
  const n = parsed.n ?? 1;
  if (parsed.best_of != null && parsed.best_of !== n) {
    throw Errors.invalid('best_of other than n is not supported by this server.', 'best_of', 'unsupported');
  }
  const maxTokens = parsed.max_tokens ?? DEFAULT_MAX_TOKENS;
  if ((parsed.min_tokens ?? 0) > maxTokens) throw Errors.invalid(`min_tokens (${parsed.min_tokens}) must not exceed max_tokens (${maxTokens}).`, 'min_tokens');
  return parsed;
}

/** Parses with a zod schema; the first issue becomes a 400 naming its field. */
export function parseWith<T extends z.ZodType>(schema: T, body: unknown): z.infer<T> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw Errors.invalid('The request body must be a JSON object.', null, 'invalid_json');
  }
  const result = schema.safeParse(body);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  const where = issue.path.length > 0 ? issue.path.map(String).join('.') : 'body';
  // `param` names the top-level field, as OpenAI does; the message gives the full path.
  throw Errors.invalid(`${where}: ${issue.message}`, issue.path.length > 0 ? String(issue.path[0]) : null);
}

/** Normalises `prompt` to a list of prompts. */
function prompts(prompt: CompletionRequest['prompt']): EngineRequest['prompts'] {
  if (typeof prompt === 'string') return [{ text: prompt }];
  if (prompt.length > 0 && typeof prompt[0] === 'number') return [{ tokens: prompt as number[] }];
  return (prompt as (string | number[])[]).map((p) => (typeof p === 'string' ? { text: p } : { tokens: p }));
}

/** The engine request for a validated completion request. */
export function toEngineRequest(req: CompletionRequest, requestId: string, arrivalTime: number): EngineRequest {
  const logitBias = req.logit_bias ? Object.fromEntries(Object.entries(req.logit_bias).map(([k, v]) => [Number(k), v])) : undefined;
  return {
    requestId,
    prompts: prompts(req.prompt),
    n: req.n ?? 1,
    maxTokens: req.max_tokens ?? DEFAULT_MAX_TOKENS,
    minTokens: req.min_tokens ?? 0,
    stop: req.stop == null ? [] : typeof req.stop === 'string' ? [req.stop] : req.stop,
    stopTokenIds: req.stop_token_ids ?? [],
    ignoreEos: req.ignore_eos ?? false,
    logprobs: req.logprobs ?? null,
    echo: req.echo ?? false,
    sampling: {
      temperature: req.temperature ?? 1,
      topP: req.top_p ?? 1,
      topK: req.top_k != null && req.top_k > 0 ? req.top_k : 0,
      seed: req.seed ?? undefined,
      presencePenalty: req.presence_penalty ?? 0,
      frequencyPenalty: req.frequency_penalty ?? 0,
      logitBias,
    },
    arrivalTime,
  };
}

/** OpenAI completions `logprobs` object. */
export interface CompletionLogprobs {
  tokens: string[];
  token_logprobs: (number | null)[];
  top_logprobs: (Record<string, number> | null)[];
  text_offset: number[];
}

/** Appends token entries to a logprobs object (created if null). */
export function appendLogprobs(target: CompletionLogprobs | null, entries: readonly TokenEntry[]): CompletionLogprobs {
  const lp = target ?? { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] };
  for (const e of entries) {
    lp.tokens.push(e.token);
    lp.token_logprobs.push(e.logprob);
    lp.top_logprobs.push(e.top ? Object.fromEntries(e.top.map((t) => [t.token, t.logprob])) : null);
    lp.text_offset.push(e.textOffset);
  }
  return lp;
}

/** Why a choice ended: the engine's reasons, or 'abort' when a shutdown cut it (vLLM's value). */
export type ChoiceFinishReason = FinishReason | 'abort';

/** One choice of a completion response or chunk. */
export interface CompletionChoice {
  index: number;
  text: string;
  logprobs: CompletionLogprobs | null;
  finish_reason: ChoiceFinishReason | null;
}

/** Token counts of a request. */
export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

/** Response of a non-streaming completion (and, with partial choices, a stream chunk). */
export interface CompletionResponse {
  id: string;
  object: 'text_completion';
  created: number;
  model: string;
  choices: CompletionChoice[];
  usage?: Usage | null;
}

/** Narrow helper so callers can rethrow non-API errors. */
export function isApiError(err: unknown): err is ApiError {
  return err instanceof ApiError;
}
