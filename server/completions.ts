/**
 * `POST /v1/completions`: the JSON response, or Server-Sent Events when `stream` is true
 * (one `data: {chunk}` per token, a final chunk per choice with its finish_reason, a usage
 * chunk with `stream_options.include_usage`, then `data: [DONE]`). A client that disconnects
 * cancels its request in the engine, which frees its batch slot at once.
 */
import type { Request, Response } from 'express';
import type { SequenceOutput } from '../engine/protocol.js';
import { CompletionRun, type RunChoice, type RunContext, type RunListener, type RunResult, type RunSpec } from './completion-run.js';
import { ApiError, Errors, sendError } from './errors.js';
import { type ModelRegistry, type PendingModels, type ServedModel, lookupModel } from './models.js';
import { type CompletionChoice, type CompletionRequest, type CompletionResponse, appendLogprobs, parseCompletionRequest, toEngineRequest } from './protocol.js';

/** What the handler needs from the server. */
export interface CompletionsContext extends RunContext {
  models: ModelRegistry;
  /** Models still being sliced (a request for one is a retryable 503, not a 404). */
  pending: PendingModels;
  /** Registers a run so that shutdown can wait for it. Returns the unregister function. */
  track(run: CompletionRun): () => void;
}

/** The run spec of a validated completion request. */
export function completionSpec(params: CompletionRequest): RunSpec {
  return { idPrefix: 'cmpl', logprobs: params.logprobs != null, toEngine: (id, arrival) => toEngineRequest(params, id, arrival) };
}

/** A completions choice (OpenAI's shape) from a gathered run choice. */
export function completionChoice(c: RunChoice): CompletionChoice {
  return { index: c.index, text: c.text, logprobs: c.tokens ? appendLogprobs(null, c.tokens) : null, finish_reason: c.finish_reason };
}

/**
 * Validates a request body and finds its model; a refused request still counts against the
 * model it names (sliceserve_request_failure_total).
 * @throws ApiError from `parse` or {@link lookupModel}
 */
export function acceptRequest<T extends { model: string }>(ctx: CompletionsContext, body: unknown, parse: (body: unknown) => T): { params: T; model: ServedModel } {
  try {
    const params = parse(body);
    return { params, model: lookupModel(ctx.models, ctx.pending, params.model) };
  } catch (err) {
    const named = (body as { model?: unknown } | undefined)?.model;
    if (err instanceof ApiError && typeof named === 'string' && ctx.models.has(named)) ctx.metrics.observeFailure(named, err.status);
    throw err;
  }
}

/** Registers `run` with the server and cancels it when the response closes early. */
export function attachRun(ctx: CompletionsContext, run: CompletionRun, res: Response): void {
  const untrack = ctx.track(run);
  res.locals.run = run;
  res.on('close', () => {
    run.cancel();
    untrack();
  });
}

/** Builds the express handler of `POST /v1/completions`. */
export function completionsHandler(ctx: CompletionsContext) {
  return (req: Request, res: Response): void => {
    const { params, model } = acceptRequest(ctx, req.body, (body) => parseCompletionRequest(body, 'http'));
    const run = new CompletionRun(ctx, model, completionSpec(params), params.stream ? 'sse' : 'http');
    attachRun(ctx, run, res);
    if (params.stream) streamRun(run, res, params.stream_options?.include_usage === true, params.logprobs != null);
    else jsonRun(run, res);
  };
}

function jsonRun(run: CompletionRun, res: Response): void {
  run.start({
    onDone: ({ choices, usage }) => {
      const body: CompletionResponse = { ...envelope(run), choices: choices.map(completionChoice), usage };
      res.json(body);
    },
    onError: (err) => sendError(res, err),
    onAborted: () => {
      if (!res.headersSent) sendError(res, shutdownCut());
      else res.end();
    },
  });
}

/** The 503 of a request that a shutdown cut before its response started. */
export function shutdownCut(): ApiError {
  return Errors.unavailable('The server shut down before this request finished; retry it.', 'shutting_down');
}

function envelope(run: CompletionRun): Omit<CompletionResponse, 'choices'> {
  return { id: run.id, object: 'text_completion', created: run.created, model: run.model.id };
}

/** Sends the SSE response headers (once the worker accepted the request, so a refusal is still a 4xx). */
export function startEventStream(res: Response): void {
  res.status(200).set({ 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache', Connection: 'keep-alive' });
  res.flushHeaders();
}

/**
 * The end of an event stream, the same for completions and chat chunks: the usage chunk (when
 * the request asked for it, `stream_options.include_usage`) and `data: [DONE]`; an error as an
 * OpenAI error event, or as a plain error response while no header went out; a shutdown cut as
 * one final chunk with finish_reason 'abort' per unfinished choice.
 */
export function eventStreamEnd(res: Response, send: (data: unknown) => void, usageChunk: ((usage: RunResult['usage']) => unknown) | null,
  abortChunk: (index: number) => unknown): Pick<RunListener, 'onDone' | 'onError' | 'onAborted'> {
  const finish = (usage: RunResult['usage']) => {
    if (usageChunk) send(usageChunk(usage));
    res.end('data: [DONE]\n\n');
  };
  return {
    onDone: ({ usage }) => finish(usage),
    onError: (err: ApiError) => {
      if (!res.headersSent) return sendError(res, err);
      send(err.body());
      res.end('data: [DONE]\n\n');
    },
    onAborted: ({ choices, usage }) => {
      if (!res.headersSent) return sendError(res, shutdownCut());
      for (const c of choices) if (c.finish_reason === 'abort') send(abortChunk(c.index));
      finish(usage);
    },
  };
}

function streamRun(run: CompletionRun, res: Response, includeUsage: boolean, wantLogprobs: boolean): void {
  const send = (data: unknown) => res.write(`data: ${JSON.stringify(data)}\n\n`);
  const chunk = (choice: CompletionChoice): CompletionResponse => ({
    ...envelope(run),
    choices: [choice],
    ...(includeUsage ? { usage: null } : {}),
  });
  run.start({
    // Headers go out only once the worker accepted the request, so a too-long prompt is a 400.
    onAccepted: () => startEventStream(res),
    onOutput: (out: SequenceOutput) => {
      let text = out.text;
      let logprobs = null;
      if (out.echo) {
        text = out.echo.text + text;
        if (wantLogprobs && out.echo.tokens) logprobs = appendLogprobs(null, out.echo.tokens);
      }
      if (wantLogprobs && out.token) logprobs = appendLogprobs(logprobs, [out.token]);
      send(chunk({ index: out.index, text, logprobs, finish_reason: out.finishReason ?? null }));
    },
    ...eventStreamEnd(res, send, includeUsage ? (usage) => ({ ...envelope(run), choices: [], usage }) : null,
      (index) => chunk({ index, text: '', logprobs: null, finish_reason: 'abort' })),
  });
}
