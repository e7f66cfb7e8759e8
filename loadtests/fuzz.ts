/**
 * Hostile-input fuzzing of a SliceServe server on the loopback interface (issue 15): every
 * answer must be a success of its endpoint or an error in the OpenAI shape
 * `{"error": {"message", "type", "param", "code"}}`, never a 5xx, never a crash, and the greedy
 * golden text must stay the same after every category. Categories:
 * - completion-fields: POST /v1/completions bodies whose fields (each of the request schema) get
 *   arbitrary JSON values from fast-check (property-based generation);
 * - bodies: malformed, oversized, deeply nested, mis-typed, mis-encoded bodies;
 * - model-names: odd model names in the body and in `/v1/models/<id>` (encodings, controls,
 *   very long, path tricks);
 * - slices-fields: POST /v1/slices with arbitrary fields (never a valid job: the model named
 *   is never a served one, so no slicing starts);
 * - routes: random methods and paths;
 * - raw-http: bytes Node's HTTP parser refuses (request lines, header names and values,
 *   header overflow, chunked encoding, Content-Length) over a raw TCP socket;
 * - ws-handshake: WebSocket upgrades that ws refuses (method, key, version, protocol, path);
 * - ws-messages: arbitrary messages on an open socket from fast-check, plus frames ws refuses
 *   (RSV1 without permessage-deflate, invalid UTF-8, over 1 MiB, reserved opcodes): each must
 *   end in an `error` message or a close with a code and a JSON reason.
 *
 * Only 127.0.0.1 / ::1 / localhost targets are accepted; every loop is bounded by a count.
 */
import net from 'node:net';
import fc from 'fast-check';
import WebSocket from 'ws';

/** A shape violation or failure, with the input that caused it. */
export interface Violation {
  category: string;
  input: string;
  problem: string;
}

/** Results of one category. */
export interface CategoryResult {
  category: string;
  inputs: number;
  /** HTTP statuses (or 'ws:<kind>') seen, with counts. */
  outcomes: Record<string, number>;
  serverErrors: number;
  violations: Violation[];
  /** Health answered and the golden text was the same after the category. */
  healthyAfter: boolean;
}

/** Options of {@link runFuzz}. */
export interface FuzzOptions {
  /** Base URL of the server (loopback only). */
  url: string;
  /** Dense model served (default stories260K). */
  model?: string;
  /** Scales the number of inputs of each category (1 = the default ~1,300 inputs in all). */
  scale?: number;
  /** fast-check seed (default 15). */
  seed?: number;
  /** Per-request timeout, ms (default 20,000). */
  timeoutMs?: number;
  /** Called after each category. */
  onCategory?: (r: CategoryResult) => void;
}

/** Loopback hosts the fuzzer may target. */
export function assertLoopback(url: string): void {
  const host = new URL(url).hostname.replace(/^\[|\]$/g, '');
  if (!(host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host))) {
    throw new Error(`refusing to fuzz ${url}: only 127.0.0.0/8, ::1 and localhost are allowed`);
  }
}

/** Whether `body` is an OpenAI error body, and if not why. */
export function openAIErrorProblem(body: unknown): string | null {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return 'the body is not a JSON object';
  const keys = Object.keys(body);
  if (keys.length !== 1 || keys[0] !== 'error') return `top-level keys ${JSON.stringify(keys)}, not ["error"]`;
  const e = (body as { error: unknown }).error as Record<string, unknown>;
  if (typeof e !== 'object' || e === null) return 'error is not an object';
  if (typeof e.message !== 'string' || e.message.length === 0) return 'error.message is not a non-empty string';
  if (typeof e.type !== 'string' || e.type.length === 0) return 'error.type is not a non-empty string';
  if (!(e.param === null || typeof e.param === 'string')) return 'error.param is not a string or null';
  if (!(e.code === null || typeof e.code === 'string')) return 'error.code is not a string or null';
  return null;
}

class Tally {
  readonly outcomes: Record<string, number> = {};
  readonly violations: Violation[] = [];
  inputs = 0;
  serverErrors = 0;
  constructor(readonly category: string) {}
  count(outcome: string): void {
    this.outcomes[outcome] = (this.outcomes[outcome] ?? 0) + 1;
  }
  violation(input: unknown, problem: string): void {
    const text = typeof input === 'string' ? input : JSON.stringify(input) ?? String(input);
    this.violations.push({ category: this.category, input: text.length > 300 ? `${text.slice(0, 300)}... (${text.length} chars)` : text, problem });
  }
}

/** An HTTP request through fetch; checks the answer's shape. */
async function httpCase(t: Tally, url: string, init: RequestInit & { timeoutMs: number }, input: unknown, okCheck?: (body: unknown) => string | null): Promise<void> {
  t.inputs++;
  let res: Response;
  let text: string;
  try {
    res = await fetch(url, { ...init, signal: AbortSignal.timeout(init.timeoutMs) });
    text = await res.text();
  } catch (err) {
    t.count('no answer');
    t.violation(input, `no answer: ${(err as Error).message}`);
    return;
  }
  t.count(String(res.status));
  if (res.status >= 500) t.serverErrors++;
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    // A 2xx may be text (SSE, /metrics); an error never.
    if (res.status >= 400 || (res.headers.get('content-type') ?? '').includes('json')) {
      t.violation(input, `status ${res.status} with a body that is not JSON: ${text.slice(0, 80)}`);
    }
    return;
  }
  if (res.status >= 400) {
    const problem = openAIErrorProblem(body);
    if (problem) t.violation(input, `status ${res.status}: ${problem}`);
  } else if (okCheck) {
    const problem = okCheck(body);
    if (problem) t.violation(input, `status ${res.status}: ${problem}`);
  }
}

/** Sends raw bytes over TCP; returns the status line's code and the body, or null when the server closed without answering. */
function rawExchange(port: number, host: string, bytes: Buffer, timeoutMs: number): Promise<{ status: number; headers: string; body: string } | null> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host });
    const chunks: Buffer[] = [];
    const finish = () => {
      clearTimeout(timer);
      socket.destroy();
      const all = Buffer.concat(chunks).toString('latin1');
      const m = /^HTTP\/1\.[01] (\d{3})[^\r\n]*\r\n([\s\S]*?)\r\n\r\n([\s\S]*)$/.exec(all);
      resolve(m ? { status: Number(m[1]), headers: m[2], body: Buffer.from(m[3], 'latin1').toString('utf8') } : null);
    };
    const timer = setTimeout(finish, timeoutMs);
    socket.on('data', (c) => chunks.push(c));
    socket.on('error', finish);
    socket.on('close', finish);
    socket.on('connect', () => socket.write(bytes));
  });
}

/** `method target` over a raw socket (no normalisation of the target); checks the answer like {@link httpCase}. */
async function rawCase(t: Tally, port: number, host: string, method: string, target: string, timeoutMs: number, okCheck?: (body: unknown) => string | null): Promise<void> {
  t.inputs++;
  const input = `${method} ${target}`;
  const r = await rawExchange(port, host, Buffer.from(`${method} ${target} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`, 'latin1'), timeoutMs);
  if (!r) {
    t.count('no answer');
    t.violation(input, 'no answer');
    return;
  }
  t.count(String(r.status));
  if (r.status >= 500) t.serverErrors++;
  if (method === 'HEAD') return;
  let body: unknown;
  try {
    body = JSON.parse(r.body);
  } catch {
    if (r.status >= 400) t.violation(input, `status ${r.status} with a body that is not JSON: ${JSON.stringify(r.body.slice(0, 60))}`);
    return;
  }
  const problem = r.status >= 400 ? openAIErrorProblem(body) : okCheck?.(body) ?? null;
  if (problem) t.violation(input, `status ${r.status}: ${problem}`);
}

/** Raw HTTP inputs that Node's parser (or the server) must refuse. */
function rawHttpCases(host: string): { name: string; bytes: Buffer }[] {
  const h = `Host: ${host}\r\n`;
  const b = (s: string) => Buffer.from(s, 'latin1');
  const json = '{"model":"x","prompt":"hi"}';
  const cases: { name: string; bytes: string | Buffer }[] = [
    { name: 'garbage request line', bytes: 'HELLO\r\n\r\n' },
    { name: 'lowercase method', bytes: `get /health HTTP/1.1\r\n${h}\r\n` },
    { name: 'unknown method', bytes: `FROB /health HTTP/1.1\r\n${h}\r\n` },
    { name: 'no version', bytes: `GET /health\r\n${h}\r\n` },
    { name: 'HTTP/2.0 request line', bytes: `GET /health HTTP/2.0\r\n${h}\r\n` },
    { name: 'HTTP/9.9', bytes: `GET /health HTTP/9.9\r\n${h}\r\n` },
    { name: 'space in target', bytes: `GET /he alth HTTP/1.1\r\n${h}\r\n` },
    { name: 'control char in target', bytes: `GET /he\x01alth HTTP/1.1\r\n${h}\r\n` },
    { name: 'NUL in target', bytes: `GET /\x00 HTTP/1.1\r\n${h}\r\n` },
    { name: 'bare LF line ends', bytes: `GET /health HTTP/1.1\n${h.replace('\r', '')}\n` },
    { name: 'header without colon', bytes: `GET /health HTTP/1.1\r\n${h}Bogus\r\n\r\n` },
    { name: 'space before colon', bytes: `GET /health HTTP/1.1\r\n${h}X-A : 1\r\n\r\n` },
    { name: 'invalid header name char', bytes: `GET /health HTTP/1.1\r\n${h}X(A): 1\r\n\r\n` },
    { name: 'control char in header value', bytes: `GET /health HTTP/1.1\r\n${h}X-A: a\x07b\r\n\r\n` },
    { name: 'NUL in header value', bytes: `GET /health HTTP/1.1\r\n${h}X-A: a\x00b\r\n\r\n` },
    { name: 'obsolete line folding', bytes: `GET /health HTTP/1.1\r\n${h}X-A: a\r\n b\r\n\r\n` },
    { name: 'header overflow (80 KB)', bytes: `GET /health HTTP/1.1\r\n${h}X-A: ${'a'.repeat(80_000)}\r\n\r\n` },
    { name: 'many headers (4,000)', bytes: `GET /health HTTP/1.1\r\n${h}${Array.from({ length: 4000 }, (_, i) => `X-${i}: v\r\n`).join('')}\r\n` },
    { name: 'two Content-Length values', bytes: `POST /v1/completions HTTP/1.1\r\n${h}Content-Type: application/json\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n${json}` },
    { name: 'negative Content-Length', bytes: `POST /v1/completions HTTP/1.1\r\n${h}Content-Length: -1\r\n\r\n` },
    { name: 'non-numeric Content-Length', bytes: `POST /v1/completions HTTP/1.1\r\n${h}Content-Length: abc\r\n\r\n` },
    { name: 'Content-Length and chunked', bytes: `POST /v1/completions HTTP/1.1\r\n${h}Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n` },
    { name: 'bad chunk size', bytes: `POST /v1/completions HTTP/1.1\r\n${h}Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n` },
    { name: 'chunk size overflow', bytes: `POST /v1/completions HTTP/1.1\r\n${h}Transfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\n{}\r\n0\r\n\r\n` },
    { name: 'chunk extensions overflow', bytes: `POST /v1/completions HTTP/1.1\r\n${h}Transfer-Encoding: chunked\r\n\r\n2;${'e'.repeat(40_000)}\r\n{}\r\n0\r\n\r\n` },
    { name: 'unknown transfer coding', bytes: `POST /v1/completions HTTP/1.1\r\n${h}Transfer-Encoding: gzip, foo\r\n\r\n` },
    { name: 'HTTP/1.1 without Host', bytes: 'GET /v1/models HTTP/1.1\r\n\r\n' },
    { name: 'absolute-form target elsewhere', bytes: `GET http://example.invalid/v1/models HTTP/1.1\r\n${h}\r\n` },
    { name: 'CONNECT', bytes: `CONNECT ${host} HTTP/1.1\r\n${h}\r\n` },
    { name: 'binary junk', bytes: Buffer.from(Array.from({ length: 512 }, (_, i) => (i * 131 + 7) % 256)) },
    { name: 'TLS client hello', bytes: Buffer.from('16030100a5010000a10303' + '00'.repeat(32), 'hex') },
    { name: 'HTTP/2 preface', bytes: 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n' },
    { name: 'body on a keep-alive request then junk', bytes: `GET /health HTTP/1.1\r\n${h}\r\nJUNK JUNK\r\n\r\n` },
  ];
  return cases.map((c) => ({ name: c.name, bytes: typeof c.bytes === 'string' ? b(c.bytes) : c.bytes }));
}

/** Arbitrary JSON-ish values, hostile ones weighted in. */
function hostileValue(): fc.Arbitrary<unknown> {
  return fc.oneof(
    fc.jsonValue({ maxDepth: 3 }),
    fc.constantFrom(null, true, false, 0, -0, -1, 1e308, -1e308, 2 ** 53 + 1, 0.5, 1e-320, '', ' ', '0', 'NaN', 'Infinity', '\u0000', '\ud800', '💥'.repeat(50), [], {}, [[[]]], { __proto__: null }, { constructor: 1 }),
    fc.string({ maxLength: 2000, unit: 'grapheme' }),
    fc.array(fc.integer({ min: -5, max: 1_000_000 }), { maxLength: 50 }),
    fc.array(fc.string({ maxLength: 20 }), { maxLength: 20 }),
    fc.dictionary(fc.string({ maxLength: 10 }), fc.oneof(fc.integer(), fc.double(), fc.string({ maxLength: 5 })), { maxKeys: 8 }),
    fc.double(),
    fc.integer(),
  );
}

const COMPLETION_FIELDS = [
  'model', 'prompt', 'max_tokens', 'temperature', 'top_p', 'top_k', 'n', 'best_of', 'stop', 'stream_options', 'logprobs',
  'echo', 'seed', 'presence_penalty', 'frequency_penalty', 'logit_bias', 'user', 'suffix', 'min_tokens', 'stop_token_ids',
  'ignore_eos', 'repetition_penalty', 'min_p', 'unknown_field',
];

function completionCheck(body: unknown): string | null {
  const b = body as { object?: unknown; choices?: unknown };
  return b?.object === 'text_completion' && Array.isArray(b.choices) ? null : 'a 2xx answer that is not a text_completion';
}

/** The greedy text of the server's dense model for "Once upon a time", or an error line. */
async function golden(url: string, model: string): Promise<string> {
  const res = await fetch(`${url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model, prompt: 'Once upon a time', max_tokens: 24, temperature: 0 }),
    signal: AbortSignal.timeout(30_000),
  });
  const body = (await res.json()) as { choices?: { text: string }[] };
  return res.status === 200 && body.choices ? body.choices[0].text : `status ${res.status}`;
}

/** One WebSocket session: sends `frames` (text or raw bytes), gathers what comes back until close or `settleMs` of quiet. */
function wsSession(url: string, send: (ws: WebSocket) => void, settleMs: number, timeoutMs: number): Promise<{ messages: string[]; close: { code: number; reason: string } | null; error: string | null }> {
  return new Promise((resolve) => {
    const ws = new WebSocket(url.replace(/^http/, 'ws') + '/v1/stream', { perMessageDeflate: false });
    const messages: string[] = [];
    let error: string | null = null;
    let quiet: NodeJS.Timeout | undefined;
    const done = (close: { code: number; reason: string } | null) => {
      clearTimeout(quiet);
      clearTimeout(hard);
      ws.removeAllListeners();
      ws.on('error', () => undefined);
      if (ws.readyState === ws.OPEN || ws.readyState === ws.CONNECTING) ws.terminate();
      resolve({ messages, close, error });
    };
    const hard = setTimeout(() => done(null), timeoutMs);
    const rearm = () => {
      clearTimeout(quiet);
      quiet = setTimeout(() => done(null), settleMs);
    };
    ws.on('open', () => {
      send(ws);
      rearm();
    });
    ws.on('message', (data) => {
      messages.push(data.toString());
      rearm();
    });
    ws.on('close', (code, reason) => done({ code, reason: reason.toString() }));
    ws.on('error', (err) => (error = err.message));
  });
}

/** A raw WebSocket frame (client-masked) with the given first byte and payload. */
function rawFrame(first: number, payload: Buffer): Buffer {
  const mask = Buffer.from([1, 2, 3, 4]);
  const len = payload.length;
  const header = len < 126 ? Buffer.from([first, 0x80 | len]) : len < 65536 ? Buffer.from([first, 0x80 | 126, len >> 8, len & 255]) : Buffer.concat([Buffer.from([first, 0x80 | 127]), Buffer.from(new BigUint64Array([BigInt(len)]).buffer).reverse()]);
  const masked = Buffer.from(payload.map((x, i) => x ^ mask[i % 4]));
  return Buffer.concat([header, mask, masked]);
}

/** Checks what came back on a socket: JSON messages, errors in shape, closes with a JSON reason. */
function checkWsOutcome(t: Tally, input: unknown, r: { messages: string[]; close: { code: number; reason: string } | null; error: string | null }): void {
  for (const m of r.messages) {
    let msg: { type?: string; error?: unknown };
    try {
      msg = JSON.parse(m);
    } catch {
      t.violation(input, `a message that is not JSON: ${m.slice(0, 80)}`);
      continue;
    }
    if (msg.type === 'error') {
      const { status, ...rest } = (msg.error ?? {}) as { status?: unknown };
      const problem = openAIErrorProblem({ error: rest });
      if (problem) t.violation(input, `error message: ${problem}`);
      if (typeof status !== 'number') t.violation(input, 'error message without a numeric status');
      else if (status >= 500) t.serverErrors++;
      t.count(`ws:error ${status}`);
    } else t.count(`ws:${msg.type}`);
  }
  if (r.close) {
    t.count(`ws:close ${r.close.code}`);
    // 1006 is no close frame at all (the TCP connection dropped): counted as an outcome, not
    // as an answer in the wrong shape (a burst of hundreds of pings makes ws itself reset the
    // connection, seen with a plain ws server and client too).
    if (r.close.code !== 1000 && r.close.code !== 1005 && r.close.code !== 1006) {
      let reason: unknown;
      try {
        reason = JSON.parse(r.close.reason);
      } catch {
        t.violation(input, `close ${r.close.code} with a reason that is not JSON: ${JSON.stringify(r.close.reason)}`);
        return;
      }
      const problem = openAIErrorProblem(reason);
      if (problem) t.violation(input, `close ${r.close.code} reason: ${problem}`);
      if (r.close.code === 1011) t.serverErrors++;
    }
  }
}

/**
 * Runs every category against the server at `opts.url`.
 * @throws Error for a non-loopback URL
 */
export async function runFuzz(opts: FuzzOptions): Promise<CategoryResult[]> {
  assertLoopback(opts.url);
  const url = opts.url.replace(/\/$/, '');
  const model = opts.model ?? 'stories260K';
  const scale = opts.scale ?? 1;
  const timeoutMs = opts.timeoutMs ?? 20_000;
  const seed = opts.seed ?? 15;
  const n = (base: number) => Math.max(1, Math.round(base * scale));
  const { hostname, port } = new URL(url);
  const host = hostname.replace(/^\[|\]$/g, '');
  const expected = await golden(url, model);
  const results: CategoryResult[] = [];
  const json = { 'content-type': 'application/json' };

  const category = async (name: string, body: (t: Tally) => Promise<void>) => {
    const t = new Tally(name);
    try {
      await body(t);
    } catch (err) {
      t.violation('(category)', `the fuzzer itself failed: ${(err as Error).stack ?? err}`);
    }
    let healthyAfter = false;
    try {
      const health = await fetch(`${url}/health`, { signal: AbortSignal.timeout(timeoutMs) });
      healthyAfter = health.status === 200 && (await golden(url, model)) === expected;
    } catch {
      healthyAfter = false;
    }
    if (!healthyAfter) t.violation('(after the category)', 'the server did not answer /health, or the golden text changed');
    const r: CategoryResult = { category: name, inputs: t.inputs, outcomes: t.outcomes, serverErrors: t.serverErrors, violations: t.violations, healthyAfter };
    results.push(r);
    opts.onCategory?.(r);
  };

  await category('completion-fields', async (t) => {
    const samples = fc.sample(
      fc.record({ field: fc.constantFrom(...COMPLETION_FIELDS), value: hostileValue(), second: fc.option(fc.record({ field: fc.constantFrom(...COMPLETION_FIELDS), value: hostileValue() })) }),
      { numRuns: n(500), seed },
    );
    for (const s of samples) {
      const body: Record<string, unknown> = { model, prompt: 'Once upon a time', max_tokens: 4, temperature: 0, [s.field]: s.value };
      if (s.second) body[s.second.field] = s.second.value;
      if (typeof body.n === 'number' && body.n > 4) body.n = 4; // bounded work
      if (typeof body.max_tokens === 'number' && body.max_tokens > 64) body.max_tokens = 64;
      await httpCase(t, `${url}/v1/completions`, { method: 'POST', headers: json, body: JSON.stringify(body), timeoutMs }, body, completionCheck);
    }
  });

  await category('bodies', async (t) => {
    const deep = (depth: number) => '['.repeat(depth) + ']'.repeat(depth);
    const cases: { name: string; body: string | Buffer; headers?: Record<string, string> }[] = [
      { name: 'empty', body: '' },
      { name: 'not JSON', body: 'hello' },
      { name: 'truncated', body: '{"model": "x", "prompt": "a' },
      { name: 'trailing comma', body: '{"model": "x",}' },
      { name: 'NaN literal', body: '{"model": "x", "prompt": "a", "temperature": NaN}' },
      { name: 'JSON null', body: 'null' },
      { name: 'JSON number', body: '42' },
      { name: 'JSON string', body: '"prompt"' },
      { name: 'array', body: '[{"model": "x"}]' },
      { name: 'nested 100k', body: deep(100_000) },
      { name: 'object nested 50k', body: '{"a":'.repeat(50_000) + '1' + '}'.repeat(50_000) },
      { name: 'over the body limit', body: JSON.stringify({ model, prompt: 'a'.repeat(2 * 1024 * 1024) }) },
      { name: 'invalid UTF-8', body: Buffer.from([0x7b, 0x22, 0x6d, 0xff, 0xfe, 0x22, 0x3a, 0x31, 0x7d]) },
      { name: 'UTF-16 BOM', body: Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from('{"model":"x"}', 'utf16le')]) },
      { name: 'gzip that is not gzip', body: '{"model": "x"}', headers: { 'content-encoding': 'gzip' } },
      { name: 'unknown encoding', body: '{"model": "x"}', headers: { 'content-encoding': 'br, zstd, snappy' } },
      { name: 'charset latin1', body: '{"model": "x"}', headers: { 'content-type': 'application/json; charset=latin1' } },
      { name: 'charset bogus', body: '{"model": "x"}', headers: { 'content-type': 'application/json; charset=bogus-42' } },
      { name: 'form encoded', body: 'model=x&prompt=y', headers: { 'content-type': 'application/x-www-form-urlencoded' } },
      { name: 'duplicate keys', body: `{"model": "${model}", "model": 123, "prompt": "a"}` },
      { name: '__proto__ key', body: `{"model": "${model}", "prompt": "a", "__proto__": {"max_tokens": 100000}}` },
      { name: 'huge number', body: `{"model": "${model}", "prompt": "a", "max_tokens": 1e999}` },
      { name: 'lone surrogate escape', body: `{"model": "${model}", "prompt": "\\ud800"}` },
    ];
    const fuzzed = fc.sample(fc.string({ maxLength: 300, unit: 'binary' }), { numRuns: n(80), seed });
    for (const s of fuzzed) cases.push({ name: 'random text', body: s });
    for (const c of cases) {
      await httpCase(t, `${url}/v1/completions`, { method: 'POST', headers: { ...json, ...c.headers }, body: c.body, timeoutMs }, c.name, completionCheck);
    }
  });

  await category('model-names', async (t) => {
    const fixed = ['', ' ', `${model} `, ` ${model}`, model.toUpperCase(), `${model}\u0000`, `${model}/`, '../../etc/passwd', '%', '%zz', '%00', '%2F', '..', '.', '/', '\\', 'a'.repeat(10_000), '\u202e', '💥', '\ud800', 'null', 'undefined', '__proto__', 'constructor', 'hasOwnProperty', `${model}-sliced-0.25`, `${model}-sliced-0.999`, `${model}-sliced-NaN`];
    const random = fc.sample(fc.string({ maxLength: 200, unit: 'grapheme' }), { numRuns: n(60), seed });
    for (const name of [...fixed, ...random]) {
      await httpCase(t, `${url}/v1/completions`, { method: 'POST', headers: json, body: JSON.stringify({ model: name, prompt: 'a', max_tokens: 1 }), timeoutMs }, { model: name }, completionCheck);
      // As a path segment, sent as is over a raw socket (fetch would normalise '.' and '..'):
      // raw (as a client that does not encode would send it) and percent-encoded.
      const encode = (c: string) => {
        try {
          return encodeURIComponent(c);
        } catch {
          return '%ED%A0%80'; // a lone surrogate: its CESU bytes, invalid UTF-8
        }
      };
      for (const segment of [name, encode(name)]) {
        if (segment.length === 0) continue;
        const raw = segment.replace(/[\u0000-\u0020\u007f-\uffff#?]/gu, encode);
        await rawCase(t, Number(port), host, 'GET', `/v1/models/${raw}`, timeoutMs, (b) => {
          const o = (b as { object?: string }).object;
          return o === 'model' || (o === 'list' && /\/\.{1,2}$/.test(raw)) ? null : 'a 2xx answer that is not a model';
        });
      }
    }
  });

  await category('slices-fields', async (t) => {
    const samples = fc.sample(fc.record({ sparsity: hostileValue(), cal_windows: hostileValue(), extra: hostileValue() }), { numRuns: n(120), seed });
    for (const s of samples) {
      // Never a served model: no job may start.
      const body = { model: `not-served-${model}`, ...s };
      await httpCase(t, `${url}/v1/slices`, { method: 'POST', headers: json, body: JSON.stringify(body), timeoutMs }, body);
    }
    for (const sparsity of [0, 1, -0.1, 1.5, 'x', null, 1e-300, 0.9999999]) {
      const body = { model, sparsity, cal_windows: 0 };
      await httpCase(t, `${url}/v1/slices`, { method: 'POST', headers: json, body: JSON.stringify(body), timeoutMs }, body);
    }
    for (const id of ['slice-nope', '%', '%zz', 'a'.repeat(5000), '..%2F..']) await httpCase(t, `${url}/v1/slices/${id}`, { method: 'GET', timeoutMs }, id);
  });

  await category('routes', async (t) => {
    const methods = ['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'HEAD', 'PROPFIND', 'TRACE'];
    const paths = ['/', '/v1', '/v1/', '/v1/completions', '/v1/completions/', '/v1/chat/completions', '/v1/models', '/v1/slices', '/metrics', '/v1/embeddings', '/v2/completions', '/v1/completions?x=%zz', '/%', '/%00', '/..', '//v1//models', '/v1/models/%E0%A4%A', '/health/../v1/models'];
    const random = fc.sample(fc.webPath(), { numRuns: n(40), seed });
    for (const p of [...paths, ...random]) {
      for (const method of methods) {
        if (method === 'HEAD' || method === 'TRACE' || method === 'PROPFIND') {
          // fetch forbids TRACE; HEAD has no body to check.
          await rawCase(t, Number(port), host, method, p.startsWith('/') ? p : `/${p}`, timeoutMs);
          continue;
        }
        await httpCase(t, `${url}${p.startsWith('/') ? p : `/${p}`}`, { method, headers: method === 'GET' ? {} : json, body: method === 'GET' ? undefined : '{}', timeoutMs }, `${method} ${p}`);
      }
    }
  });

  await category('raw-http', async (t) => {
    for (const c of rawHttpCases(host)) {
      t.inputs++;
      const r = await rawExchange(Number(port), host, c.bytes, 5000);
      if (!r) {
        t.count('closed');
        t.violation(c.name, 'the connection closed without an HTTP answer');
        continue;
      }
      t.count(String(r.status));
      if (r.status >= 500) t.serverErrors++;
      if (r.status >= 400) {
        let body: unknown;
        try {
          body = JSON.parse(r.body);
        } catch {
          t.violation(c.name, `status ${r.status} with a body that is not JSON: ${JSON.stringify(r.body.slice(0, 60))}`);
          continue;
        }
        const problem = openAIErrorProblem(body);
        if (problem) t.violation(c.name, `status ${r.status}: ${problem}`);
      }
    }
  });

  await category('ws-handshake', async (t) => {
    const key = 'dGhlIHNhbXBsZSBub25jZQ==';
    const up = (lines: string) => Buffer.from(`${lines}\r\n\r\n`, 'latin1');
    const cases: [string, Buffer][] = [
      ['POST upgrade', up(`POST /v1/stream HTTP/1.1\r\nHost: ${host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13`)],
      ['no key', up(`GET /v1/stream HTTP/1.1\r\nHost: ${host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13`)],
      ['bad key', up(`GET /v1/stream HTTP/1.1\r\nHost: ${host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13`)],
      ['version 12', up(`GET /v1/stream HTTP/1.1\r\nHost: ${host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 12`)],
      ['no version', up(`GET /v1/stream HTTP/1.1\r\nHost: ${host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}`)],
      ['bad protocol header', up(`GET /v1/stream HTTP/1.1\r\nHost: ${host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: a,,b, ,@`)],
      ['Upgrade: h2c', up(`GET /v1/stream HTTP/1.1\r\nHost: ${host}\r\nUpgrade: h2c\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13`)],
      ['wrong path', up(`GET /v1/streams HTTP/1.1\r\nHost: ${host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13`)],
      ['deflate offer with bad params', up(`GET /v1/stream HTTP/1.1\r\nHost: ${host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=99; x=`)],
    ];
    for (const [name, bytes] of cases) {
      t.inputs++;
      const r = await rawExchange(Number(port), host, bytes, 3000);
      if (!r) {
        t.violation(name, 'no HTTP answer');
        continue;
      }
      t.count(String(r.status));
      if (r.status === 101) continue; // accepted (e.g. an extension offer the server ignores)
      if (r.status >= 500) t.serverErrors++;
      let body: unknown;
      try {
        body = JSON.parse(r.body);
      } catch {
        t.violation(name, `status ${r.status} with a body that is not JSON: ${JSON.stringify(r.body.slice(0, 60))}`);
        continue;
      }
      const problem = openAIErrorProblem(body);
      if (problem) t.violation(name, `status ${r.status}: ${problem}`);
    }
  });

  await category('ws-messages', async (t) => {
    // Many hostile messages per socket (one socket per 20), each answered with an error or a completion.
    const messages = fc.sample(
      fc.oneof(
        fc.record({ type: fc.constantFrom('completion', 'cancel', 'bogus'), id: hostileValue(), model: fc.constant(model), prompt: hostileValue(), max_tokens: fc.constant(2) }),
        fc.record({ type: fc.constant('completion'), id: fc.uuid(), field: fc.constantFrom(...COMPLETION_FIELDS), value: hostileValue() }).map(({ type, id, field, value }) => ({ type, id, model, prompt: 'a', max_tokens: 2, [field]: value })),
        hostileValue(),
      ),
      { numRuns: n(300), seed },
    );
    for (let i = 0; i < messages.length; i += 20) {
      const batch = messages.slice(i, i + 20);
      t.inputs += batch.length;
      const r = await wsSession(url, (ws) => batch.forEach((m) => ws.send(JSON.stringify(m) ?? 'undefined')), 1500, timeoutMs);
      checkWsOutcome(t, batch, r);
    }
    const frames: [string, (ws: WebSocket) => void][] = [
      ['binary frame', (ws) => ws.send(Buffer.from([1, 2, 3]))],
      ['not JSON', (ws) => ws.send('hello')],
      ['message over 1 MiB', (ws) => ws.send('x'.repeat(1024 * 1024 + 10))],
      ['RSV1 set without permessage-deflate', (ws) => (ws as unknown as { _socket: net.Socket })._socket.write(rawFrame(0xc1, Buffer.from('{}')))],
      ['RSV2 set', (ws) => (ws as unknown as { _socket: net.Socket })._socket.write(rawFrame(0xa1, Buffer.from('{}')))],
      ['reserved opcode 3', (ws) => (ws as unknown as { _socket: net.Socket })._socket.write(rawFrame(0x83, Buffer.from('{}')))],
      ['invalid UTF-8 text', (ws) => (ws as unknown as { _socket: net.Socket })._socket.write(rawFrame(0x81, Buffer.from([0x7b, 0xff, 0x7d])))],
      ['continuation without start', (ws) => (ws as unknown as { _socket: net.Socket })._socket.write(rawFrame(0x80, Buffer.from('{}')))],
      ['fragmented control frame', (ws) => (ws as unknown as { _socket: net.Socket })._socket.write(rawFrame(0x09, Buffer.from('x')))],
      ['unmasked frame', (ws) => (ws as unknown as { _socket: net.Socket })._socket.write(Buffer.from([0x81, 0x02, 0x7b, 0x7d]))],
      ['close with bad code', (ws) => (ws as unknown as { _socket: net.Socket })._socket.write(rawFrame(0x88, Buffer.from([0x03, 0xe7])))],
      ['ping flood', (ws) => { for (let k = 0; k < 2000; k++) ws.ping(); ws.send(JSON.stringify({ type: 'cancel', id: 'x' })); }],
      ['1,000 completions then close', (ws) => { for (let k = 0; k < 1000; k++) ws.send(JSON.stringify({ type: 'completion', id: `c${k}`, model, prompt: 'a', max_tokens: 1 })); setTimeout(() => ws.close(), 50); }],
    ];
    for (const [name, send] of frames) {
      t.inputs++;
      const r = await wsSession(url, send, 2000, timeoutMs);
      checkWsOutcome(t, name, r);
    }
  });
  return results;
}

/** Totals over categories. */
export function fuzzTotals(results: readonly CategoryResult[]): { inputs: number; serverErrors: number; violations: number; unhealthy: number } {
  return {
    inputs: results.reduce((a, r) => a + r.inputs, 0),
    serverErrors: results.reduce((a, r) => a + r.serverErrors, 0),
    violations: results.reduce((a, r) => a + r.violations.length, 0),
    unhealthy: results.filter((r) => !r.healthyAfter).length,
  };
}

async function main(argv: string[]): Promise<number> {
  const { ServerProcess, freePort, waitForServer } = await import('./server-process.js');
  const fs = await import('node:fs');
  const path = await import('node:path');
  const arg = (name: string) => {
    const i = argv.indexOf(`--${name}`);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const scale = Number(arg('scale') ?? 1);
  const seed = Number(arg('seed') ?? 15);
  if (!(scale > 0 && scale <= 20) || !Number.isInteger(seed)) {
    console.error('fuzz: --scale must be in (0, 20], --seed an integer');
    return 2;
  }
  const root = path.resolve(__dirname, '..', '..');
  const outDir = path.join(root, 'loadtests', 'reports');
  fs.mkdirSync(outDir, { recursive: true });
  let url = arg('url');
  let server: import('./server-process.js').ServerProcess | null = null;
  if (!url) {
    const port = await freePort();
    const logFile = path.join(outDir, 'fuzz-server.log');
    fs.writeFileSync(logFile, '');
    server = ServerProcess.start(process.execPath, [path.join(root, 'bin', 'sliceserve.js'), 'serve', '--host', '127.0.0.1', '--port', String(port), '--dense-only', '--max-queue', '64'], { cwd: root, logFile });
    url = `http://127.0.0.1:${port}`;
    await waitForServer(url, (m) => m.length > 0, 120, { alive: () => server!.failure(), intervalMs: 200 });
  }
  assertLoopback(url);
  const t0 = performance.now();
  const results = await runFuzz({
    url,
    scale,
    seed,
    onCategory: (r) => {
      const top = Object.entries(r.outcomes).sort((a, b) => b[1] - a[1]).slice(0, 6).map(([k, v]) => `${k}:${v}`).join(' ');
      console.log(`${r.category.padEnd(18)} ${String(r.inputs).padStart(5)} inputs  5xx ${r.serverErrors}  shape violations ${r.violations.length}  healthy after ${r.healthyAfter}  [${top}]`);
      for (const v of r.violations.slice(0, 5)) console.log(`    ${v.problem} <- ${v.input.slice(0, 160)}`);
    },
  });
  const crashed = server?.failure() ?? null;
  const totals = fuzzTotals(results);
  const seconds = Math.round((performance.now() - t0) / 100) / 10;
  const report = { url, seed, scale, seconds, crashed: crashed !== null, totals, results };
  const file = path.join(outDir, 'fuzz-report.json');
  fs.writeFileSync(file, JSON.stringify(report, null, 2) + '\n');
  console.log(`${totals.inputs} hostile inputs in ${seconds} s: crashes ${crashed ? 1 : 0}, 5xx ${totals.serverErrors}, shape violations ${totals.violations}, categories unhealthy after ${totals.unhealthy}; report ${path.relative(root, file)}`);
  if (crashed) console.log(crashed);
  await server?.stop();
  return crashed || totals.serverErrors || totals.violations || totals.unhealthy ? 1 : 0;
}

if (require.main === module) {
  void main(process.argv.slice(2)).then((code) => process.exit(code), (err: unknown) => {
    console.error(`fuzz: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  });
}
