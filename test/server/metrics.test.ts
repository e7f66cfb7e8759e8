/**
 * /metrics after traffic: `promtool check metrics` (Debian's prometheus package) accepts the
 * scrape; /metrics/vllm has vLLM's series with vLLM's types and `model_name` label, agreeing
 * with ours; `metricsPublic` leaves both open while the API needs the key.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import OpenAI from 'openai';
import { API_KEY, DENSE, type TestServer, get, openStream, sample, scrape, startTestServer, waitFor } from './helpers.js';

let t: TestServer;
let client: OpenAI;
let text: string;
let vllmText: string;

/** Why promtool cannot run here, or null when it can. */
function promtoolMissing(): string | null {
  const r = spawnSync('promtool', ['--version'], { encoding: 'utf8' });
  if (r.error) return `promtool is not installed (apt-get install prometheus; .ci/run installs it when it runs as root): ${(r.error as NodeJS.ErrnoException).code}`;
  return null;
}

/** `# TYPE name type` lines of a scrape. */
function types(body: string): Map<string, string> {
  return new Map([...body.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((m) => [m[1], m[2]]));
}

before(async () => {
  t = await startTestServer({ apiKey: API_KEY, metricsPublic: true, defaultMetrics: true });
  client = new OpenAI({ baseURL: `${t.url}/v1`, apiKey: API_KEY, maxRetries: 0 });
  // Traffic: a completion with n = 2 (10 tokens each), a streamed chat (8 tokens), a cancelled WebSocket request.
  await client.completions.create({ model: DENSE, prompt: 'Once upon a time', max_tokens: 10, n: 2, seed: 1, ignore_eos: true } as OpenAI.CompletionCreateParamsNonStreaming);
  const stream = await client.chat.completions.create({ model: DENSE, messages: [{ role: 'user', content: 'Once upon a time' }], max_tokens: 8, temperature: 0, stream: true });
  for await (const _ of stream) void _;
  const ws = await openStream(t.url);
  ws.send({ type: 'completion', id: 'gone', model: DENSE, prompt: 'Once upon a time', max_tokens: 400, ignore_eos: true });
  await ws.next((m) => m.id === 'gone' && m.type === 'token');
  ws.send({ type: 'cancel', id: 'gone' });
  await ws.next((m) => m.id === 'gone' && m.type === 'done');
  ws.close();
  await waitFor(async () => sample(await scrape(t.url, {}), 'sliceserve_num_requests_running', { model: DENSE }) === 0, 10_000, 'running 0');
  const res = await get(`${t.url}/metrics`, {});
  assert.equal(res.status, 200);
  text = res.body as string;
  vllmText = (await get(`${t.url}/metrics/vllm`, {})).body as string;
});
after(async () => {
  await t.server.shutdown(1000);
});

describe('promtool', () => {
  const missing = promtoolMissing();
  test('promtool check metrics passes on a scrape after traffic', { skip: missing ?? false }, () => {
    const r = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
    assert.equal(r.status, 0, `promtool check metrics: ${r.stdout}${r.stderr}`);
    assert.equal(`${r.stdout}${r.stderr}`.trim(), '', 'no warnings');
  });

  test("on vLLM's series promtool finds nothing but the ':' in vLLM's names (why they have a path of their own)", { skip: missing ?? false }, () => {
    const r = spawnSync('promtool', ['check', 'metrics'], { input: vllmText, encoding: 'utf8' });
    const findings = `${r.stdout}${r.stderr}`.trim().split('\n');
    assert.ok(findings.length >= 17, findings.join('\n'));
    for (const line of findings) assert.match(line, /^vllm:\w+ metric names should not contain ':'$/);
  });
});

describe('vLLM-compatible series', () => {
  test("vLLM's names with vLLM's types, on /metrics/vllm only", () => {
    assert.ok(!/^vllm:/m.test(text), '/metrics holds no vllm: series');
    assert.ok(!/^sliceserve_/m.test(vllmText), '/metrics/vllm holds no sliceserve_ series');
    for (const name of types(text).keys()) assert.ok(!/^nodejs_active_\w+_total$/.test(name), `${name}: a gauge named like a counter`);
    assert.equal(types(text).get('nodejs_active_handles'), 'gauge', 'the per-type gauge stays');
    const t = types(vllmText);
    const expected: Record<string, string> = {
      'vllm:num_requests_running': 'gauge',
      'vllm:num_requests_waiting': 'gauge',
      'vllm:kv_cache_usage_perc': 'gauge',
      'vllm:prompt_tokens_total': 'counter',
      'vllm:generation_tokens_total': 'counter',
      'vllm:request_success_total': 'counter',
      'vllm:time_to_first_token_seconds': 'histogram',
      'vllm:inter_token_latency_seconds': 'histogram',
      'vllm:time_per_output_token_seconds': 'histogram',
      'vllm:request_time_per_output_token_seconds': 'histogram',
      'vllm:e2e_request_latency_seconds': 'histogram',
      'vllm:request_queue_time_seconds': 'histogram',
      'vllm:request_inference_time_seconds': 'histogram',
      'vllm:request_prefill_time_seconds': 'histogram',
      'vllm:request_decode_time_seconds': 'histogram',
      'vllm:request_prompt_tokens': 'histogram',
      'vllm:request_generation_tokens': 'histogram',
    };
    for (const [name, type] of Object.entries(expected)) assert.equal(t.get(name), type, name);
  });

  test('every vllm: sample carries model_name and engine; values agree with the sliceserve_ series', async () => {
    const m = await scrape(t.url, {});
    const vm = await scrape(t.url, {}, '/metrics/vllm');
    m.samples.push(...vm.samples);
    const ours = vm.samples;
    assert.ok(ours.length > 100);
    for (const s of ours) assert.deepEqual([s.labels.model_name, s.labels.engine], [DENSE, '0'], s.name);
    const v = (name: string, labels: Record<string, string> = {}) => sample(m, name, { model_name: DENSE, ...labels });
    const s = (name: string, labels: Record<string, string> = {}) => sample(m, name, { model: DENSE, ...labels });
    assert.equal(v('vllm:prompt_tokens_total'), s('sliceserve_prompt_tokens_total'));
    assert.equal(v('vllm:prompt_tokens_total'), 5 + 5 + 5, 'three prompts of 5 tokens (the completion, the chat, the cancelled one)');
    assert.equal(v('vllm:generation_tokens_total'), s('sliceserve_generation_tokens_total'));
    assert.equal(v('vllm:request_success_total', { finished_reason: 'length' }), 3, 'two completion choices and the chat choice');
    assert.equal(v('vllm:request_success_total', { finished_reason: 'abort' }), 1, 'the cancelled request');
    assert.equal(v('vllm:request_success_total', { finished_reason: 'stop' }), 0);
    for (const name of ['e2e_request_latency_seconds', 'time_to_first_token_seconds', 'request_queue_time_seconds', 'request_prefill_time_seconds', 'request_decode_time_seconds', 'request_inference_time_seconds', 'request_prompt_tokens', 'request_generation_tokens']) {
      assert.equal(v(`vllm:${name}_count`), 2, `${name}: one observation per finished request`);
    }
    assert.equal(v('vllm:request_generation_tokens_sum'), 10 + 10 + 8);
    assert.equal(v('vllm:request_time_per_output_token_seconds_count'), 2);
    // Inter-token latencies of the finished choices ((10 - 1) x 2 + (8 - 1)) and of the cancelled one (>= 0).
    const itl = v('vllm:inter_token_latency_seconds_count')!;
    assert.ok(itl >= 25, `ITL observations ${itl}`);
    assert.equal(v('vllm:time_per_output_token_seconds_count'), itl);
    assert.equal(v('vllm:inter_token_latency_seconds_bucket', { le: '+Inf' }), itl);
    assert.ok(v('vllm:e2e_request_latency_seconds_sum')! >= v('vllm:time_to_first_token_seconds_sum')!);
    assert.equal(v('vllm:num_requests_running'), 0);
    assert.equal(v('vllm:num_requests_waiting'), 0);
    assert.equal(v('vllm:kv_cache_usage_perc'), 0);
  });
});

describe('--metrics-include-vllm', () => {
  test("/metrics also carries vLLM's series (as vLLM serves them); promtool then flags only their ':'", async () => {
    const s = await startTestServer({ metricsIncludeVllm: true });
    try {
      await new OpenAI({ baseURL: `${s.url}/v1`, apiKey: 'unused', maxRetries: 0 }).completions.create({ model: DENSE, prompt: 'Once upon a time', max_tokens: 3 });
      const both = await scrape(s.url, {});
      const names = new Set(both.samples.map((x) => x.name));
      assert.ok(names.has('vllm:generation_tokens_total') && names.has('sliceserve_generation_tokens_total'));
      assert.equal(sample(both, 'vllm:generation_tokens_total', { model_name: DENSE }), sample(both, 'sliceserve_generation_tokens_total', { model: DENSE }));
      assert.equal(sample(both, 'vllm:generation_tokens_total', { model_name: DENSE }), 3);
      const alone = (await get(`${s.url}/metrics/vllm`, {})).body as string;
      assert.ok(((await get(`${s.url}/metrics`, {})).body as string).endsWith(alone), '/metrics/vllm is unchanged and appended');
      if (!promtoolMissing()) {
        const r = spawnSync('promtool', ['check', 'metrics'], { input: (await get(`${s.url}/metrics`, {})).body as string, encoding: 'utf8' });
        assert.equal(r.status, 3, 'promtool exits 3 on lint findings, as on a scrape of vLLM');
        for (const line of `${r.stdout}${r.stderr}`.trim().split('\n')) assert.match(line, /^vllm:\w+ metric names should not contain ':'$/);
      }
    } finally {
      await s.server.shutdown(1000);
    }
  });
});

describe('--metrics-public', () => {
  test('/metrics answers without the API key while the API still needs it', async () => {
    assert.equal((await get(`${t.url}/metrics`, {})).status, 200);
    assert.equal((await get(`${t.url}/metrics/vllm`, {})).status, 200);
    assert.equal((await get(`${t.url}/v1/models`, {})).status, 401);
    assert.equal((await get(`${t.url}/v1/models`)).status, 200);
  });

  test('without it, /metrics needs the key like every endpoint', async () => {
    const s = await startTestServer({ apiKey: API_KEY });
    try {
      assert.equal((await get(`${s.url}/metrics`, {})).status, 401);
      assert.equal((await get(`${s.url}/metrics/vllm`, {})).status, 401);
      assert.equal((await get(`${s.url}/metrics`)).status, 200);
    } finally {
      await s.server.shutdown(1000);
    }
  });
});
