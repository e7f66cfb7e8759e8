/**
 * Test helpers: start the real server (bundled stories260K, port 0) in this process with a
 * captured JSON log, and small HTTP / WebSocket / metrics utilities.
 */
import path from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import parsePrometheusTextFormat from 'parse-prometheus-text-format';
import WebSocket from 'ws';
import { type ServerOptions, type SliceServer, startServer } from '../../server/index.js';

/** Repository root (dist/test/server -> root). */
export const ROOT = path.resolve(__dirname, '..', '..', '..');
export const MODEL_DIR = path.join(ROOT, 'models', 'stories260K');
export const CALIBRATION = path.join(ROOT, 'data', 'tinystories-train-sample.txt');
/** The bundled evaluation text: the held-out text of slices' recorded perplexity. */
export const EVAL = path.join(ROOT, 'data', 'tinystories-valid-sample.txt');
export const DENSE = 'stories260K';
export const API_KEY = 'test-key-123';

/** `generate --prompt "Once upon a time" --max-tokens 60 --temperature 0` (llama2.c run.c -t 0). */
export const GOLDEN =
  ', there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball. She wanted to play with it, but it was too high.\nLily';

/** A started server and its captured log lines. */
export interface TestServer {
  server: SliceServer;
  url: string;
  logs: Record<string, unknown>[];
}

/** Starts a server on a free port and waits until it is ready. */
export async function startTestServer(overrides: Partial<ServerOptions> = {}): Promise<TestServer> {
  const logs: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk, _enc, done) {
      for (const line of String(chunk).split('\n')) if (line.trim()) logs.push(JSON.parse(line));
      done();
    },
  });
  const server = await startServer({
    models: [MODEL_DIR],
    sparsities: [],
    calibrationFile: CALIBRATION,
    host: '127.0.0.1',
    port: 0,
    maxBatchSize: 16,
    maxQueue: 64,
    bodyLimit: '1mb',
    threads: 1,
    defaultMetrics: false,
    logger: pino({ level: 'info' }, sink),
    ...overrides,
  });
  await server.ready;
  return { server, url: server.url, logs };
}

/** POST JSON (or a raw string body) and return status, headers and parsed body. */
export async function post(
  url: string,
  body: unknown,
  headers: Record<string, string> = { authorization: `Bearer ${API_KEY}` },
): Promise<{ status: number; headers: Headers; body: any }> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    // not JSON (SSE)
  }
  return { status: res.status, headers: res.headers, body: parsed };
}

/** GET with the API key. */
export async function get(url: string, headers: Record<string, string> = { authorization: `Bearer ${API_KEY}` }) {
  const res = await fetch(url, { headers });
  const text = await res.text();
  let body: any = text;
  try {
    body = JSON.parse(text);
  } catch {
    // text (metrics)
  }
  return { status: res.status, headers: res.headers, body };
}

/** Asserts the OpenAI error shape and returns the error object. */
export function errorOf(body: any): { message: string; type: string; param: string | null; code: string | null } {
  if (!body || typeof body !== 'object' || !body.error) throw new Error(`not an error body: ${JSON.stringify(body)}`);
  const e = body.error;
  for (const k of ['message', 'type', 'param', 'code']) if (!(k in e)) throw new Error(`error without ${k}: ${JSON.stringify(body)}`);
  if (typeof e.message !== 'string' || e.message.length === 0) throw new Error('empty error message');
  return e;
}

/** A parsed Prometheus metric family (gauges and counters keep their labels). */
export interface MetricFamily {
  name: string;
  type: string;
  metrics: { labels?: Record<string, string>; value?: string }[];
}

/** A scrape: the families from the parser, and every sample line for labeled histograms. */
export interface Scrape {
  families: Map<string, MetricFamily>;
  /** Sample lines `name{labels} value` (the parser merges histogram label sets, so read these). */
  samples: { name: string; labels: Record<string, string>; value: number }[];
}

/**
 * Fetches /metrics (or `path`, e.g. /metrics/vllm) and parses it as Prometheus text exposition
 * (parse-prometheus-text-format throws on malformed lines).
 */
export async function scrape(url: string, headers?: Record<string, string>, path = '/metrics'): Promise<Scrape> {
  const res = await get(`${url}${path}`, headers);
  if (res.status !== 200) throw new Error(`/metrics: ${res.status}`);
  const text = res.body as string;
  const families = parsePrometheusTextFormat(text) as MetricFamily[];
  const samples: Scrape['samples'] = [];
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    samples.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return { families: new Map(families.map((f) => [f.name, f])), samples };
}

/** The value of the sample `name` whose labels include `labels`, or undefined. */
export function sample(s: Scrape, name: string, labels: Record<string, string>): number | undefined {
  return s.samples.find((x) => x.name === name && Object.entries(labels).every(([k, v]) => x.labels[k] === v))?.value;
}

/** Polls `check` every 50 ms until it returns true (or throws after `timeoutMs`). */
export async function waitFor(check: () => Promise<boolean> | boolean, timeoutMs = 10_000, what = 'condition'): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** Opens a WebSocket to /v1/stream with the API key. */
export async function openStream(url: string, headers: Record<string, string> = { authorization: `Bearer ${API_KEY}` }): Promise<WsClient> {
  const ws = new WebSocket(`${url.replace('http', 'ws')}/v1/stream`, { headers });
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
    ws.once('unexpected-response', (_req, res) => reject(new Error(`unexpected response ${res.statusCode}`)));
  });
  return new WsClient(ws);
}

/** A WebSocket client that collects messages per request id. */
export class WsClient {
  readonly messages: any[] = [];
  private waiters: { test: (m: any) => boolean; resolve: (m: any) => void }[] = [];

  constructor(readonly ws: WebSocket) {
    ws.on('message', (data) => {
      const msg = JSON.parse(String(data));
      this.messages.push(msg);
      this.waiters = this.waiters.filter((w) => {
        if (!w.test(msg)) return true;
        w.resolve(msg);
        return false;
      });
    });
  }

  send(msg: object): void {
    this.ws.send(JSON.stringify(msg));
  }

  /** Resolves with the first (past or future) message that passes `test`. */
  next(test: (m: any) => boolean, timeoutMs = 20_000): Promise<any> {
    const seen = this.messages.find(test);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('timed out waiting for a WebSocket message')), timeoutMs);
      this.waiters.push({
        test,
        resolve: (m) => {
          clearTimeout(timer);
          resolve(m);
        },
      });
    });
  }

  /** Sends a completion and resolves with its concatenated text and the final message. */
  async complete(id: string, fields: object): Promise<{ text: string; done: any; tokens: any[] }> {
    this.send({ type: 'completion', id, ...fields });
    const done = await this.next((m) => m.id === id && (m.type === 'done' || m.type === 'error'));
    const tokens = this.messages.filter((m) => m.id === id && m.type === 'token');
    return { text: tokens.map((t) => t.text).join(''), done, tokens };
  }

  close(): void {
    this.ws.close();
  }
}
