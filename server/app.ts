/**
 * The express application: routes, API-key check, body limit, access log (one JSON line per
 * request, with the completion timings when there are some) and the error handler.
 *
 * Routes: GET /health, GET /health/ready, GET /v1/models, GET /v1/models/:id,
 * POST /v1/completions, POST /v1/chat/completions, POST /tokenize, POST /detokenize,
 * POST /v1/slices, GET /v1/slices, GET /v1/slices/:id, GET /metrics and GET /metrics/vllm
 * (vLLM's series; both without the API key when `metricsPublic`: scrapers rarely carry one).
 * (WebSocket /v1/stream is attached to the HTTP server in ws.ts.)
 */
import { timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import express, { type Express, type NextFunction, type Request, type Response } from 'express';
import type { Logger } from 'pino';
import { describeBodyLimit, parseBodyLimit } from './body-limit.js';
import { chatHandler } from './chat.js';
import type { CompletionRun } from './completion-run.js';
import { completionsHandler, type CompletionsContext } from './completions.js';
import { Errors, errorHandler, sendError } from './errors.js';
import type { ServerMetrics } from './metrics.js';
import { ModelRegistry } from './models.js';
import type { SliceJobManager } from './slices.js';
import { detokenizeHandler, tokenizeHandler } from './tokenize.js';

/** State the routes read. */
export interface AppContext extends CompletionsContext {
  logger: Logger;
  metrics: ServerMetrics;
  models: ModelRegistry;
  jobs: SliceJobManager;
  apiKey?: string;
  /** JSON body limit as given (server/body-limit.ts syntax, e.g. '1mb'). */
  bodyLimit: string;
  /** Serve /metrics without the API key. */
  metricsPublic?: boolean;
  /** Also put vLLM's `vllm:*` series on /metrics (they are always on /metrics/vllm). */
  metricsIncludeVllm?: boolean;
  /** 'loading' until the startup models are served, then 'ready'; 'stopping' on shutdown. */
  state(): 'loading' | 'ready' | 'stopping';
}

/** Whether `req` carries the API key (`Authorization: Bearer <key>`, or `?api_key=` for WebSockets). */
export function hasApiKey(req: IncomingMessage, apiKey: string | undefined, allowQuery = false): boolean {
  if (!apiKey) return true;
  const header = req.headers.authorization ?? '';
  let given = header.startsWith('Bearer ') ? header.slice('Bearer '.length).trim() : '';
  if (!given && allowQuery) given = new URL(req.url ?? '/', 'http://localhost').searchParams.get('api_key') ?? '';
  const a = Buffer.from(given);
  const b = Buffer.from(apiKey);
  return a.length === b.length && timingSafeEqual(a, b);
}

/** Builds the express app. */
export function createApp(ctx: AppContext): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);

  // Access log: one line per HTTP request, merged with the completion's timings.
  app.use((req: Request, res: Response, next: NextFunction) => {
    const start = performance.now();
    res.on('close', () => {
      const run = res.locals.run as CompletionRun | undefined;
      // A client gone mid-response: cancel here (idempotent) so the line says 'cancelled'.
      if (run && !res.writableFinished) run.cancel();
      const fields = {
        method: req.method,
        path: req.path,
        ...(run ? run.summary() : {}),
        status: res.statusCode,
        duration_ms: Math.round((performance.now() - start) * 1000) / 1000,
        ...(res.writableFinished ? {} : { aborted: true }),
      };
      const quiet = req.path === '/health' || req.path === '/health/ready' || req.path.startsWith('/metrics');
      if (quiet) ctx.logger.debug(fields, 'request');
      else ctx.logger.info(fields, 'request');
    });
    next();
  });

  // RFC 9112 §3.2: an HTTP/1.1 request without Host is a 400 (Node's own answer has no body).
  app.use((req, res, next) => {
    if (req.httpVersion === '1.1' && req.headers.host === undefined) return sendError(res, Errors.invalid('HTTP/1.1 requests must carry a Host header.', null, 'missing_host'));
    next();
  });
  app.get('/health', (_req, res) => {
    res.json({ status: 'ok' });
  });
  app.get('/health/ready', (_req, res) => {
    const models = ctx.models.list();
    const down = models.filter((m) => !m.worker.isAlive).map((m) => m.id);
    const state = ctx.state() === 'ready' && down.length > 0 ? 'degraded' : ctx.state();
    res.status(state === 'ready' ? 200 : 503).json({ status: state, models: models.map((m) => m.id), ...(down.length ? { down } : {}) });
  });

  const metrics = (set: 'sliceserve' | 'vllm' | 'both') => async (_req: Request, res: Response) => {
    const { contentType, body } = await ctx.metrics.render(set);
    res.set('Content-Type', contentType).send(body);
  };
  const metricRoutes = () => {
    app.get('/metrics', metrics(ctx.metricsIncludeVllm ? 'both' : 'sliceserve'));
    app.get('/metrics/vllm', metrics('vllm'));
  };
  if (ctx.metricsPublic) metricRoutes();
  app.use((req, res, next) => {
    if (!hasApiKey(req, ctx.apiKey)) return sendError(res, Errors.unauthorized());
    if (ctx.state() === 'stopping') return sendError(res, Errors.unavailable('The server is shutting down.', 'shutting_down'));
    next();
  });
  // Any JSON value parses (not only objects and arrays), so that the handlers' validation can
  // say what the body must be; an empty body stays undefined rather than becoming {}.
  const emptyBodies = new WeakSet<IncomingMessage>();
  app.use(
    express.json({
      limit: parseBodyLimit(ctx.bodyLimit),
      type: () => true,
      strict: false,
      verify: (req, _res, buf) => {
        if (buf.length === 0) emptyBodies.add(req);
      },
    }),
  );
  app.use((req, _res, next) => {
    if (emptyBodies.has(req)) req.body = undefined;
    next();
  });

  app.get('/v1/models', (_req, res) => {
    res.json({ object: 'list', data: ctx.models.list().map((m) => ModelRegistry.card(m)) });
  });
  app.get('/v1/models/:id', (req, res) => {
    res.json(ModelRegistry.card(ctx.models.get(String(req.params.id))));
  });
  app.post('/v1/completions', completionsHandler(ctx));
  app.post('/v1/chat/completions', chatHandler(ctx));
  app.post('/tokenize', tokenizeHandler(ctx));
  app.post('/detokenize', detokenizeHandler(ctx));
  app.post('/v1/slices', (req, res) => {
    const { job, created } = ctx.jobs.submit(req.body);
    res.status(created ? 202 : 200).location(`/v1/slices/${job.id}`).json(job);
  });
  app.get('/v1/slices', (_req, res) => {
    res.json({ object: 'list', data: ctx.jobs.list() });
  });
  app.get('/v1/slices/:id', (req, res) => {
    res.json(ctx.jobs.get(String(req.params.id)));
  });
  if (!ctx.metricsPublic) metricRoutes();
  // A known path with the wrong method is a 405 (with Allow), not a 404.
  const allowed: Record<string, string> = {
    '/v1/completions': 'POST',
    '/v1/chat/completions': 'POST',
    '/tokenize': 'POST',
    '/detokenize': 'POST',
    '/v1/slices': 'GET, POST',
    '/v1/models': 'GET',
    '/metrics': 'GET',
    '/metrics/vllm': 'GET',
  };
  for (const [p, methods] of Object.entries(allowed)) {
    app.all(p, (req, res) => {
      res.set('Allow', methods);
      sendError(res, Errors.methodNotAllowed(req.method, p, methods));
    });
  }
  app.use((req, res) => sendError(res, Errors.notFound(`${req.method} ${req.path}`)));
  app.use(errorHandler(ctx.logger, describeBodyLimit(ctx.bodyLimit)));
  return app;
}
