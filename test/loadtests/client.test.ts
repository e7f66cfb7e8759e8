import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { carriesToken, streamCompletion } from '../../loadtests/client.js';
import { freePort } from '../../loadtests/server-process.js';
import { startFakeServer, type FakeServer } from './fake-server.js';

let server: FakeServer;
let split: FakeServer;

before(async () => {
  const models = [
    { id: 'ok' },
    { id: 'http500', behaviour: 'http500' as const },
    { id: 'drop', behaviour: 'drop' as const },
    { id: 'no-done', behaviour: 'no-done' as const },
    { id: 'error-chunk', behaviour: 'error-chunk' as const },
    { id: 'hang', behaviour: 'hang' as const },
  ];
  server = await startFakeServer({ models });
  split = await startFakeServer({ models, splitBytes: 3 });
});
after(async () => {
  await server.close();
  await split.close();
});

const body = (model: string, max_tokens = 8) => ({ model, prompt: [1, 5, 6, 7], max_tokens, temperature: 0, ignore_eos: true });
const opts = (url: string) => ({ baseUrl: url, timeoutS: 10, concurrency: 1 });

test('a streamed completion is timed: TTFT, one ITL per gap, TPOT over tokens after the first, usage', async () => {
  for (const s of [server, split]) {
    const r = await streamCompletion(body('ok', 8), opts(s.url));
    assert.equal(r.ok, true, r.error);
    assert.equal(r.output_tokens, 8);
    assert.equal(r.prompt_tokens, 4);
    assert.equal(r.itl_s.length, 7);
    assert.ok(r.ttft_s !== null && r.ttft_s > 0 && r.ttft_s <= r.e2e_s);
    // TPOT = (e2e - TTFT) / (n - 1): the ITLs add up to no more than e2e - TTFT
    assert.ok(Math.abs(r.tpot_s! - (r.e2e_s - r.ttft_s) / 7) < 1e-12);
    assert.ok(r.itl_s.reduce((a, b) => a + b, 0) <= r.e2e_s - r.ttft_s + 1e-9);
  }
  const { body: sentBody, ...sent } = server.received.at(-1)!;
  assert.deepEqual(sent, { model: 'ok', prompt: [1, 5, 6, 7], max_tokens: 8, ignore_eos: true, stream: true });
  assert.deepEqual(sentBody.stream_options, { include_usage: true });
});

test("llama.cpp's closing chunk (empty text, finish_reason, usage) is not counted as a token", async () => {
  const llama = await startFakeServer({ models: [{ id: 'models/bench-q8_0.gguf' }], style: 'llamacpp' });
  try {
    const r = await streamCompletion(body('anything', 8), opts(llama.url));
    assert.equal(r.ok, true, r.error);
    assert.deepEqual([r.output_tokens, r.prompt_tokens, r.itl_s.length], [8, 4, 7], 'one ITL per gap between the 8 tokens, none for the closing chunk');
    assert.ok(Math.abs(r.tpot_s! - (r.e2e_s - r.ttft_s!) / 7) < 1e-12);
  } finally {
    await llama.close();
  }
  assert.equal(carriesToken({ choices: [{ text: ' a', finish_reason: null }] }), true);
  assert.equal(carriesToken({ choices: [{ text: ' a', finish_reason: 'length' }] }), true, "SliceServe's last token carries the finish_reason");
  assert.equal(carriesToken({ choices: [{ text: '', finish_reason: null }] }), true, 'a token that decodes to no text yet (a partial UTF-8 sequence) still arrived');
  assert.equal(carriesToken({ choices: [{ text: '', finish_reason: 'length' }] }), false);
  assert.equal(carriesToken({ choices: [] }), false, 'the usage chunk');
  assert.equal(carriesToken({}), false);
});

test('one output token: no ITL, no TPOT', async () => {
  const r = await streamCompletion(body('ok', 1), opts(server.url));
  assert.equal(r.ok, true);
  assert.deepEqual([r.output_tokens, r.itl_s.length, r.tpot_s], [1, 0, null]);
});

test('failures are counted as errors with a reason, never thrown', async () => {
  const cases: Array<[string, RegExp]> = [
    ['http500', /^HTTP 500: engine crashed/],
    ['drop', /stream failed|terminated|socket/i],
    ['no-done', /ended before data: \[DONE\]/],
    ['error-chunk', /^error chunk: out of KV cache/],
    ['unknown-model', /^HTTP 404: model unknown-model not found/],
  ];
  for (const [model, reason] of cases) {
    const r = await streamCompletion(body(model), opts(server.url));
    assert.equal(r.ok, false, model);
    assert.match(r.error ?? '', reason, model);
  }
  // the fake server drops the connection after 2 token chunks (the last may be lost with the socket)
  const dropped = await streamCompletion(body('drop'), opts(server.url));
  assert.ok(dropped.output_tokens >= 1 && dropped.output_tokens <= 2, `tokens before the drop: ${dropped.output_tokens}`);
});

test('a refused connection, a timeout and an abort are errors', async () => {
  const port = await freePort();
  const refused = await streamCompletion(body('ok'), opts(`http://127.0.0.1:${port}`));
  assert.equal(refused.ok, false);
  assert.match(refused.error ?? '', /request failed.*ECONNREFUSED/);
  const hung = await streamCompletion(body('hang'), { ...opts(server.url), timeoutS: 0.3 });
  assert.match(hung.error ?? '', /^timeout after 0.3 s/);
  const controller = new AbortController();
  const pending = streamCompletion(body('hang'), { ...opts(server.url), signal: controller.signal });
  setTimeout(() => controller.abort(), 50);
  const aborted = await pending;
  assert.equal(aborted.ok, false);
  assert.doesNotMatch(aborted.error ?? '', /timeout/);
});
