/**
 * API errors in the OpenAI shape: `{"error": {"message", "type", "param", "code"}}` with the
 * matching HTTP status, and the express error handler that turns every failure (bad JSON,
 * oversized body, validation, unknown model, internal errors) into that shape. The server
 * never dies on a bad request.
 */
import type { Server } from 'node:http';
import { STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import type { ErrorRequestHandler, RequestHandler } from 'express';
import type { Logger } from 'pino';
import type { EngineErrorInfo } from '../engine/protocol.js';

/** The body of an error response. */
export interface ErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

/**
 * An error with its HTTP status and OpenAI error fields. It is an answer to a client, not a
 * fault, so it carries no stack trace: capturing one costs ~15 µs under the deep stream stacks of
 * a WebSocket burst, where each refused message (429) builds one (docs/overload.md).
 */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type: string,
    readonly param: string | null = null,
    readonly code: string | null = null,
    /** Extra response headers (e.g. Retry-After). */
    readonly headers: Record<string, string> = {},
  ) {
    const stackTraceLimit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    super(message);
    Error.stackTraceLimit = stackTraceLimit;
    this.name = 'ApiError';
  }

  /** The JSON body to send. */
  body(): ErrorBody {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }

  /** From an engine-side error (input validation in the worker). */
  static fromEngine(info: EngineErrorInfo): ApiError {
    return new ApiError(info.status, info.message, info.type, info.param, info.code);
  }
}

/** Constructors for the errors the server returns. */
export const Errors = {
  /** 400: a field is missing, of the wrong type or out of range. */
  invalid: (message: string, param: string | null = null, code: string | null = null) =>
    new ApiError(400, message, 'invalid_request_error', param, code),
  /** 401: missing or wrong API key. */
  unauthorized: () =>
    new ApiError(401, 'Incorrect or missing API key: send it as "Authorization: Bearer <key>".', 'invalid_request_error', null, 'invalid_api_key'),
  /** 404: unknown model. */
  modelNotFound: (model: string) =>
    new ApiError(404, `The model '${model}' does not exist; GET /v1/models lists the served models.`, 'invalid_request_error', 'model', 'model_not_found'),
  /** 404: unknown route or resource. */
  notFound: (what: string) => new ApiError(404, `${what} not found`, 'invalid_request_error', null, 'not_found'),
  /**
   * 503: the model is being sliced (or loaded) and will be served; retry after `retryAfterS`.
   * `activity` says what is under way (default: slicing and its percentage).
   */
  modelLoading: (model: string, percent: number, retryAfterS: number, activity = `slicing, ${percent}% done`) =>
    new ApiError(503, `The model '${model}' is still being prepared (${activity}); retry in about ${retryAfterS} s.`, 'service_unavailable', 'model', 'model_loading', {
      'Retry-After': String(retryAfterS),
    }),
  /** 405: a known path with the wrong method. */
  methodNotAllowed: (method: string, path: string, allowed: string) =>
    new ApiError(405, `${method} is not allowed on ${path}; use ${allowed}.`, 'invalid_request_error', null, 'method_not_allowed'),
  /** 409: the resource exists already. */
  conflict: (message: string, param: string | null = null) => new ApiError(409, message, 'invalid_request_error', param, 'conflict'),
  /** 413: body over the limit (`limit` with its unit, e.g. '1mb (1048576 bytes)'). */
  tooLarge: (limit: string) =>
    new ApiError(413, `Request body is larger than the limit of ${limit}.`, 'invalid_request_error', null, 'request_too_large'),
  /** 429: the model's waiting queue is full. */
  queueFull: (model: string, retryAfterS: number) =>
    new ApiError(429, `The waiting queue of model '${model}' is full; retry later.`, 'rate_limit_error', null, 'queue_full', {
      'Retry-After': String(retryAfterS),
    }),
  /** 503: shutting down or not ready. */
  unavailable: (message: string, code = 'unavailable', headers: Record<string, string> = {}) => new ApiError(503, message, 'service_unavailable', null, code, headers),
  /** 500. */
  internal: (message: string) => new ApiError(500, message, 'server_error', null, 'internal_error'),
};

/** Sends `err` as an error response. */
export function sendError(res: Parameters<RequestHandler>[1], err: ApiError): void {
  for (const [k, v] of Object.entries(err.headers)) res.setHeader(k, v);
  res.status(err.status).json(err.body());
}

/** body-parser errors carry `type` and `status`. */
interface BodyParserError {
  type?: string;
  status?: number;
  statusCode?: number;
  limit?: number;
}

/**
 * Final express error handler: body-parser failures become 400 (malformed JSON) or 413
 * (body too large), {@link ApiError}s are sent as they are, anything else is logged and
 * answered 500.
 * @param bodyLimit the body limit with its unit, for the 413 message
 */
export function errorHandler(logger: Logger, bodyLimit: string): ErrorRequestHandler {
  return (err, _req, res, _next) => {
    if (res.headersSent) {
      res.end();
      return;
    }
    const bp = err as BodyParserError;
    if (err instanceof ApiError) return sendError(res, err);
    if (bp.type === 'entity.too.large') return sendError(res, Errors.tooLarge(bodyLimit));
    if (bp.type === 'entity.parse.failed') return sendError(res, Errors.invalid(`Malformed JSON body: ${(err as Error).message}`, null, 'invalid_json'));
    // Other client errors of body-parser, e.g. a Content-Encoding: gzip body that is not gzip
    // (zlib's error carries only a status).
    const status = bp.status ?? bp.statusCode;
    if (status !== undefined && status >= 400 && status < 500) return sendError(res, Errors.invalid(`Unreadable request body: ${(err as Error).message}`, null, 'invalid_body'));
    logger.error({ err }, 'unhandled error');
    sendError(res, Errors.internal('Internal server error.'));
  };
}

/**
 * A whole HTTP/1.1 error response with the OpenAI error body, for a socket that express does
 * not own (Node's HTTP parser errors, refused WebSocket upgrades); the connection is closed.
 */
export function rawErrorResponse(err: ApiError, headers: Record<string, string> = {}): string {
  const body = JSON.stringify(err.body());
  const lines = [
    `HTTP/1.1 ${err.status} ${STATUS_CODES[err.status] ?? 'Error'}`,
    'Content-Type: application/json; charset=utf-8',
    `Content-Length: ${Buffer.byteLength(body)}`,
    'Connection: close',
    ...Object.entries({ ...err.headers, ...headers }).map(([k, v]) => `${k}: ${v}`),
  ];
  return `${lines.join('\r\n')}\r\n\r\n${body}`;
}

/** Node's HTTP parser error (`clientError`): `code` (e.g. HPE_INVALID_METHOD) and `reason`. */
interface ParserError extends Error {
  code?: string;
  reason?: string;
}

/**
 * The OpenAI-shaped answer to a request Node's HTTP parser refused: 431 for headers over the
 * limit, 413 for oversized chunk extensions, 408 for a request that timed out, 400 otherwise.
 */
export function clientErrorFor(err: ParserError): ApiError {
  const reason = err.reason ?? err.message;
  switch (err.code) {
    case 'HPE_HEADER_OVERFLOW':
      return new ApiError(431, 'The request headers are larger than the server accepts.', 'invalid_request_error', null, 'headers_too_large');
    case 'HPE_CHUNK_EXTENSIONS_OVERFLOW':
      return new ApiError(413, 'The chunk extensions of the request body are larger than the server accepts.', 'invalid_request_error', null, 'request_too_large');
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      return new ApiError(408, 'The request was not received in time.', 'invalid_request_error', null, 'request_timeout');
    default:
      return new ApiError(400, `Malformed HTTP request: ${reason}${err.code ? ` (${err.code})` : ''}.`, 'invalid_request_error', null, 'malformed_http');
  }
}

/**
 * Answers Node's HTTP parser errors (malformed request lines, bad headers, oversized headers,
 * timeouts) in the OpenAI error shape instead of Node's bare `400 Bad Request`; a socket that is
 * already gone, or whose response has started, is just closed.
 */
export function answerClientErrors(server: Server, logger: Logger): void {
  server.on('clientError', (err: ParserError, socket: Duplex) => {
    const inFlight = (socket as Duplex & { _httpMessage?: { headersSent?: boolean } })._httpMessage;
    if (err.code === 'ECONNRESET' || !socket.writable || inFlight?.headersSent) {
      socket.destroy();
      return;
    }
    const answer = clientErrorFor(err);
    logger.info({ status: answer.status, code: err.code, reason: err.reason ?? err.message }, 'malformed http request');
    socket.end(rawErrorResponse(answer));
  });
  // CONNECT (a proxy request) would otherwise be dropped without an answer.
  server.on('connect', (_req, socket: Duplex) => {
    socket.end(rawErrorResponse(Errors.methodNotAllowed('CONNECT', 'this server', 'GET or POST'), { Allow: 'GET, POST' }));
  });
}
