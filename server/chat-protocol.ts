/**
 * The OpenAI chat completions protocol as vLLM serves it (`POST /v1/chat/completions`):
 * request validation with zod, the prompt from the model's chat template, conversion to an
 * {@link EngineRequest}, and the response, stream-chunk and logprobs shapes.
 *
 * Fields: `messages` (roles system / developer / user / assistant / tool; content a string, a
 * list of text parts, or null for an assistant turn with tool calls), `max_completion_tokens` or
 * the older `max_tokens` (default: the rest of the context, as vLLM), `temperature`, `top_p`,
 * `n`, `stop`, `seed`, `stream`, `stream_options.include_usage`, `logprobs` (boolean) with
 * `top_logprobs` (0..20), `presence_penalty`, `frequency_penalty`, `logit_bias`, `user`, and
 * vLLM's extras: `top_k`, `min_tokens`, `stop_token_ids`, `ignore_eos`, `add_generation_prompt`
 * (default true), `continue_final_message`, `add_special_tokens` (default false: the template
 * holds them), `chat_template_kwargs`. Tool calling and response formats other than text are
 * refused with a 400 naming the field.
 */
import { z } from 'zod';
import type { EngineRequest, TokenEntry } from '../engine/protocol.js';
import type { ChatMessage, ChatTemplate } from './chat-template.js';
import { Errors } from './errors.js';
import { type ChoiceFinishReason, type Usage, engineFields, parseWith, preview, samplingFields } from './protocol.js';

const textPart = z.object({ type: z.literal('text'), text: z.string() });

const content = z.union([z.string(), z.array(z.unknown())]).nullable();

/** One message of `messages`. */
export const messageSchema = z.object({
  role: z.string().min(1),
  content: content.optional(),
  name: z.string().nullish(),
  tool_call_id: z.string().nullish(),
  tool_calls: z.array(z.unknown()).nullish(),
  reasoning_content: z.string().nullish(),
});

/** Fields of `POST /v1/chat/completions` (and of a WebSocket `chat` message). */
export const chatRequestSchema = z.object({
  ...samplingFields,
  messages: z.array(messageSchema).min(1, 'must hold at least one message'),
  max_tokens: z.number().int().min(1).nullish(),
  max_completion_tokens: z.number().int().min(1).nullish(),
  logprobs: z.boolean().nullish(),
  top_logprobs: z.number().int().min(0).max(20).nullish(),
  // vLLM extras
  add_generation_prompt: z.boolean().nullish(),
  continue_final_message: z.boolean().nullish(),
  add_special_tokens: z.boolean().nullish(),
  chat_template_kwargs: z.record(z.string(), z.unknown()).nullish(),
  // refused unless harmless
  tools: z.array(z.unknown()).nullish(),
  tool_choice: z.unknown().optional(),
  response_format: z.object({ type: z.string() }).loose().nullish(),
});

/** A validated chat request. */
export type ChatRequest = z.infer<typeof chatRequestSchema>;

/**
 * Validates `body` as a chat request: the schema, then the rules across fields.
 * @param transport 'http' checks `stream_options` without `stream`; 'ws' ignores both
 * @throws ApiError 400 naming the field (`param`): a bad field, `top_logprobs` without
 *   `logprobs`, content parts other than text, `add_generation_prompt` with
 *   `continue_final_message`, tools, a response format other than text
 */
export function parseChatRequest(body: unknown, transport: 'http' | 'ws'): ChatRequest {
  const req = parseWith(chatRequestSchema, body);
  if (transport === 'http' && req.stream_options != null && !req.stream) {
    throw Errors.invalid('stream_options is only allowed when stream is true.', 'stream_options');
  }
  if (req.top_logprobs != null && !req.logprobs) throw Errors.invalid('top_logprobs needs "logprobs": true.', 'top_logprobs');
  checkMessages(req.messages);
  checkTemplateOptions(req);
  if (req.tools && req.tools.length > 0) throw Errors.invalid('tools (function calling) are not supported by this server.', 'tools', 'unsupported');
  if (req.tool_choice !== undefined && req.tool_choice !== null && req.tool_choice !== 'none') {
    throw Errors.invalid('tool_choice other than "none" is not supported by this server (no tool calling).', 'tool_choice', 'unsupported');
  }
  if (req.response_format && req.response_format.type !== 'text') {
    throw Errors.invalid(`response_format ${JSON.stringify(req.response_format.type)} is not supported by this server; only "text" is.`, 'response_format', 'unsupported');
  }
  const maxTokens = req.max_completion_tokens ?? req.max_tokens;
  if (maxTokens != null && (req.min_tokens ?? 0) > maxTokens) {
    throw Errors.invalid(`min_tokens (${req.min_tokens}) must not exceed max_completion_tokens (${maxTokens}).`, 'min_tokens');
  }
  return req;
}

/** The fields that decide the prompt a chat template renders (chat requests and POST /tokenize). */
export type ChatPromptFields = Pick<ChatRequest, 'messages' | 'add_generation_prompt' | 'continue_final_message' | 'chat_template_kwargs'>;

/**
 * Checks messages beyond the schema: content parts must be text; content is required but for
 * an assistant turn with tool calls.
 * @throws ApiError 400 (param `messages`) naming the message and part
 */
export function checkMessages(messages: ChatRequest['messages']): void {
  messages.forEach((m, i) => {
    if (Array.isArray(m.content)) {
      m.content.forEach((part, j) => {
        if (!textPart.safeParse(part).success) {
          const type = part && typeof part === 'object' ? (part as { type?: unknown }).type : undefined;
          throw Errors.invalid(
            `messages.${i}.content.${j}: only text parts ({"type": "text", "text": "..."}) are supported by this server; got ${typeof type === 'string' ? `a "${type}" part` : preview(part)}.`,
            'messages',
          );
        }
      });
    }
    if ((m.content === undefined || m.content === null) && !(m.role === 'assistant' && m.tool_calls)) {
      throw Errors.invalid(`messages.${i}.content: is required for a ${m.role} message.`, 'messages');
    }
  });
}

/**
 * `add_generation_prompt` and `continue_final_message` exclude each other (transformers and
 * vLLM refuse both); continuing needs an assistant message last.
 * @throws ApiError 400 naming `continue_final_message`
 */
export function checkTemplateOptions(req: ChatPromptFields): void {
  if (req.add_generation_prompt === true && req.continue_final_message) {
    throw Errors.invalid('add_generation_prompt and continue_final_message cannot both be true: the first opens a new assistant turn, the second continues the last message.', 'continue_final_message');
  }
  if (req.continue_final_message && req.messages.at(-1)?.role !== 'assistant') {
    throw Errors.invalid('continue_final_message needs an assistant message last (the text to continue).', 'continue_final_message');
  }
}

/**
 * The request's messages as the template receives them. An assistant turn's `tool_calls` reach
 * the template with each `function.arguments` as an object, as transformers' tool-use templates
 * expect and vLLM passes them (`_postprocess_messages`: the OpenAI JSON string is parsed; empty,
 * malformed or non-object arguments become `{}`; an empty `tool_calls` list is dropped).
 * @throws ApiError 400 (param `messages`) for a tool call that is not an object of type
 *   "function" with a `function` object
 */
export function templateMessages(req: Pick<ChatRequest, 'messages'>): ChatMessage[] {
  return req.messages.map((m, i) => {
    const msg: ChatMessage = { role: m.role, content: (m.content ?? null) as ChatMessage['content'] };
    if (m.name != null) msg.name = m.name;
    if (m.tool_call_id != null) msg.tool_call_id = m.tool_call_id;
    if (m.tool_calls != null && !(m.role === 'assistant' && m.tool_calls.length === 0)) {
      msg.tool_calls = m.role === 'assistant' ? m.tool_calls.map((call, j) => toolCallForTemplate(call, `messages.${i}.tool_calls.${j}`)) : m.tool_calls;
    }
    if (m.reasoning_content != null) msg.reasoning_content = m.reasoning_content;
    return msg;
  });
}

/** One assistant tool call with its arguments as an object (see {@link templateMessages}). */
function toolCallForTemplate(call: unknown, where: string): unknown {
  const c = call as { type?: unknown; function?: unknown } | null;
  const fn = c && typeof c === 'object' ? c.function : undefined;
  if (!c || typeof c !== 'object' || Array.isArray(c) || (c.type ?? 'function') !== 'function' || !fn || typeof fn !== 'object' || Array.isArray(fn)) {
    throw Errors.invalid(`${where}: a tool call must be {"type": "function", "function": {"name": ..., "arguments": ...}}.`, 'messages');
  }
  const args = (fn as { arguments?: unknown }).arguments;
  let parsed: unknown = args;
  if (typeof args === 'string') {
    try {
      parsed = args === '' ? {} : JSON.parse(args);
    } catch {
      parsed = {};
    }
  }
  const isObject = parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed);
  return { ...c, function: { ...fn, arguments: isObject ? parsed : {} } };
}

/**
 * The prompt text of a chat request: its messages through the model's template with
 * `add_generation_prompt` (default true unless `continue_final_message`), and the request's
 * `chat_template_kwargs`.
 * @throws ApiError 400 from {@link ChatTemplate.render}
 */
export function renderChatPrompt(req: ChatPromptFields, template: ChatTemplate): string {
  return template.render(templateMessages(req), {
    addGenerationPrompt: req.add_generation_prompt ?? !req.continue_final_message,
    continueFinalMessage: req.continue_final_message ?? false,
    kwargs: req.chat_template_kwargs ?? undefined,
  });
}

/**
 * The engine request of a chat request whose prompt is `prompt` (rendered): encoded without
 * special tokens unless `add_special_tokens`; `max_completion_tokens` (or `max_tokens`), else the
 * rest of the context; `logprobs` asks the engine for the sampled token's logprob plus
 * `top_logprobs` alternatives.
 */
export function chatToEngineRequest(req: ChatRequest, prompt: string, requestId: string, arrivalTime: number): EngineRequest {
  return {
    ...engineFields(req, requestId, arrivalTime),
    prompts: [{ text: prompt, addSpecialTokens: req.add_special_tokens ?? false }],
    maxTokens: req.max_completion_tokens ?? req.max_tokens ?? null,
    logprobs: req.logprobs ? (req.top_logprobs ?? 0) : null,
    echo: false,
  };
}

/** One alternative of a chat logprobs entry. */
export interface ChatTopLogprob {
  token: string;
  logprob: number;
  /** UTF-8 bytes of `token`. */
  bytes: number[];
}

/** One generated token of a chat choice's `logprobs.content`. */
export interface ChatLogprobEntry extends ChatTopLogprob {
  /** The `top_logprobs` most likely tokens at this position, most likely first. */
  top_logprobs: ChatTopLogprob[];
}

/** A chat choice's `logprobs`. */
export interface ChatLogprobs {
  content: ChatLogprobEntry[];
  refusal: null;
}

/**
 * Chat logprobs of generated tokens (OpenAI's shape): each token's text, logprob and UTF-8
 * bytes, with the `k` most likely alternatives (the engine's list also holds the sampled token
 * when it is not among them; it is cut to `k`).
 */
export function chatLogprobs(entries: readonly TokenEntry[], k: number): ChatLogprobs {
  return {
    content: entries.map((e) => ({
      ...scored(e.token, e.logprob ?? 0),
      top_logprobs: [...(e.top ?? [])]
        .sort((a, b) => b.logprob - a.logprob)
        .slice(0, k)
        .map((t) => scored(t.token, t.logprob)),
    })),
    refusal: null,
  };
}

function scored(token: string, logprob: number): ChatTopLogprob {
  return { token, logprob, bytes: [...Buffer.from(token, 'utf8')] };
}

/** The assistant message of a chat choice. */
export interface ChatMessageOut {
  role: 'assistant';
  content: string;
  refusal: null;
}

/** One choice of a chat response. */
export interface ChatChoice {
  index: number;
  message: ChatMessageOut;
  logprobs: ChatLogprobs | null;
  finish_reason: ChoiceFinishReason | null;
}

/** Response of a non-streaming chat completion. */
export interface ChatResponse {
  id: string;
  object: 'chat.completion';
  created: number;
  model: string;
  choices: ChatChoice[];
  usage: Usage;
}

/** One choice of a stream chunk: a delta of the message. */
export interface ChatChunkChoice {
  index: number;
  delta: { role?: 'assistant'; content?: string };
  logprobs: ChatLogprobs | null;
  finish_reason: ChoiceFinishReason | null;
}

/** A `chat.completion.chunk`. */
export interface ChatChunk {
  id: string;
  object: 'chat.completion.chunk';
  created: number;
  model: string;
  choices: ChatChunkChoice[];
  usage?: Usage | null;
}
