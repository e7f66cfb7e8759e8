/**
 * The OpenAI completions protocol (as vLLM serves it, ../shared/reference/SERVING.md):
 * request validation with zod at the edge, conversion to an {@link EngineRequest}, and the
 * response / stream-chunk types. Snake_case on the wire, camelCase inside.
 */
import { z } from 'zod';
import type { EngineRequest, FinishReason, TokenEntry } from '../engine/protocol.js';
import { ApiError, Errors } from './errors.js';

const tokenIds = z.array(z.number().int().min(0)).min(1);

/** Stop strings per request at most. */
export const MAX_STOP_STRINGS = 16;

/** What `prompt` accepts, for its error message. */
const PROMPT_FORMS =
  'a string, an array of strings, an array of token ids (integers >= 0), or an array of token-id arrays; arrays must be non-empty';

/**
 * Fields that `POST /v1/completions` and `POST /v1/chat/completions` share: sampling, stop
 * conditions, streaming, and the vLLM extras (`top_k`, `min_tokens`, `stop_token_ids`, `ignore_eos`).
 */
export const samplingFields = {
  model: z.string().min(1),
  temperature: z.number().min(0).max(2).nullish(),
  top_p: z.number().gt(0).max(1).nullish(),
  top_k: z.number().int().min(-1).nullish(),
  n: z.number().int().min(1).max(64).nullish(),
  stop: z
    .union([z.string(), z.array(z.string()).max(MAX_STOP_STRINGS)], {
      error: (iss) =>
        Array.isArray(iss.input) && iss.input.length > MAX_STOP_STRINGS && iss.input.every((x) => typeof x === 'string')
          ? `must have at most ${MAX_STOP_STRINGS} strings; got ${iss.input.length}`
          : `must be a string or an array of at most ${MAX_STOP_STRINGS} strings; got ${preview(iss.input)}`,
    })
    .nullish(),
  stream: z.boolean().nullish(),
  stream_options: z.object({ include_usage: z.boolean().nullish() }).nullish(),
  seed: z.number().int().min(-(2 ** 53)).max(2 ** 53).nullish(),
  presence_penalty: z.number().min(-2).max(2).nullish(),
  frequency_penalty: z.number().min(-2).max(2).nullish(),
  logit_bias: z.record(z.string().regex(/^\d+$/, 'keys must be token ids'), z.number().min(-100).max(100)).nullish(),
  user: z.string().nullish(),
  // vLLM extras
  min_tokens: z.number().int().min(0).nullish(),
  stop_token_ids: z.array(z.number().int().min(0)).nullish(),
  ignore_eos: z.boolean().nullish(),
};

/** Fields of `POST /v1/completions` (and of a WebSocket `completion` message). */
export const completionRequestSchema = z.object({
  ...samplingFields,
  prompt: z.union([z.string(), z.array(z.string()).min(1), tokenIds, z.array(tokenIds).min(1)], {
    error: (iss) => (iss.input === undefined ? `is required: ${PROMPT_FORMS}` : `must be ${PROMPT_FORMS}; got ${preview(iss.input)}`),
  }),
  max_tokens: z.number().int().min(0).nullish(),
  best_of: z.number().int().min(1).nullish(),
  logprobs: z.number().int().min(0).max(20).nullish(),
  echo: z.boolean().nullish(),
  suffix: z.string().nullish(),
});

/** The shared fields of a validated completion or chat request. */
export type SamplingRequest = z.infer<z.ZodObject<typeof samplingFields>>;

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

/**
 * Parses with a zod object schema; the first issue becomes a 400 naming its field. A body that
 * is missing or not a JSON object is a 400 naming the required fields.
 * @param what how messages name the body ('The request body', 'A WebSocket message')
 */
export function parseWith<T extends z.ZodObject>(schema: T, body: unknown, what = 'The request body'): z.infer<T> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    const required = requiredFields(schema);
    const fields = required.length > 0 ? ` with at least ${required.map((f) => `"${f}"`).join(' and ')}` : '';
    throw Errors.invalid(`${what} must be a JSON object${fields}; got ${body === undefined ? 'an empty body' : preview(body)}.`, null, 'invalid_json');
  }
  const result = schema.safeParse(body);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  const where = issue.path.length > 0 ? issue.path.map(String).join('.') : 'body';
  let message = issue.message;
  if (issue.code === 'invalid_type' && issue.expected === 'int') message = `must be an integer; got ${preview(valueAt(body, issue.path))}`;
  // A bad record key: zod says "Invalid key in record"; the key's own check says what keys must be.
  if (issue.code === 'invalid_key' && issue.issues.length > 0) message = `${issue.issues[0].message}; got key ${JSON.stringify(String(issue.path.at(-1)))}`;
  // `param` names the top-level field, as OpenAI does; the message gives the full path.
  throw Errors.invalid(`${where}: ${message}`, issue.path.length > 0 ? String(issue.path[0]) : null);
}

/** The fields of an object schema that a body must have. */
function requiredFields(schema: z.ZodObject): string[] {
  return Object.entries(schema.shape)
    .filter(([, field]) => !(field as z.ZodType).safeParse(undefined).success)
    .map(([key]) => key);
}

function valueAt(body: unknown, path: readonly PropertyKey[]): unknown {
  let v = body;
  for (const key of path) v = v != null && typeof v === 'object' ? (v as Record<PropertyKey, unknown>)[key] : undefined;
  return v;
}

/** A short JSON rendering of a value for an error message. */
export function preview(value: unknown): string {
  if (value === undefined) return 'nothing';
  let json: string;
  try {
    json = JSON.stringify(value);
  } catch {
    // A value nested deeper than JSON.stringify's stack allows (a parsed body can be).
    return Array.isArray(value) ? 'a deeply nested array' : 'a deeply nested object';
  }
  return json.length > 40 ? `${json.slice(0, 37)}...` : json;
}

/** Normalises `prompt` to a list of prompts. */
function prompts(prompt: CompletionRequest['prompt']): EngineRequest['prompts'] {
  if (typeof prompt === 'string') return [{ text: prompt }];
  if (prompt.length > 0 && typeof prompt[0] === 'number') return [{ tokens: prompt as number[] }];
  return (prompt as (string | number[])[]).map((p) => (typeof p === 'string' ? { text: p } : { tokens: p }));
}

/** The engine request for a validated completion request. */
export function toEngineRequest(req: CompletionRequest, requestId: string, arrivalTime: number): EngineRequest {
  return {
    ...engineFields(req, requestId, arrivalTime),
    prompts: prompts(req.prompt),
    maxTokens: req.max_tokens ?? DEFAULT_MAX_TOKENS,
    logprobs: req.logprobs ?? null,
    echo: req.echo ?? false,
  };
}

/**
 * The engine fields that completions and chat requests share (n, stop conditions, sampling).
 * `temperature` defaults to 1 and `top_p` to 1, as OpenAI's.
 */
export function engineFields(req: SamplingRequest, requestId: string, arrivalTime: number): Omit<EngineRequest, 'prompts' | 'maxTokens' | 'logprobs' | 'echo'> {
  const logitBias = req.logit_bias ? Object.fromEntries(Object.entries(req.logit_bias).map(([k, v]) => [Number(k), v])) : undefined;
  return {
    requestId,
    n: req.n ?? 1,
    minTokens: req.min_tokens ?? 0,
    stop: req.stop == null ? [] : typeof req.stop === 'string' ? [req.stop] : req.stop,
    stopTokenIds: req.stop_token_ids ?? [],
    ignoreEos: req.ignore_eos ?? false,
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
