/**
 * A fake SliceServe for the load generator's tests: `/health`, `/v1/models` (a dense model and
 * sliced children) and streaming `/v1/completions` with a behaviour per model: stream
 * `max_tokens` chunks normally, answer 500, drop the connection mid-stream, end without
 * `[DONE]`, or send an error chunk. With `style: 'llamacpp'` it answers as llama.cpp's
 * llama-server does (tools/server): one model whose `/v1/models` entry has a `meta` object,
 * any `model` field accepted, token chunks without finish_reason, then one closing chunk
 * `{"text": "", "finish_reason": "length"}` carrying the usage. Also runnable as a script
 * (`node fake-server.js --port P`) to test starting and stopping a server process.
 */
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';

export type Behaviour = 'ok' | 'http500' | 'drop' | 'no-done' | 'error-chunk' | 'hang';

export interface FakeModel {
  id: string;
  parent?: string;
  slicing?: { sparsity: number; hidden_size: number; original_hidden_size: number; parameters?: number };
  behaviour?: Behaviour;
}

export interface FakeServerOptions {
  models: FakeModel[];
  /** Whose wire format (default 'sliceserve'); 'llamacpp' serves `models[0]` under any requested id. */
  style?: 'sliceserve' | 'llamacpp';
  /** llama.cpp style: the `meta` object of its `/v1/models` entry. */
  meta?: Record<string, unknown>;
  /** Delay between token chunks, ms (default 1). */
  tokenDelayMs?: number;
  /** Write each SSE event in pieces of this many bytes (default: whole events). */
  splitBytes?: number;
}

/** A received completion request. */
export interface Received {
  model: string;
  prompt: unknown;
  max_tokens: number;
  ignore_eos: unknown;
  stream: unknown;
  /** The whole request body. */
  body: Record<string, unknown>;
}

export interface FakeServer {
  url: string;
  port: number;
  received: Received[];
  close(): Promise<void>;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function writeEvent(res: http.ServerResponse, data: string, splitBytes?: number): Promise<void> {
  const bytes = Buffer.from(`data: ${data}\n\n`, 'utf8');
  if (!splitBytes) {
    res.write(bytes);
    return;
  }
  for (let i = 0; i < bytes.length; i += splitBytes) {
    res.write(bytes.subarray(i, i + splitBytes));
    await sleep(0);
  }
}

/** Starts the fake server on 127.0.0.1 (port 0 = any free port). */
export async function startFakeServer(opts: FakeServerOptions, port = 0): Promise<FakeServer> {
  const received: Received[] = [];
  const delay = opts.tokenDelayMs ?? 1;
  const server = http.createServer((req, res) => {
    if (req.method === 'GET' && req.url === '/health') {
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"status":"ok"}');
      return;
    }
    if (req.method === 'GET' && req.url === '/v1/models' && opts.style === 'llamacpp') {
      const m = opts.models[0];
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ object: 'list', data: [{ id: m.id, object: 'model', owned_by: 'llamacpp', meta: opts.meta ?? {} }] }));
      return;
    }
    if (req.method === 'GET' && req.url === '/v1/models') {
      const data = opts.models.map((m) => ({ id: m.id, object: 'model', root: m.parent ?? m.id, ...(m.parent ? { parent: m.parent, slicing: m.slicing } : {}) }));
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ object: 'list', data }));
      return;
    }
    if (req.method === 'POST' && req.url === '/v1/completions') {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString('utf8')));
      req.on('end', () => {
        void (async () => {
          const r = JSON.parse(body) as Received;
          received.push({ model: r.model, prompt: r.prompt, max_tokens: r.max_tokens, ignore_eos: r.ignore_eos, stream: r.stream, body: JSON.parse(body) as Record<string, unknown> });
          const llamacpp = opts.style === 'llamacpp';
          const model = llamacpp ? opts.models[0] : opts.models.find((m) => m.id === r.model);
          if (!model) {
            res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ error: { message: `model ${r.model} not found`, type: 'not_found', param: 'model', code: null } }));
            return;
          }
          const behaviour = model.behaviour ?? 'ok';
          if (behaviour === 'http500') {
            res.writeHead(500, { 'content-type': 'application/json' }).end(JSON.stringify({ error: { message: 'engine crashed', type: 'server_error', param: null, code: null } }));
            return;
          }
          res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
          if (behaviour === 'hang') return; // never sends anything: the client's timeout fires
          for (let i = 0; i < r.max_tokens; i++) {
            if (behaviour === 'drop' && i === 2) {
              res.socket?.destroy();
              return;
            }
            if (behaviour === 'error-chunk' && i === 1) {
              await writeEvent(res, JSON.stringify({ error: { message: 'out of KV cache', type: 'server_error' } }), opts.splitBytes);
              res.end();
              return;
            }
            await sleep(delay);
            const last = i === r.max_tokens - 1 && !llamacpp;
            const chunk = { id: 'cmpl-1', object: 'text_completion', model: r.model, choices: [{ index: 0, text: ` tök${i}`, logprobs: null, finish_reason: last ? 'length' : null }] };
            await writeEvent(res, JSON.stringify(chunk), opts.splitBytes);
          }
          const promptTokens = Array.isArray(r.prompt) ? r.prompt.length : 1;
          if (llamacpp) {
            // llama.cpp: a closing chunk with empty text, the finish_reason and the usage; no separate usage chunk
            const usage = { completion_tokens: r.max_tokens, prompt_tokens: promptTokens, total_tokens: promptTokens + r.max_tokens, prompt_tokens_details: { cached_tokens: 0 } };
            await writeEvent(res, JSON.stringify({ id: 'cmpl-1', object: 'text_completion', model: model.id, choices: [{ index: 0, text: '', logprobs: null, finish_reason: 'length' }], usage }), opts.splitBytes);
            await writeEvent(res, '[DONE]', opts.splitBytes);
            res.end();
            return;
          }
          await writeEvent(res, JSON.stringify({ id: 'cmpl-1', object: 'text_completion', model: r.model, choices: [], usage: { prompt_tokens: promptTokens, completion_tokens: r.max_tokens, total_tokens: promptTokens + r.max_tokens } }), opts.splitBytes);
          if (behaviour !== 'no-done') await writeEvent(res, '[DONE]', opts.splitBytes);
          res.end();
        })();
      });
      return;
    }
    res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  const actual = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${actual}`,
    port: actual,
    received,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** The models the tests serve: dense `synth` and two sliced children. */
export const FAKE_MODELS: FakeModel[] = [
  { id: 'synth' },
  { id: 'synth-sliced-0.25', parent: 'synth', slicing: { sparsity: 0.25, hidden_size: 48, original_hidden_size: 64 } },
  { id: 'synth-sliced-0.5', parent: 'synth', slicing: { sparsity: 0.5, hidden_size: 32, original_hidden_size: 64 } },
];

// As a script: `node fake-server.js --port P [--exit-after-ms N]` serves FAKE_MODELS until SIGTERM.
if (require.main === module) {
  const arg = (name: string): string | undefined => {
    const i = process.argv.indexOf(name);
    return i >= 0 ? process.argv[i + 1] : undefined;
  };
  const exitAfter = arg('--exit-after-ms');
  if (exitAfter) {
    process.stderr.write('fake server: failing on purpose\n');
    setTimeout(() => process.exit(3), Number(exitAfter));
  } else {
    void startFakeServer({ models: FAKE_MODELS }, Number(arg('--port') ?? 0)).then((s) => {
      process.stdout.write(`fake server listening on ${s.url}\n`);
      process.on('SIGTERM', () => void s.close().then(() => process.exit(0)));
    });
  }
}
