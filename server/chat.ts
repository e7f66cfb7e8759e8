/**
 * `POST /v1/chat/completions`: the messages go through the model's chat template
 * (server/chat-template.ts) into one prompt, which runs like a completion; the answer has the
 * chat shape: a `chat.completion` with an assistant message per choice, or with `stream` Server-Sent
 * Events of `chat.completion.chunk`s: per choice first a delta with the role, then content deltas
 * (with their logprobs), the choice's finish_reason last; a usage chunk with
 * `stream_options.include_usage`; then `data: [DONE]`.
 */
import type { Request, Response } from 'express';
import type { SequenceOutput } from '../engine/protocol.js';
import { type ChatChunk, type ChatChunkChoice, type ChatRequest, type ChatResponse, chatLogprobs, chatToEngineRequest, parseChatRequest, renderChatPrompt } from './chat-protocol.js';
import { noChatTemplate } from './chat-template.js';
import { CompletionRun, type RunChoice, type RunSpec } from './completion-run.js';
import { type CompletionsContext, acceptRequest, attachRun, eventStreamEnd, shutdownCut, startEventStream } from './completions.js';
import { ApiError, sendError } from './errors.js';
import type { ServedModel } from './models.js';

/**
 * The run spec of a chat request for `model`: its rendered prompt, encoded as the request says.
 * @throws ApiError 400 when the model has no chat template (naming --chat-template) or the template refuses the messages
 */
export function chatSpec(params: ChatRequest, model: ServedModel): RunSpec {
  if (!model.chatTemplate) throw noChatTemplate(model.id);
  const prompt = renderChatPrompt(params, model.chatTemplate);
  return { idPrefix: 'chatcmpl', logprobs: params.logprobs === true, toEngine: (id, arrival) => chatToEngineRequest(params, prompt, id, arrival) };
}

/**
 * Validates a chat body and prepares its run: the model, and the spec with the rendered prompt.
 * A refused request counts against the model it names.
 */
export function acceptChat(ctx: CompletionsContext, body: unknown, transport: 'http' | 'ws'): { params: ChatRequest; model: ServedModel; spec: RunSpec } {
  const { params, model } = acceptRequest(ctx, body, (b) => parseChatRequest(b, transport));
  try {
    return { params, model, spec: chatSpec(params, model) };
  } catch (err) {
    if (err instanceof ApiError) ctx.metrics.observeFailure(model.id, err.status);
    throw err;
  }
}

/** Builds the express handler of `POST /v1/chat/completions`. */
export function chatHandler(ctx: CompletionsContext) {
  return (req: Request, res: Response): void => {
    const { params, model, spec } = acceptChat(ctx, req.body, 'http');
    const run = new CompletionRun(ctx, model, spec, params.stream ? 'sse' : 'http');
    attachRun(ctx, run, res);
    if (params.stream) streamChat(run, res, params);
    else jsonChat(run, res, params);
  };
}

function envelope<T extends 'chat.completion' | 'chat.completion.chunk'>(run: CompletionRun, object: T) {
  return { id: run.id, object, created: run.created, model: run.model.id };
}

/** A gathered choice in the response shape. */
function chatChoice(c: RunChoice, topLogprobs: number): ChatResponse['choices'][number] {
  return {
    index: c.index,
    message: { role: 'assistant', content: c.text, refusal: null },
    logprobs: c.tokens ? chatLogprobs(c.tokens, topLogprobs) : null,
    finish_reason: c.finish_reason,
  };
}

function jsonChat(run: CompletionRun, res: Response, params: ChatRequest): void {
  run.start({
    onDone: ({ choices, usage }) => {
      const body: ChatResponse = { ...envelope(run, 'chat.completion'), choices: choices.map((c) => chatChoice(c, params.top_logprobs ?? 0)), usage };
      res.json(body);
    },
    onError: (err) => sendError(res, err),
    onAborted: () => {
      if (!res.headersSent) sendError(res, shutdownCut());
      else res.end();
    },
  });
}

function streamChat(run: CompletionRun, res: Response, params: ChatRequest): void {
  const includeUsage = params.stream_options?.include_usage === true;
  const k = params.top_logprobs ?? 0;
  const send = (data: unknown) => res.write(`data: ${JSON.stringify(data)}\n\n`);
  const chunk = (choice: ChatChunkChoice): ChatChunk => ({
    ...envelope(run, 'chat.completion.chunk'),
    choices: [choice],
    ...(includeUsage ? { usage: null } : {}),
  });
  run.start({
    onAccepted: () => {
      startEventStream(res);
      for (let i = 0; i < (params.n ?? 1); i++) send(chunk({ index: i, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }));
    },
    onOutput: (out: SequenceOutput) => {
      const logprobs = params.logprobs && out.token ? chatLogprobs([out.token], k) : null;
      if (out.finishReason) {
        send(chunk({ index: out.index, delta: out.text ? { content: out.text } : {}, logprobs, finish_reason: out.finishReason }));
      } else if (out.text || logprobs) {
        // Tokens whose text is held back (a partial character, a possible stop string) send nothing, unless they carry logprobs.
        send(chunk({ index: out.index, delta: { content: out.text }, logprobs, finish_reason: null }));
      }
    },
    ...eventStreamEnd(res, send, includeUsage ? (usage) => ({ ...envelope(run, 'chat.completion.chunk'), choices: [], usage }) : null,
      (index) => chunk({ index, delta: {}, logprobs: null, finish_reason: 'abort' })),
  });
}
