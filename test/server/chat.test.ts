/**
 * /v1/chat/completions through the official `openai` client (JSON and SSE), chat logprobs, the
 * WebSocket `chat` message, vLLM's /tokenize and /detokenize, and the 400 of a model without a
 * chat template, against the real server. The bundled stories260K's chat template makes a
 * conversation one story (BOS + the messages' text), so a user message "Once upon a time" is
 * the golden prompt and the assistant's reply is the golden completion.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import OpenAI from 'openai';
import { API_KEY, DENSE, GOLDEN, MODEL_DIR, type TestServer, errorOf, openStream, post, startTestServer } from './helpers.js';

const PLAIN = 'stories-no-template';
let t: TestServer;
let client: OpenAI;
let plainDir: string;
const STORY = [{ role: 'user' as const, content: 'Once upon a time' }];

before(async () => {
  // The same model without its chat_template.jinja: a model with no chat template.
  plainDir = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'sliceserve-chat-')), PLAIN);
  fs.mkdirSync(plainDir);
  for (const f of ['stories260K.bin', 'tok512.bin']) fs.copyFileSync(path.join(MODEL_DIR, f), path.join(plainDir, f));
  t = await startTestServer({ apiKey: API_KEY, models: [MODEL_DIR, plainDir] });
  client = new OpenAI({ baseURL: `${t.url}/v1`, apiKey: API_KEY, maxRetries: 0 });
});
after(async () => {
  await t.server.shutdown(1000);
  fs.rmSync(path.dirname(plainDir), { recursive: true, force: true });
});

describe('chat.completions.create', () => {
  test('non-streaming: the assistant message is the golden completion', async () => {
    const res = await client.chat.completions.create({ model: DENSE, messages: STORY, max_tokens: 60, temperature: 0 });
    assert.equal(res.object, 'chat.completion');
    assert.match(res.id, /^chatcmpl-/);
    assert.equal(res.model, DENSE);
    assert.equal(res.choices.length, 1);
    assert.equal(res.choices[0].message.role, 'assistant');
    assert.equal(res.choices[0].message.content, GOLDEN);
    assert.equal(res.choices[0].finish_reason, 'length');
    assert.equal(res.choices[0].logprobs, null);
    // "<s>Once upon a time" encoded without adding BOS: the template's BOS + 4 tokens.
    assert.deepEqual(res.usage, { prompt_tokens: 5, completion_tokens: 60, total_tokens: 65 });
  });

  test('streaming: role first, content deltas, finish_reason last, usage, [DONE]', async () => {
    const stream = await client.chat.completions.create({ model: DENSE, messages: STORY, max_completion_tokens: 60, temperature: 0, stream: true, stream_options: { include_usage: true } });
    const chunks: OpenAI.ChatCompletionChunk[] = [];
    for await (const chunk of stream) chunks.push(chunk);
    assert.ok(chunks.every((c) => c.object === 'chat.completion.chunk' && c.id === chunks[0].id));
    assert.deepEqual(chunks[0].choices[0].delta, { role: 'assistant', content: '' });
    const withChoices = chunks.filter((c) => c.choices.length > 0);
    assert.ok(withChoices.slice(1).every((c) => c.choices[0].delta.role === undefined), 'the role comes once');
    assert.equal(withChoices.map((c) => c.choices[0].delta.content ?? '').join(''), GOLDEN);
    assert.deepEqual(withChoices.map((c) => c.choices[0].finish_reason).filter(Boolean), ['length']);
    assert.equal(withChoices.at(-1)!.choices[0].finish_reason, 'length', 'finish_reason comes last');
    const last = chunks.at(-1)!;
    assert.deepEqual(last.choices, []);
    assert.deepEqual(last.usage, { prompt_tokens: 5, completion_tokens: 60, total_tokens: 65 });
    assert.ok(chunks.slice(0, -1).every((c) => c.usage === null), 'usage null on the other chunks');
    const raw = await post(`${t.url}/v1/chat/completions`, { model: DENSE, messages: STORY, max_tokens: 2, stream: true });
    assert.match(raw.headers.get('content-type') ?? '', /text\/event-stream/);
    assert.equal(String(raw.body).split('\n\n').filter(Boolean).at(-1), 'data: [DONE]');
  });

  test('without max_tokens the completion may fill the context: the story ends at BOS (342 tokens) or, with ignore_eos, at the context', async () => {
    const res = await client.chat.completions.create({ model: DENSE, messages: STORY, temperature: 0 });
    assert.equal(res.choices[0].finish_reason, 'stop');
    assert.equal(res.usage?.completion_tokens, 342);
    assert.ok(res.choices[0].message.content!.startsWith(GOLDEN));
    const full = await client.chat.completions.create({ model: DENSE, messages: STORY, temperature: 0, ignore_eos: true } as OpenAI.ChatCompletionCreateParamsNonStreaming);
    assert.deepEqual([full.choices[0].finish_reason, full.usage?.completion_tokens], ['length', 512 - 5]);
  });

  test('logprobs in the chat shape: token, logprob, bytes, top_logprobs most likely first', async () => {
    const res = await client.chat.completions.create({ model: DENSE, messages: STORY, max_tokens: 12, temperature: 0, logprobs: true, top_logprobs: 3 });
    const choice = res.choices[0];
    const content = choice.logprobs!.content!;
    assert.equal(content.length, 12);
    assert.equal(content.map((e) => e.token).join(''), choice.message.content);
    for (const e of content) {
      assert.deepEqual(e.bytes, [...Buffer.from(e.token, 'utf8')]);
      assert.ok(e.logprob < 0);
      assert.equal(e.top_logprobs.length, 3);
      assert.ok(e.top_logprobs[0].logprob >= e.top_logprobs[1].logprob && e.top_logprobs[1].logprob >= e.top_logprobs[2].logprob);
      assert.deepEqual([e.top_logprobs[0].token, e.top_logprobs[0].logprob], [e.token, e.logprob], 'greedy: the chosen token is the most likely');
    }
    const none = await client.chat.completions.create({ model: DENSE, messages: STORY, max_tokens: 3, temperature: 0, logprobs: true });
    assert.ok(none.choices[0].logprobs!.content!.every((e) => e.top_logprobs.length === 0), 'top_logprobs defaults to 0');
    const stream = await client.chat.completions.create({ model: DENSE, messages: STORY, max_tokens: 4, temperature: 0, logprobs: true, top_logprobs: 1, stream: true });
    const streamed: OpenAI.ChatCompletionTokenLogprob[] = [];
    for await (const c of stream) streamed.push(...(c.choices[0]?.logprobs?.content ?? []));
    assert.deepEqual(streamed.map((e) => e.token), content.slice(0, 4).map((e) => e.token));
  });

  test('n, seed, stop, penalties and the vLLM extras', async () => {
    const params = { model: DENSE, messages: STORY, max_tokens: 20, temperature: 1, n: 3, seed: 7, presence_penalty: 0.2, frequency_penalty: 0.2 };
    const a = await client.chat.completions.create(params);
    const b = await client.chat.completions.create(params);
    assert.deepEqual(a.choices.map((c) => c.index), [0, 1, 2]);
    assert.deepEqual(a.choices.map((c) => c.message.content), b.choices.map((c) => c.message.content));
    assert.equal(new Set(a.choices.map((c) => c.message.content)).size, 3);
    const stopped = await client.chat.completions.create({ model: DENSE, messages: STORY, max_tokens: 60, temperature: 0, stop: ['Lily'] });
    assert.equal(stopped.choices[0].message.content, ', there was a little girl named ');
    assert.equal(stopped.choices[0].finish_reason, 'stop');
    const extras = await client.chat.completions.create({ model: DENSE, messages: STORY, max_tokens: 8, min_tokens: 8, top_k: 5, ignore_eos: true } as OpenAI.ChatCompletionCreateParamsNonStreaming);
    assert.equal(extras.usage?.completion_tokens, 8);
  });

  test('multi-turn and text parts render through the template', async () => {
    // The story template concatenates the messages: "Once upon a time" + ", there was a" = the golden text so far.
    const res = await client.chat.completions.create({
      model: DENSE,
      messages: [
        { role: 'user', content: [{ type: 'text', text: 'Once upon a time' }] },
        { role: 'assistant', content: ', there was a' },
        { role: 'user', content: '' },
      ],
      max_tokens: 5,
      temperature: 0,
    });
    assert.equal(', there was a' + res.choices[0].message.content, GOLDEN.slice(0, (', there was a' + res.choices[0].message.content).length));
  });

  test('models.list lists every served model', async () => {
    const ids = [];
    for await (const m of client.models.list()) ids.push(m.id);
    assert.deepEqual(ids.sort(), [DENSE, PLAIN].sort());
  });
});

describe('chat errors', () => {
  test('a model without a chat template: 400 naming --chat-template; completions still work', async () => {
    const res = await post(`${t.url}/v1/chat/completions`, { model: PLAIN, messages: STORY });
    assert.equal(res.status, 400);
    const e = errorOf(res.body);
    assert.equal(e.code, 'chat_template_missing');
    assert.match(e.message, /--chat-template/);
    assert.equal((await client.completions.create({ model: PLAIN, prompt: 'Once upon a time', max_tokens: 60, temperature: 0 })).choices[0].text, GOLDEN);
  });

  test('bad fields are 400s naming them', async () => {
    const cases: [Record<string, unknown>, string][] = [
      [{ messages: [] }, 'messages'],
      [{ messages: 'hi' }, 'messages'],
      [{ messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'x' } }] }] }, 'messages'],
      [{ messages: [{ role: 'user' }] }, 'messages'],
      [{ messages: STORY, top_logprobs: 2 }, 'top_logprobs'],
      [{ messages: STORY, stream_options: { include_usage: true } }, 'stream_options'],
      [{ messages: STORY, tools: [{ type: 'function', function: { name: 'f' } }] }, 'tools'],
      [{ messages: STORY, response_format: { type: 'json_object' } }, 'response_format'],
      [{ messages: STORY, max_completion_tokens: 0 }, 'max_completion_tokens'],
      [{ messages: STORY, add_generation_prompt: true, continue_final_message: true }, 'continue_final_message'],
      [{ messages: STORY, continue_final_message: true }, 'continue_final_message'],
      [{ messages: STORY, max_tokens: 600 }, 'max_tokens'],
    ];
    for (const [fields, param] of cases) {
      const res = await post(`${t.url}/v1/chat/completions`, { model: DENSE, ...fields });
      assert.equal(res.status, 400, JSON.stringify(fields));
      assert.equal(errorOf(res.body).param, param, JSON.stringify(res.body));
    }
    const unknown = await post(`${t.url}/v1/chat/completions`, { model: 'nope', messages: STORY });
    assert.equal(unknown.status, 404);
    const image = await post(`${t.url}/v1/chat/completions`, { model: DENSE, messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'x' } }] }] });
    assert.match(errorOf(image.body).message, /only text parts .* got a "image_url" part/);
  });
});

describe('WebSocket chat messages', () => {
  test('{"type": "chat"} streams the same tokens as /v1/chat/completions', async () => {
    const ws = await openStream(t.url);
    const r = await ws.complete('c1', { type: 'chat', model: DENSE, messages: STORY, max_tokens: 60, temperature: 0 });
    assert.equal(r.done.type, 'done');
    assert.equal(r.text, GOLDEN);
    assert.deepEqual(r.done.usage, { prompt_tokens: 5, completion_tokens: 60, total_tokens: 65 });
    const bad = await ws.complete('c2', { type: 'chat', model: PLAIN, messages: STORY });
    assert.equal(bad.done.type, 'error');
    assert.equal(bad.done.error.code, 'chat_template_missing');
    ws.close();
  });
});

describe('POST /tokenize and /detokenize (vLLM)', () => {
  test('a prompt: BOS added by default; count, max_model_len, token_strs on request', async () => {
    const res = await post(`${t.url}/tokenize`, { model: DENSE, prompt: 'Once upon a time', return_token_strs: true });
    assert.equal(res.status, 200);
    assert.deepEqual(res.body, { count: 5, max_model_len: 512, tokens: [1, 403, 407, 261, 378], token_strs: ['<s>', ' Once', ' upon', ' a', ' time'] });
    const bare = await post(`${t.url}/tokenize`, { model: DENSE, prompt: 'Once upon a time', add_special_tokens: false });
    assert.deepEqual([bare.body.tokens, bare.body.token_strs], [[403, 407, 261, 378], null]);
  });

  test('messages: the chat prompt as the template renders it, no special tokens added', async () => {
    const res = await post(`${t.url}/tokenize`, { model: DENSE, messages: STORY });
    assert.deepEqual(res.body.tokens, [1, 403, 407, 261, 378], 'the template supplies BOS once');
    const noTemplate = await post(`${t.url}/tokenize`, { model: PLAIN, messages: STORY });
    assert.equal(noTemplate.status, 400);
    assert.match(errorOf(noTemplate.body).message, /--chat-template/);
  });

  test('detokenize keeps special tokens; bad ids are a 400; model is required when the served models differ', async () => {
    const res = await post(`${t.url}/detokenize`, { model: DENSE, tokens: [1, 403, 407, 261, 378] });
    assert.deepEqual(res.body, { prompt: '<s> Once upon a time' });
    const bad = await post(`${t.url}/detokenize`, { model: DENSE, tokens: [1, 512] });
    assert.equal(bad.status, 400);
    assert.match(errorOf(bad.body).message, /512 is outside the vocabulary/);
    const ambiguous = await post(`${t.url}/tokenize`, { prompt: 'x' });
    assert.equal(ambiguous.status, 400);
    assert.equal(errorOf(ambiguous.body).param, 'model');
    assert.equal((await post(`${t.url}/tokenize`, { model: DENSE }, { authorization: `Bearer ${API_KEY}` })).status, 400);
    assert.equal((await post(`${t.url}/tokenize`, { model: DENSE, prompt: 'x' }, {})).status, 401, 'the API key is required');
  });
});

describe('--chat-template', () => {
  test('a template file gives a model without one a chat format, and overrides a model that has one', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sliceserve-tpl-'));
    const file = path.join(dir, 'chat.jinja');
    fs.writeFileSync(file, "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}{{ m['content'] }}{% endif %}{% endfor %}");
    const s = await startTestServer({ models: [MODEL_DIR, plainDir], chatTemplateFile: file });
    try {
      const c = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: 'x', maxRetries: 0 });
      for (const model of [DENSE, PLAIN]) {
        // The override drops system messages: the prompt stays the golden one.
        const res = await c.chat.completions.create({ model, messages: [{ role: 'system', content: 'Ignored.' }, ...STORY], max_tokens: 60, temperature: 0 });
        assert.equal(res.choices[0].message.content, GOLDEN, model);
      }
    } finally {
      await s.server.shutdown(1000);
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
