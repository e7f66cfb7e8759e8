/**
 * Bad input gets the right status and the OpenAI error shape, and the server keeps serving:
 * malformed JSON, unknown model, negative / non-numeric / out-of-range fields, too-long
 * prompts, stream_options without stream, oversized bodies, wrong API keys, a full queue.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import OpenAI from 'openai';
import { describeBodyLimit, parseBodyLimit } from '../../server/body-limit.js';
import { API_KEY, DENSE, GOLDEN, type TestServer, errorOf, get, post, sample, scrape, startTestServer, waitFor } from './helpers.js';

let t: TestServer;
const url = () => `${t.url}/v1/completions`;
const good = { model: DENSE, prompt: 'Once upon a time', max_tokens: 60, temperature: 0 };

before(async () => {
  t = await startTestServer({ apiKey: API_KEY });
});
after(async () => {
  await t.server.shutdown(1000);
});

/** Posts `body`, checks status + error shape (+ param/code when given). */
async function expectError(body: unknown, status: number, param?: string | null, code?: string | null, headers?: Record<string, string>) {
  const res = await post(url(), body, headers);
  assert.equal(res.status, status, `status for ${JSON.stringify(body).slice(0, 80)}: ${JSON.stringify(res.body)}`);
  const e = errorOf(res.body);
  if (param !== undefined) assert.equal(e.param, param);
  if (code !== undefined) assert.equal(e.code, code);
  return e;
}

test('malformed JSON and non-object bodies are 400', async () => {
  await expectError('{"model": "stories260K", "prompt": ', 400, null, 'invalid_json');
  await expectError('[1, 2]', 400, null, 'invalid_json');
  await expectError('"text"', 400);
});

test('a body that is empty or not a JSON object says what the body must be', async () => {
  const objectNeeded = (got: string) => `The request body must be a JSON object with at least "model" and "prompt"; got ${got}.`;
  for (const [body, got] of [['null', 'null'], ['"hello"', '"hello"'], ['5', '5'], ['[1, 2]', '[1,2]'], ['', 'an empty body']]) {
    const e = await expectError(body, 400, null, 'invalid_json');
    assert.equal(e.message, objectNeeded(got), `body ${JSON.stringify(body)}`);
  }
  const slices = await post(`${t.url}/v1/slices`, '');
  assert.equal(slices.status, 400);
  assert.equal(errorOf(slices.body).message, 'The request body must be a JSON object with at least "model" and "sparsity"; got an empty body.');
});

test('prompt, stop and integer fields say what they accept', async () => {
  const forms = 'a string, an array of strings, an array of token ids (integers >= 0), or an array of token-id arrays; arrays must be non-empty';
  const missing = await expectError({ model: DENSE }, 400, 'prompt');
  assert.equal(missing.message, `prompt: is required: ${forms}`);
  for (const [prompt, got] of [[123, '123'], [[], '[]'], [[1.5], '[1.5]'], [[1, 'a'], '[1,"a"]']] as const) {
    const e = await expectError({ ...good, prompt }, 400, 'prompt');
    assert.equal(e.message, `prompt: must be ${forms}; got ${got}`);
  }
  const stops = await expectError({ ...good, stop: Array.from({ length: 17 }, (_, i) => `s${i}`) }, 400, 'stop');
  assert.equal(stops.message, 'stop: must have at most 16 strings; got 17');
  assert.equal((await expectError({ ...good, stop: 7 }, 400, 'stop')).message, 'stop: must be a string or an array of at most 16 strings; got 7');
  assert.equal((await expectError({ ...good, max_tokens: 2.5 }, 400, 'max_tokens')).message, 'max_tokens: must be an integer; got 2.5');
  assert.equal((await expectError({ ...good, n: 1.5 }, 400, 'n')).message, 'n: must be an integer; got 1.5');
  assert.equal((await post(url(), { ...good, stop: Array(16).fill('zzz'), max_tokens: 2 })).status, 200, '16 stop strings are fine');
});

test('a body nested too deeply to preview, or one whose Content-Encoding lies, is a 400, not a 500', async () => {
  const depth = 100_000;
  const nested = `{"model": "${DENSE}", "prompt": ${'['.repeat(depth)}${']'.repeat(depth)}}`;
  const deep = await expectError(nested, 400, 'prompt');
  assert.match(deep.message, /^prompt: must be .*; got a deeply nested array$/);
  const auth = { authorization: `Bearer ${API_KEY}` };
  const gzip = await expectError(JSON.stringify(good), 400, null, 'invalid_body', { ...auth, 'content-encoding': 'gzip' });
  assert.match(gzip.message, /^Unreadable request body: /);
  const unknown = await expectError(JSON.stringify(good), 400, null, 'invalid_body', { ...auth, 'content-encoding': 'foo' });
  assert.match(unknown.message, /foo/);
  assert.equal((await post(url(), good)).status, 200, 'and the server still serves');
});

test('unknown model is 404; missing fields are 400', async () => {
  const e = await expectError({ ...good, model: 'gpt-17' }, 404, 'model', 'model_not_found');
  assert.match(e.message, /gpt-17/);
  await expectError({ prompt: 'x' }, 400, 'model');
  await expectError({ model: DENSE }, 400, 'prompt');
  const res = await get(`${t.url}/v1/models/nope`);
  assert.equal(res.status, 404);
  errorOf(res.body);
});

test('negative, non-numeric and out-of-range fields are 400 naming the field', async () => {
  await expectError({ ...good, max_tokens: -1 }, 400, 'max_tokens');
  await expectError({ ...good, max_tokens: 'ten' }, 400, 'max_tokens');
  await expectError({ ...good, max_tokens: 1.5 }, 400, 'max_tokens');
  await expectError({ ...good, temperature: 'hot' }, 400, 'temperature');
  await expectError({ ...good, temperature: -0.5 }, 400, 'temperature');
  await expectError({ ...good, top_p: 0 }, 400, 'top_p');
  await expectError({ ...good, n: 0 }, 400, 'n');
  await expectError({ ...good, logprobs: 50 }, 400, 'logprobs');
  await expectError({ ...good, presence_penalty: 3 }, 400, 'presence_penalty');
  await expectError({ ...good, stop: 7 }, 400, 'stop');
  await expectError({ ...good, prompt: [] }, 400, 'prompt');
  await expectError({ ...good, prompt: [1, -3] }, 400, 'prompt');
  await expectError({ ...good, prompt: [1, 100000] }, 400, 'prompt');
  assert.equal((await expectError({ ...good, logit_bias: { abc: 1 } }, 400, 'logit_bias')).message, 'logit_bias.abc: keys must be token ids; got key "abc"');
  await expectError({ ...good, min_tokens: 100 }, 400, 'min_tokens');
  await expectError({ ...good, suffix: 'the end' }, 400, 'suffix', 'unsupported');
  await expectError({ ...good, best_of: 3 }, 400, 'best_of');
});

test('a prompt longer than the context is a 400, not a truncation; so is prompt + max_tokens', async () => {
  const long = 'Once upon a time there was a big dog. '.repeat(60);
  await expectError({ ...good, prompt: long }, 400, 'prompt', 'context_length_exceeded');
  await expectError({ ...good, prompt: Array(513).fill(261) }, 400, 'prompt', 'context_length_exceeded');
  await expectError({ ...good, prompt: long, stream: true }, 400, 'prompt', 'context_length_exceeded');
  const e = await expectError({ ...good, max_tokens: 510 }, 400, 'max_tokens', 'context_length_exceeded');
  assert.match(e.message, /512/);
  // A prompt of exactly the context length leaves no room for a completion: said as such.
  const full = await expectError({ ...good, prompt: Array(512).fill(261), max_tokens: 16 }, 400, 'max_tokens', 'context_length_exceeded');
  assert.equal(full.message, "This model's maximum context length is 512 tokens, but 528 were requested (512 in the prompt, 16 in the completion); lower max_tokens or shorten the prompt.");
  assert.equal((await post(url(), { ...good, prompt: Array(512).fill(261), max_tokens: 0, echo: true, logprobs: 0 })).status, 200, 'scoring a full-context prompt is fine');
  const fits = await post(url(), { ...good, prompt: Array(500).fill(261), max_tokens: 12 });
  assert.equal(fits.status, 200);
  assert.equal(fits.body.usage.completion_tokens, 12);
});

test('stream_options without stream is 400', async () => {
  await expectError({ ...good, stream_options: { include_usage: true } }, 400, 'stream_options');
  await expectError({ ...good, stream: false, stream_options: { include_usage: true } }, 400, 'stream_options');
});

test('an oversized body is 413, and the message gives the limit with its unit', async () => {
  const e = await expectError({ ...good, prompt: 'a'.repeat(2 * 1024 * 1024) }, 413, null, 'request_too_large');
  assert.equal(e.message, 'Request body is larger than the limit of 1mb (1048576 bytes).');
});

test('a body limit body-parser cannot read is refused at startup, not on every request', async () => {
  await assert.rejects(startTestServer({ bodyLimit: '1zb' }), /expected a size .*1mb.*got "1zb"/);
  assert.equal(parseBodyLimit('512KB'), 512 * 1024);
  assert.equal(parseBodyLimit('2.5mb'), 2.5 * 1024 * 1024);
  assert.equal(parseBodyLimit('5000'), 5000);
  assert.throws(() => parseBodyLimit('0'), /at least 1 byte/);
  assert.equal(describeBodyLimit('5000'), '5000 bytes');
  const small = await startTestServer({ bodyLimit: '100' });
  try {
    const res = await post(`${small.url}/v1/completions`, { ...good, prompt: 'a'.repeat(200) }, {});
    assert.equal(res.status, 413);
    assert.equal(errorOf(res.body).message, 'Request body is larger than the limit of 100 bytes.');
    assert.equal((await post(`${small.url}/v1/completions`, { ...good, max_tokens: 1 }, {})).status, 200, 'a body under the limit passes');
  } finally {
    await small.server.shutdown(1000);
  }
});

test('API key: missing or wrong is 401 everywhere but /health', async () => {
  await expectError(good, 401, null, 'invalid_api_key', {});
  await expectError(good, 401, null, 'invalid_api_key', { authorization: 'Bearer nope' });
  await expectError(good, 401, null, 'invalid_api_key', { authorization: API_KEY });
  for (const path of ['/v1/models', '/metrics', '/v1/slices']) {
    const res = await get(`${t.url}${path}`, {});
    assert.equal(res.status, 401, path);
    errorOf(res.body);
  }
  assert.equal((await get(`${t.url}/health`, {})).status, 200);
  assert.equal((await get(`${t.url}/health/ready`, {})).status, 200);
  const client = new OpenAI({ baseURL: `${t.url}/v1`, apiKey: 'wrong', maxRetries: 0 });
  await assert.rejects(client.completions.create(good), (err: unknown) => err instanceof OpenAI.AuthenticationError && err.status === 401);
});

test('unknown routes are 404 in the error shape', async () => {
  const res = await get(`${t.url}/v1/embeddings`);
  assert.equal(res.status, 404);
  assert.equal(errorOf(res.body).message, 'GET /v1/embeddings not found');
});

test('GET /v1/chat/completions is a 405 naming POST', async () => {
  const res = await get(`${t.url}/v1/chat/completions`);
  assert.equal(res.status, 405);
  assert.equal(res.headers.get('allow'), 'POST');
  assert.equal(errorOf(res.body).code, 'method_not_allowed');
});

test('a known path with the wrong method is 405 with Allow', async () => {
  const res = await get(url());
  assert.equal(res.status, 405);
  assert.equal(res.headers.get('allow'), 'POST');
  assert.equal(errorOf(res.body).code, 'method_not_allowed');
});

test('requests refused by validation count in sliceserve_request_failure_total of the model they name', async () => {
  const before = sample(await scrape(t.url), 'sliceserve_request_failure_total', { model: DENSE, status: '400' }) ?? 0;
  await expectError({ ...good, n: 0 }, 400, 'n');
  await expectError({ ...good, temperature: 5 }, 400, 'temperature');
  const after = sample(await scrape(t.url), 'sliceserve_request_failure_total', { model: DENSE, status: '400' });
  assert.equal(after, before + 2);
});

test('after all that, the server still serves the golden text', async () => {
  const res = await post(url(), good);
  assert.equal(res.status, 200);
  assert.equal(res.body.choices[0].text, GOLDEN);
});

test('a full waiting queue is 429 with Retry-After', async () => {
  const small = await startTestServer({ maxBatchSize: 1, maxQueue: 1 });
  try {
    const long = { ...good, max_tokens: 400, ignore_eos: true };
    const running = post(`${small.url}/v1/completions`, long, {});
    await waitFor(async () => sample(await scrape(small.url, {}), 'sliceserve_num_requests_running', { model: DENSE }) === 1, 10_000, 'first request running');
    const queued = post(`${small.url}/v1/completions`, { ...good, max_tokens: 5 }, {});
    await waitFor(async () => sample(await scrape(small.url, {}), 'sliceserve_num_requests_waiting', { model: DENSE }) === 1, 10_000, 'second request waiting');
    const refused = await post(`${small.url}/v1/completions`, good, {});
    assert.equal(refused.status, 429);
    assert.equal(refused.headers.get('retry-after'), '1');
    assert.equal(errorOf(refused.body).code, 'queue_full');
    assert.equal((await running).status, 200);
    const q = await queued;
    assert.equal(q.status, 200, 'the waiting request is served once a slot frees');
    assert.equal(q.body.choices[0].text, GOLDEN.slice(0, q.body.choices[0].text.length));
  } finally {
    await small.server.shutdown(1000);
  }
});

test('a burst on an idle server is accepted up to the free batch slots plus the queue; the rest get 429', async () => {
  const small = await startTestServer({ maxBatchSize: 2, maxQueue: 1 });
  try {
    const long = { ...good, max_tokens: 300, ignore_eos: true };
    const all = await Promise.all(Array.from({ length: 6 }, () => post(`${small.url}/v1/completions`, long, {})));
    const codes = all.map((r) => r.status).sort();
    assert.deepEqual(codes, [200, 200, 200, 429, 429, 429], 'two admitted at once, one waiting, three refused');
    // Slots are sequences: with n = 2 a request fills the batch, so one runs and one waits.
    const pairs = await Promise.all(Array.from({ length: 4 }, () => post(`${small.url}/v1/completions`, { ...long, max_tokens: 100, n: 2 }, {})));
    assert.deepEqual(pairs.map((r) => r.status).sort(), [200, 200, 429, 429], 'n = 2: one admitted, one waiting, two refused');
  } finally {
    await small.server.shutdown(1000);
  }
});

test('a model whose worker dies fails its requests with 500/503; the rest of the server lives', async () => {
  const s = await startTestServer();
  try {
    const inflight = post(`${s.url}/v1/completions`, { ...good, max_tokens: 450, ignore_eos: true }, {});
    await waitFor(async () => sample(await scrape(s.url, {}), 'sliceserve_num_requests_running', { model: DENSE }) === 1, 10_000, 'running');
    await s.server.models.get(DENSE).worker.terminate();
    const failed = await inflight;
    assert.equal(failed.status, 500);
    assert.equal(errorOf(failed.body).code, 'worker_exited');
    const after = await post(`${s.url}/v1/completions`, good, {});
    assert.equal(after.status, 503);
    assert.equal(errorOf(after.body).code, 'model_unavailable');
    const ready = await get(`${s.url}/health/ready`, {});
    assert.equal(ready.status, 503);
    assert.equal(ready.body.status, 'degraded');
    assert.deepEqual(ready.body.down, [DENSE]);
    assert.equal((await get(`${s.url}/health`, {})).status, 200);
    assert.equal((await get(`${s.url}/v1/models`, {})).status, 200);
  } finally {
    await s.server.shutdown(1000);
  }
});
