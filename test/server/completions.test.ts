/**
 * /v1/completions through the official `openai` client (JSON and SSE), and the WebSocket
 * stream, against the real server and the bundled stories260K model.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import OpenAI from 'openai';
import WebSocket from 'ws';
import { API_KEY, DENSE, GOLDEN, type TestServer, get, openStream, post, sample, scrape, startTestServer, waitFor } from './helpers.js';

let t: TestServer;
let client: OpenAI;
const GREEDY = { model: DENSE, prompt: 'Once upon a time', max_tokens: 60, temperature: 0 } as const;

before(async () => {
  t = await startTestServer({ apiKey: API_KEY });
  client = new OpenAI({ baseURL: `${t.url}/v1`, apiKey: API_KEY, maxRetries: 0 });
});
after(async () => {
  await t.server.shutdown(1000);
});

/** Text of a streamed completion per choice index, with the finish reasons and usage chunk. */
async function streamText(params: Record<string, unknown>) {
  const stream = await client.completions.create({ ...GREEDY, ...params, stream: true } as OpenAI.CompletionCreateParamsStreaming);
  const text: string[] = [];
  const finish: (string | null)[] = [];
  let usage: OpenAI.CompletionUsage | undefined;
  let chunks = 0;
  for await (const chunk of stream) {
    chunks++;
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      text[c.index] = (text[c.index] ?? '') + c.text;
      if (c.finish_reason) finish[c.index] = c.finish_reason;
    }
  }
  return { text, finish, usage, chunks };
}

describe('greedy golden text', () => {
  test('non-streaming completion equals llama2.c', async () => {
    const res = await client.completions.create(GREEDY);
    assert.equal(res.object, 'text_completion');
    assert.match(res.id, /^cmpl-/);
    assert.equal(res.model, DENSE);
    assert.equal(res.choices.length, 1);
    assert.equal(res.choices[0].text, GOLDEN);
    assert.equal(res.choices[0].finish_reason, 'length');
    assert.equal(res.choices[0].logprobs, null);
    assert.deepEqual(res.usage, { prompt_tokens: 5, completion_tokens: 60, total_tokens: 65 });
  });

  test('SSE stream equals llama2.c, one chunk per token, usage chunk, [DONE]', async () => {
    const { text, finish, usage, chunks } = await streamText({ stream_options: { include_usage: true } });
    assert.equal(text[0], GOLDEN);
    assert.deepEqual(finish, ['length']);
    assert.deepEqual(usage, { prompt_tokens: 5, completion_tokens: 60, total_tokens: 65 });
    assert.equal(chunks, 61, '60 token chunks + the usage chunk');
    const raw = await post(`${t.url}/v1/completions`, { ...GREEDY, max_tokens: 3, stream: true });
    assert.equal(raw.status, 200);
    assert.match(raw.headers.get('content-type') ?? '', /text\/event-stream/);
    const events = String(raw.body).split('\n\n').filter(Boolean);
    assert.equal(events.at(-1), 'data: [DONE]');
    assert.equal(events.length, 4);
  });

  test('token-id prompt gives the same text', async () => {
    const res = await client.completions.create({ ...GREEDY, prompt: [1, 403, 407, 261, 378] });
    assert.equal(res.choices[0].text, GOLDEN);
  });

  test('16 concurrent requests (JSON and SSE) each equal the request alone, and were batched', async () => {
    const before = await scrape(t.url);
    const batchCount = (f: typeof before, le: string) => sample(f, 'sliceserve_batch_size_bucket', { model: DENSE, phase: 'decode', le }) ?? 0;
    const json = Array.from({ length: 8 }, () => client.completions.create(GREEDY));
    const sse = Array.from({ length: 8 }, () => streamText({}));
    for (const r of await Promise.all(json)) assert.equal(r.choices[0].text, GOLDEN);
    for (const r of await Promise.all(sse)) assert.equal(r.text[0], GOLDEN);
    const afterScrape = await scrape(t.url);
    const decodeSteps = batchCount(afterScrape, '+Inf') - batchCount(before, '+Inf');
    const singleSteps = batchCount(afterScrape, '1') - batchCount(before, '1');
    assert.ok(decodeSteps > 0 && singleSteps < decodeSteps, `decode steps ${decodeSteps}, of which batch size 1: ${singleSteps}`);
  });

  test('several prompts in one request keep their order', async () => {
    const res = await client.completions.create({ ...GREEDY, prompt: ['Lily and', 'Once upon a time'] });
    assert.deepEqual(res.choices.map((c) => c.index), [0, 1]);
    assert.equal(res.choices[1].text, GOLDEN);
    assert.notEqual(res.choices[0].text, GOLDEN);
    assert.equal(res.usage?.prompt_tokens, 5 + (await client.completions.create({ ...GREEDY, prompt: 'Lily and', max_tokens: 1 })).usage!.prompt_tokens);
  });

  test('the story ends where llama2.c ends it: at BOS, with finish_reason "stop"', async () => {
    // stories260K separates its training stories with BOS and never emits EOS; greedy decoding
    // from the golden prompt emits BOS as its 342nd token (llama2.c's run.c stops there too).
    const res = await client.completions.create({ ...GREEDY, max_tokens: 400 });
    assert.equal(res.choices[0].finish_reason, 'stop');
    assert.equal(res.usage?.completion_tokens, 342);
    assert.ok(res.choices[0].text.startsWith(GOLDEN));
    assert.doesNotMatch(res.choices[0].text, /Once upon a time/, 'no second story');
    const ignored = await client.completions.create({ ...GREEDY, max_tokens: 400, ignore_eos: true } as OpenAI.CompletionCreateParamsNonStreaming);
    assert.deepEqual([ignored.choices[0].finish_reason, ignored.usage?.completion_tokens], ['length', 400]);
  });
});

describe('sampling and output options', () => {
  test('seed makes sampling reproducible; n choices use distinct streams', async () => {
    const params = { model: DENSE, prompt: 'Once upon a time', max_tokens: 24, temperature: 1, n: 3, seed: 1234 };
    const a = await client.completions.create(params);
    const b = await client.completions.create(params);
    assert.equal(a.choices.length, 3);
    assert.deepEqual(a.choices.map((c) => c.text), b.choices.map((c) => c.text));
    assert.equal(new Set(a.choices.map((c) => c.text)).size, 3, 'three different samples');
    const c = await client.completions.create({ ...params, seed: 99 });
    assert.notDeepEqual(c.choices.map((x) => x.text), a.choices.map((x) => x.text));
  });

  test('stop strings end the text before the stop string (JSON and SSE)', async () => {
    const res = await client.completions.create({ ...GREEDY, stop: ['Lily', 'zebra'] });
    assert.equal(res.choices[0].text, ', there was a little girl named ');
    assert.equal(res.choices[0].finish_reason, 'stop');
    const s = await streamText({ stop: 'park' });
    assert.equal(s.text[0], ', there was a little girl named Lily. She loved to play outside in the ');
    assert.deepEqual(s.finish, ['stop']);
  });

  test('logprobs: tokens, token_logprobs, top_logprobs, text_offset', async () => {
    const res = await client.completions.create({ ...GREEDY, max_tokens: 12, logprobs: 3 });
    const choice = res.choices[0];
    const lp = choice.logprobs!;
    assert.equal(choice.text, GOLDEN.slice(0, choice.text.length));
    assert.equal(lp.tokens!.length, 12);
    assert.equal(lp.tokens!.join(''), choice.text);
    let offset = 0;
    lp.tokens!.forEach((tok, i) => {
      assert.equal(lp.text_offset![i], offset);
      offset += tok.length;
      const top = lp.top_logprobs![i];
      assert.equal(Object.keys(top).length, 3);
      const best = Math.max(...Object.values(top));
      assert.ok(Math.abs(best - lp.token_logprobs![i]) < 1e-9, 'greedy token is the most likely');
      assert.equal(top[tok], lp.token_logprobs![i]);
      assert.ok(lp.token_logprobs![i] < 0);
    });
  });

  test('logprobs 0: top_logprobs holds the chosen token alone (OpenAI: up to logprobs + 1 entries)', async () => {
    const res = await client.completions.create({ ...GREEDY, max_tokens: 5, logprobs: 0 });
    const lp = res.choices[0].logprobs!;
    lp.tokens!.forEach((tok, i) => assert.deepEqual(lp.top_logprobs![i], { [tok]: lp.token_logprobs![i] }));
  });

  test('echo with logprobs and max_tokens 0 scores the prompt', async () => {
    const res = await client.completions.create({ model: DENSE, prompt: 'Once upon a time', max_tokens: 0, echo: true, logprobs: 1 });
    const c = res.choices[0];
    assert.equal(c.text, 'Once upon a time');
    assert.deepEqual(c.logprobs!.tokens, ['', 'Once', ' upon', ' a', ' time']);
    assert.deepEqual(c.logprobs!.text_offset, [0, 0, 4, 9, 11]);
    assert.equal(c.logprobs!.token_logprobs![0], null);
    assert.ok(c.logprobs!.token_logprobs!.slice(1).every((x) => typeof x === 'number' && x < 0));
    assert.equal(res.usage?.completion_tokens, 0);
    const withGen = await client.completions.create({ ...GREEDY, echo: true, max_tokens: 10 });
    assert.equal(withGen.choices[0].text, 'Once upon a time' + GOLDEN.slice(0, withGen.choices[0].text.length - 16));
  });

  test('streamed echo + logprobs + n: the first chunk of each choice carries the prompt', async () => {
    const stream = await client.completions.create({ ...GREEDY, max_tokens: 3, echo: true, logprobs: 1, n: 2, stream: true });
    const firsts = new Map<number, OpenAI.CompletionChoice>();
    const text = ['', ''];
    for await (const chunk of stream) {
      for (const c of chunk.choices) {
        if (!firsts.has(c.index)) firsts.set(c.index, c);
        text[c.index] += c.text;
        assert.equal(c.logprobs!.tokens!.length, c.logprobs!.token_logprobs!.length);
      }
    }
    assert.deepEqual([...firsts.keys()].sort(), [0, 1]);
    for (const [, c] of firsts) {
      assert.ok(c.text.startsWith('Once upon a time'));
      assert.deepEqual(c.logprobs!.tokens!.slice(0, 5), ['', 'Once', ' upon', ' a', ' time']);
    }
    assert.deepEqual(text, ['Once upon a time' + GOLDEN.slice(0, text[0].length - 16), 'Once upon a time' + GOLDEN.slice(0, text[1].length - 16)]);
    const ws = await openStream(t.url);
    const r = await ws.complete('e', { ...GREEDY, max_tokens: 2, echo: true });
    assert.equal(ws.messages.find((m) => m.id === 'e' && m.type === 'echo')?.text, 'Once upon a time');
    assert.equal(r.text, GOLDEN.slice(0, r.text.length));
    ws.close();
  });

  test('penalties, top_k, top_p, user and the vLLM extras are accepted', async () => {
    const res = await client.completions.create({
      model: DENSE,
      prompt: 'Once upon a time',
      max_tokens: 20,
      temperature: 0.8,
      top_p: 0.9,
      presence_penalty: 0.5,
      frequency_penalty: 0.5,
      seed: 3,
      user: 'someone',
      // @ts-expect-error vLLM extras
      top_k: 20,
      ignore_eos: true,
      min_tokens: 20,
    });
    assert.equal(res.usage?.completion_tokens, 20);
    assert.equal(res.choices[0].finish_reason, 'length');
  });

  test('each completion is logged once with its timings', async () => {
    const res = await client.completions.create({ ...GREEDY, max_tokens: 5 });
    const line = t.logs.find((l) => l.request_id === res.id);
    assert.ok(line, 'a log line for the request');
    assert.equal(t.logs.filter((l) => l.request_id === res.id).length, 1);
    assert.equal(line.status, 200);
    assert.equal(line.completion_tokens, 5);
    for (const k of ['queue_ms', 'ttft_ms', 'tpot_ms', 'e2e_ms']) assert.equal(typeof line[k], 'number', k);
    assert.ok((line.ttft_ms as number) <= (line.e2e_ms as number));
  });
});

describe('WebSocket /v1/stream', () => {
  test('golden text alone and as 16 concurrent requests on one socket', async () => {
    const ws = await openStream(t.url);
    const alone = await ws.complete('a', GREEDY);
    assert.equal(alone.text, GOLDEN);
    assert.equal(alone.done.type, 'done');
    assert.equal(alone.done.finish_reason, 'length');
    assert.deepEqual(alone.done.usage, { prompt_tokens: 5, completion_tokens: 60, total_tokens: 65 });
    assert.equal(alone.tokens.length, 60);
    assert.ok(alone.tokens.every((m) => Number.isInteger(m.token_id) && m.logprob <= 0 && m.index === 0));
    assert.equal(alone.tokens[0].token_id, 432, 'first greedy token (argmax of the prompt logits)');
    const many = await Promise.all(Array.from({ length: 16 }, (_, i) => ws.complete(`c${i}`, GREEDY)));
    for (const r of many) assert.equal(r.text, GOLDEN);
    ws.close();
  });

  test('cancel stops a request and frees its slot; errors name the request', async () => {
    const ws = await openStream(t.url);
    ws.send({ type: 'completion', id: 'long', ...GREEDY, max_tokens: 400, ignore_eos: true });
    await ws.next((m) => m.id === 'long' && m.type === 'token');
    ws.send({ type: 'cancel', id: 'long' });
    const done = await ws.next((m) => m.id === 'long' && m.type === 'done');
    assert.equal(done.finish_reason, 'cancelled');
    assert.ok(done.usage.completion_tokens < 400);
    await waitFor(async () => sample(await scrape(t.url), 'sliceserve_num_requests_running', { model: DENSE }) === 0, 10_000, 'running gauge 0');
    const bad = await ws.complete('bad', { ...GREEDY, model: 'nope' });
    assert.equal(bad.done.type, 'error');
    assert.equal(bad.done.error.code, 'model_not_found');
    assert.equal(bad.done.error.status, 404);
    ws.ws.send('{not json');
    const malformed = await ws.next((m) => m.type === 'error' && m.id === null);
    assert.equal(malformed.error.code, 'invalid_json');
    ws.send({ type: 'embedding', id: 'q9' });
    const unknownType = await ws.next((m) => m.type === 'error' && m.id === 'q9');
    assert.equal(unknownType.error.param, 'type');
    assert.equal(unknownType.error.status, 400);
    ws.ws.send('5');
    const notObject = await ws.next((m) => m.type === 'error' && m.id === null && m.error.message.startsWith('A WebSocket'));
    assert.equal(notObject.error.message, 'A WebSocket message must be a JSON object with at least "type" and "id"; got 5.');
    ws.send({ type: 'cancel', id: 'unknown' });
    assert.equal((await ws.next((m) => m.id === 'unknown')).error.code, 'unknown_id');
    const ok = await ws.complete('after', { ...GREEDY, max_tokens: 4 });
    assert.equal(ok.text, GOLDEN.slice(0, ok.text.length));
    ws.close();
  });

  test('closing the socket cancels its requests', async () => {
    const ws = await openStream(t.url);
    ws.send({ type: 'completion', id: 'x', ...GREEDY, max_tokens: 400, ignore_eos: true, n: 2 });
    await ws.next((m) => m.id === 'x' && m.type === 'token');
    ws.close();
    await waitFor(async () => sample(await scrape(t.url), 'sliceserve_num_requests_running', { model: DENSE }) === 0, 10_000, 'running gauge 0');
    const aborted = sample(await scrape(t.url), 'sliceserve_request_aborted_total', { model: DENSE });
    assert.ok((aborted ?? 0) >= 2, `aborted counter ${aborted}`);
  });

  test('the socket requires the API key', async () => {
    await assert.rejects(openStream(t.url, {}), /401/);
    await assert.rejects(openStream(t.url, { authorization: 'Bearer wrong' }), /401/);
    const viaQuery = new WebSocket(`${t.url.replace('http', 'ws')}/v1/stream?api_key=${API_KEY}`);
    await new Promise((resolve, reject) => {
      viaQuery.once('open', resolve);
      viaQuery.once('error', reject);
    });
    viaQuery.close();
    const res = await get(`${t.url}/v1/stream`);
    assert.equal(res.status, 404, 'plain GET is not the WebSocket');
  });
});
