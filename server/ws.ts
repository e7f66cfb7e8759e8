/**
 * WebSocket streaming at `/v1/stream`: one socket carries many requests.
 *
 * Client -> server (JSON text frames):
 * - `{"type":"completion","id":"<client id>", ...the fields of POST /v1/completions}`
 * - `{"type":"chat","id":"<client id>", ...the fields of POST /v1/chat/completions}` (the
 *   messages go through the model's chat template; the answer is the same token stream)
 * - `{"type":"cancel","id":"<client id>"}`
 * Server -> client:
 * - `{"type":"token","id","index","text","token_id","logprob"}` per generated token (plus
 *   `top_logprobs` when `logprobs` was asked; `text` may be '' while a character or a possible
 *   stop string is held back)
 * - `{"type":"echo","id","index","text"}` before the tokens when `echo` is true
 * - `{"type":"done","id","finish_reason","finish_reasons","usage"}` when every choice ended,
 *   or `{"type":"done","id","finish_reason":"cancelled","usage"}` after a cancel, or
 *   `{"type":"done","id","finish_reason":"abort","finish_reasons","usage"}` when a shutdown's
 *   timeout cut the request
 * - `{"type":"error","id","error":{"message","type","param","code","status"}}` (`id` is the
 *   message's own when it has a usable one, even if the message is otherwise invalid; else null)
 * A closed socket cancels all of its requests.
 */
import type { IncomingMessage, Server } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { type RawData, type WebSocket, WebSocketServer } from 'ws';
import { z } from 'zod';
import { acceptChat } from './chat.js';
import { CompletionRun, type RunSpec } from './completion-run.js';
import { type CompletionsContext, acceptRequest, completionSpec } from './completions.js';
import { ApiError, Errors, rawErrorResponse } from './errors.js';
import { type DrainSource, MessageDrain } from './message-drain.js';
import type { ServedModel } from './models.js';
import { parseCompletionRequest, parseWith } from './protocol.js';

/** The WebSocket path. */
export const STREAM_PATH = '/v1/stream';

const envelopeSchema = z.object({
  type: z.enum(['completion', 'chat', 'cancel']),
  id: z.string().min(1).max(256),
});

/** What the WebSocket endpoint needs from the server. */
export interface StreamContext extends CompletionsContext {
  logger: Logger;
  /** Checks the upgrade request's credentials (header or `api_key` query). */
  authorize(req: IncomingMessage): boolean;
  /** True while shutting down: new sockets and new requests are refused. */
  isStopping(): boolean;
}

/**
 * Attaches the WebSocket endpoint to `server` (upgrade requests on {@link STREAM_PATH}).
 * @returns the WebSocketServer (to close its sockets on shutdown)
 */
export function attachStream(server: Server, ctx: StreamContext): WebSocketServer {
  const wss = new WebSocketServer({ noServer: true, maxPayload: 1024 * 1024 });
  // One queue for every socket's messages: arrival order across sockets, and a bounded slice of
  // each event-loop turn, so a flood of messages cannot starve the relay of admitted requests' tokens.
  const messages = new MessageDrain(undefined, (err) => ctx.logger.error({ err }, 'websocket message failed'));
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const refuse = (err: ApiError) => socket.end(rawErrorResponse(err));
    if (url.pathname !== STREAM_PATH) return refuse(Errors.notFound(`WebSocket endpoint ${url.pathname}`));
    if (!ctx.authorize(req)) return refuse(Errors.unauthorized());
    if (ctx.isStopping()) return refuse(Errors.unavailable('The server is shutting down.', 'shutting_down'));
    wss.handleUpgrade(req, socket, head, (ws) => serveSocket(ws, socket, messages, ctx));
  });
  // A handshake ws refuses (wrong method, Upgrade, Sec-WebSocket-Key/-Version/-Protocol header)
  // is answered in the OpenAI error shape rather than ws's plain-text body.
  wss.on('wsClientError', (err: Error, socket: Duplex) => {
    if (!socket.writable) return socket.destroy();
    const status = err.message === 'Invalid HTTP method' ? 405 : 400;
    const apiError = new ApiError(status, `WebSocket handshake refused: ${err.message}.`, 'invalid_request_error', null, 'invalid_handshake');
    socket.end(rawErrorResponse(apiError, err.message.includes('Sec-WebSocket-Version') ? { 'Sec-WebSocket-Version': '13, 8' } : status === 405 ? { Allow: 'GET' } : {}));
  });
  return wss;
}

/** Close frame payloads are limited to 125 bytes: 2 for the code, 123 for the reason. */
export const MAX_CLOSE_REASON_BYTES = 123;

/**
 * A close reason in the OpenAI error shape, `{"error":{"message","type","param","code"}}`
 * (short enough for a close frame), for the codes the server closes with: 1001 (shutdown),
 * 1002 (protocol error), 1007 (invalid UTF-8), 1009 (message too big), 1011 (internal).
 */
export function closeReason(code: number): string {
  return JSON.stringify(closeError(code).body());
}

/** The error a close code stands for (see {@link closeReason}). */
function closeError(code: number): ApiError {
  return code === 1001 ? Errors.unavailable('The server is shutting down.', 'shutting_down')
    : code === 1007 ? Errors.invalid('Text frames must be UTF-8.', null, 'invalid_utf8')
    : code === 1009 ? Errors.invalid('Messages are limited to 1 MiB.', null, 'message_too_big')
    : code === 1011 ? Errors.internal('Internal server error.')
    : Errors.invalid('Invalid WebSocket frame.', null, 'protocol_error');
}

/**
 * Every close of `ws` that carries no reason (ws's own on a protocol error: 1002, 1007, 1009)
 * first sends an `error` message with the full OpenAI error, then closes with the JSON reason
 * of {@link closeReason}.
 */
function withJsonCloseReasons(ws: WebSocket): void {
  const close = ws.close.bind(ws);
  ws.close = (code?: number, reason?: string | Buffer) => {
    if (code !== undefined && code !== 1000 && (reason === undefined || reason.length === 0)) {
      const err = closeError(code);
      reason = JSON.stringify(err.body());
      if (ws.readyState === ws.OPEN) ws.send(JSON.stringify({ type: 'error', id: null, error: { ...err.body().error, status: err.status } }));
    }
    close(code, reason);
  };
}

/**
 * A `send` for `ws` that writes what one event-loop turn sends as one write: the first message of
 * a turn corks `socket` (the socket ws writes to), a `setImmediate` uncorks it. A write per frame
 * is a syscall each: a burst of 10,000 refused messages spent half a second in them, and 16
 * streams' tokens of one decode step went out as 16 writes (docs/overload.md).
 */
function turnBatchedSender(ws: WebSocket, socket: Duplex): (text: string) => void {
  let corked = false;
  const uncork = () => {
    corked = false;
    socket.uncork();
  };
  return (text) => {
    if (ws.readyState !== ws.OPEN) return;
    if (!corked) {
      corked = true;
      socket.cork();
      setImmediate(uncork);
    }
    ws.send(text);
  };
}

function serveSocket(ws: WebSocket, socket: Duplex, messages: MessageDrain, ctx: StreamContext): void {
  withJsonCloseReasons(ws);
  const runs = new Map<string, { run: CompletionRun; untrack: () => void }>();
  const sendText = turnBatchedSender(ws, socket);
  const send = (msg: object) => sendText(JSON.stringify(msg));
  const sendError = (id: string | null, err: ApiError) => send({ type: 'error', id, error: { ...err.body().error, status: err.status } });

  const end = (id: string) => {
    const entry = runs.get(id);
    if (!entry) return;
    runs.delete(id);
    entry.untrack();
    ctx.logger.info(entry.run.summary(), 'completion');
  };

  const source: DrainSource = { pause: () => ws.pause(), resume: () => ws.resume() };
  ws.on('message', (data: RawData, isBinary: boolean) => messages.push(source, () => handle(data, isBinary)));

  const handle = (data: RawData, isBinary: boolean) => {
    if (ws.readyState !== ws.OPEN) return;
    let id: string | null = null;
    try {
      if (isBinary) throw Errors.invalid('Send JSON text frames.', null, 'invalid_json');
      let body: unknown;
      try {
        body = JSON.parse(data.toString());
      } catch (err) {
        throw Errors.invalid(`Malformed JSON message: ${(err as Error).message}`, null, 'invalid_json');
      }
      // Errors name the request whenever the message carries a usable id, even if it is invalid otherwise.
      const claimed = typeof body === 'object' && body !== null ? (body as { id?: unknown }).id : undefined;
      if (envelopeSchema.shape.id.safeParse(claimed).success) id = claimed as string;
      const envelope = parseWith(envelopeSchema, body, 'A WebSocket message');
      id = envelope.id;
      if (envelope.type === 'cancel') return cancel(envelope.id);
      if (runs.has(envelope.id)) throw Errors.invalid(`A request with id '${envelope.id}' is in flight on this socket.`, 'id', 'duplicate_id');
      if (ctx.isStopping()) throw Errors.unavailable('The server is shutting down.', 'shutting_down');
      start(envelope.id, envelope.type, body);
    } catch (err) {
      if (err instanceof ApiError) return sendError(id, err);
      ctx.logger.error({ err }, 'websocket message failed');
      sendError(id, Errors.internal('Internal server error.'));
    }
  };

  const cancel = (id: string) => {
    const entry = runs.get(id);
    if (!entry) return sendError(id, Errors.invalid(`No request with id '${id}' is in flight on this socket.`, 'id', 'unknown_id'));
    entry.run.cancel();
    send({ type: 'done', id, finish_reason: 'cancelled', usage: entry.run.usage() });
    end(id);
  };

  const start = (id: string, type: 'completion' | 'chat', body: unknown) => {
    let model: ServedModel;
    let spec: RunSpec;
    if (type === 'chat') {
      ({ model, spec } = acceptChat(ctx, body, 'ws'));
    } else {
      const accepted = acceptRequest(ctx, body, (b) => parseCompletionRequest(b, 'ws'));
      model = accepted.model;
      spec = completionSpec(accepted.params);
    }
    const run = new CompletionRun(ctx, model, spec, 'ws');
    runs.set(id, { run, untrack: ctx.track(run) });
    const wantLogprobs = spec.logprobs;
    run.start({
      onOutput: (out) => {
        if (out.echo) send({ type: 'echo', id, index: out.index, text: out.echo.text });
        if (out.token) {
          send({
            type: 'token',
            id,
            index: out.index,
            text: out.text,
            token_id: out.token.tokenId,
            logprob: out.token.logprob,
            ...(wantLogprobs ? { top_logprobs: Object.fromEntries((out.token.top ?? []).map((t) => [t.token, t.logprob])) } : {}),
          });
        } else if (out.text) {
          send({ type: 'token', id, index: out.index, text: out.text, token_id: null, logprob: null });
        }
      },
      onDone: ({ choices, usage }) => {
        send({ type: 'done', id, finish_reason: choices[0].finish_reason, finish_reasons: choices.map((c) => c.finish_reason), usage });
        end(id);
      },
      onError: (err) => {
        sendError(id, err);
        end(id);
      },
      onAborted: ({ choices, usage }) => {
        send({ type: 'done', id, finish_reason: 'abort', finish_reasons: choices.map((c) => c.finish_reason), usage });
        end(id);
      },
    });
  };

  ws.on('close', () => {
    messages.drop(source);
    for (const [id, entry] of runs) {
      entry.run.cancel();
      end(id);
    }
  });
  ws.on('error', (err) => ctx.logger.warn({ err }, 'websocket error'));
}
