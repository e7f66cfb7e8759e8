/**
 * `POST /v1/completions`: the JSON response, or Server-Sent Events when `stream` is true
 * (one `data: {chunk}` per token, a final chunk per choice with its finish_reason, a usage
 * chunk with `stream_options.include_usage`, then `data: [DONE]`). A client that disconnects
 * cancels its request in the engine, which frees its batch slot at once.
 */
import type { Request, Response } from 'express';
import type { SequenceOutput } from '../engine/protocol.js';
import { CompletionRun, type RunContext } from './completion-run.js';
import { ApiError, Errors, sendError } from './errors.js';
import type { ModelRegistry } from './models.js';
import { type CompletionChoice, type CompletionResponse, appendLogprobs, parseCompletionRequest } from './protocol.js';

/** What the handler needs from the server. */
export interface CompletionsContext extends RunContext {
  models: ModelRegistry;
  /** Registers a run so that shutdown can wait for it. Returns the unregister function. */
  track(run: CompletionRun): () => void;
}

/** Builds the express handler of `POST /v1/completions`. */
export function completionsHandler(ctx: CompletionsContext) {
  return (req: Request, res: Response): void => {
    let params: ReturnType<typeof parseCompletionRequest>;
    let model: ReturnType<CompletionsContext['models']['get']>;
    try {
      params = parseCompletionRequest(req.body, 'http');
      model = ctx.models.get(params.model);
    } catch (err) {
      // A request refused before it reaches a model still counts against the model it names.
      const named = (req.body as { model?: unknown } | undefined)?.model;
      if (err instanceof ApiError && typeof named === 'string' && ctx.models.has(named)) ctx.metrics.observeFailure(named, err.status);
      throw err;
    }
    const run = new CompletionRun(ctx, model, params, params.stream ? 'sse' : 'http');
    const untrack = ctx.track(run);
    res.locals.run = run;
    res.on('close', () => {
      run.cancel();
      untrack();
    });
    if (params.stream) streamRun(run, res, params.stream_options?.include_usage === true);
    else jsonRun(run, res);
  };
}

function jsonRun(run: CompletionRun, res: Response): void {
  run.start({
    onDone: ({ choices, usage }) => {
      const body: CompletionResponse = { ...envelope(run), choices, usage };
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
function shutdownCut(): ApiError {
  return Errors.unavailable('The server shut down before this request finished; retry it.', 'shutting_down');
}

function envelope(run: CompletionRun): Omit<CompletionResponse, 'choices'> {
  return { id: run.id, object: 'text_completion', created: run.created, model: run.model.id };
}

function streamRun(run: CompletionRun, res: Response, includeUsage: boolean): void {
  const send = (data: unknown) => res.write(`data: ${JSON.stringify(data)}\n\n`);
  const chunk = (choice: CompletionChoice): CompletionResponse => ({
    ...envelope(run),
    choices: [choice],
    ...(includeUsage ? { usage: null } : {}),
  });
  const wantLogprobs = run.request.logprobs != null;
  run.start({
    // Headers go out only once the worker accepted the request, so a too-long prompt is a 400.
    onAccepted: () => {
      res.status(200).set({ 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache', Connection: 'keep-alive' });
      res.flushHeaders();
    },
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
    onDone: ({ usage }) => {
      if (includeUsage) send({ ...envelope(run), choices: [], usage });
      res.end('data: [DONE]\n\n');
    },
    onError: (err: ApiError) => {
      if (!res.headersSent) return sendError(res, err);
      send(err.body());
      res.end('data: [DONE]\n\n');
    },
    // A shutdown cut the stream: each unfinished choice gets a final chunk with 'abort'.
    onAborted: ({ choices, usage }) => {
      if (!res.headersSent) return sendError(res, shutdownCut());
      for (const c of choices) if (c.finish_reason === 'abort') send(chunk({ index: c.index, text: '', logprobs: null, finish_reason: 'abort' }));
      if (includeUsage) send({ ...envelope(run), choices: [], usage });
      res.end('data: [DONE]\n\n');
    },
  });
}
