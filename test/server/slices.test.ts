/**
 * Dense and sliced models side by side: /v1/models cards, slicing on demand (jobs, progress,
 * failure keeps serving), the slicer cache on restart, /metrics parsed as Prometheus text with
 * series for both models, and a client disconnecting mid-stream freeing its slot.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import OpenAI from 'openai';
import pino from 'pino';
import { startServer } from '../../server/index.js';
import { checkStartupSparsities, maxUsableSparsity, widthOrNull } from '../../server/slices.js';
import { loadModel } from '../../models/load.js';
import { buildTokenStream, cutWindows } from '../../models/tokenizer/index.js';
import { DecoderSession } from '../../runtime/decoder-session.js';
import { perplexity } from '../../runtime/perplexity.js';
import { CALIBRATION, DENSE, EVAL, GOLDEN, MODEL_DIR, type TestServer, errorOf, get, post, sample, scrape, startTestServer, waitFor } from './helpers.js';

const SLICED = `${DENSE}-sliced-0.25`;
const CAL_WINDOWS = 4;
/** Held-out windows (of 256 tokens) on which each slice's and the dense model's perplexity are recorded. */
const HELD_OUT_WINDOWS = 4;
let t: TestServer;
let cacheDir: string;
let client: OpenAI;

before(async () => {
  cacheDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sliceserve-cache-'));
  t = await startTestServer({ sparsities: [0.25], calWindows: CAL_WINDOWS, cacheDir, defaultMetrics: true, heldOutFile: EVAL, heldOutWindows: HELD_OUT_WINDOWS });
  client = new OpenAI({ baseURL: `${t.url}/v1`, apiKey: 'unused', maxRetries: 0 });
});
after(async () => {
  await t.server.shutdown(1000);
  fs.rmSync(cacheDir, { recursive: true, force: true });
});

/** Polls a slicing job until it leaves queued/running. */
async function settle(url: string, id: string): Promise<any> {
  let job: any;
  const progress: number[] = [];
  await waitFor(async () => {
    job = (await get(`${url}/v1/slices/${id}`, {})).body;
    progress.push(job.progress);
    return job.status === 'succeeded' || job.status === 'failed';
  }, 60_000, `slicing job ${id}`);
  for (let i = 1; i < progress.length; i++) assert.ok(progress[i] >= progress[i - 1], 'progress never goes back');
  return job;
}

test('/v1/models lists the dense model and its sliced variant', async () => {
  const res = await get(`${t.url}/v1/models`, {});
  assert.equal(res.body.object, 'list');
  const byId = new Map<string, any>(res.body.data.map((m: any) => [m.id, m]));
  const dense = byId.get(DENSE);
  assert.ok(dense);
  assert.equal(dense.object, 'model');
  assert.equal('parent' in dense, false);
  assert.equal(dense.root, DENSE);
  assert.equal(dense.max_model_len, 512);
  const sliced = byId.get(SLICED);
  assert.ok(sliced, `ids: ${[...byId.keys()]}`);
  assert.equal(sliced.parent, DENSE);
  assert.equal(sliced.root, DENSE);
  assert.equal(sliced.max_model_len, 512);
  // d' = floor(0.75 * 64 / 8) * 8 = 48; parameters: 260032 - 64*16 (embedding/head) - ...
  const { perplexity: slicePpl, dense_perplexity: densePpl } = sliced.slicing;
  assert.deepEqual(sliced.slicing, {
    sparsity: 0.25,
    hidden_size: 48,
    original_hidden_size: 64,
    parameters: sliced.slicing.parameters,
    perplexity: slicePpl,
    dense_perplexity: densePpl,
    held_out: { file: 'tinystories-valid-sample.txt', windows: HELD_OUT_WINDOWS, seq_len: 256, tokens: HELD_OUT_WINDOWS * 255 },
  });
  assert.ok(sliced.slicing.parameters < 260032 && sliced.slicing.parameters > 200000, `parameters ${sliced.slicing.parameters}`);
  // The quality cost: the dense figure is the perplexity of the first windows of the held-out
  // text (as `eval --windows 4` computes it), and slicing costs perplexity.
  const model = loadModel(MODEL_DIR);
  const windows = cutWindows(Array.from(buildTokenStream(fs.readFileSync(EVAL), model.tokenizer).tokens), 256, HELD_OUT_WINDOWS);
  const session = await DecoderSession.create(model, { logits: 'all', threads: 1 });
  const expected = (await perplexity(session, windows)).perplexity;
  await session.release();
  assert.ok(Math.abs(densePpl / expected - 1) < 1e-5, `dense ${densePpl} vs ${expected}`);
  assert.ok(slicePpl > densePpl * 1.2, `sliced ${slicePpl} vs dense ${densePpl}`);
  const jobs = (await get(`${t.url}/v1/slices`, {})).body.data;
  assert.equal(jobs.length, 1);
  assert.equal(jobs[0].status, 'succeeded');
  assert.equal(jobs[0].model, SLICED);
  assert.equal(jobs[0].progress, 1);
  assert.deepEqual(jobs[0].quality, { perplexity: slicePpl, dense_perplexity: densePpl, ...sliced.slicing.held_out }, '/v1/slices shows both');
  assert.deepEqual((await get(`${t.url}/v1/models/${DENSE}`, {})).body.slicing, undefined, 'a dense card has no slicing');
});

test('the sliced model serves completions; /metrics shows series for both models', async () => {
  const [dense, sliced] = await Promise.all([
    client.completions.create({ model: DENSE, prompt: 'Once upon a time', max_tokens: 60, temperature: 0 }),
    client.completions.create({ model: SLICED, prompt: 'Once upon a time', max_tokens: 20, temperature: 0 }),
  ]);
  assert.equal(dense.choices[0].text, GOLDEN);
  assert.equal(sliced.model, SLICED);
  assert.equal(sliced.usage?.completion_tokens, 20);
  assert.ok(sliced.choices[0].text.length > 0);
  const m = await scrape(t.url);
  for (const model of [DENSE, SLICED]) {
    for (const name of [
      'sliceserve_time_to_first_token_seconds_count',
      'sliceserve_time_per_output_token_seconds_count',
      'sliceserve_e2e_request_latency_seconds_count',
      'sliceserve_request_queue_time_seconds_count',
    ]) {
      assert.ok((sample(m, name, { model }) ?? 0) >= 1, `${name}{model="${model}"}`);
    }
    assert.ok((sample(m, 'sliceserve_generation_tokens_total', { model }) ?? 0) >= 20);
    assert.equal(sample(m, 'sliceserve_prompt_tokens_total', { model }), 5);
    assert.equal(sample(m, 'sliceserve_request_success_total', { model, finished_reason: 'length' }), 1);
    assert.equal(sample(m, 'sliceserve_num_requests_running', { model }), 0);
    assert.equal(sample(m, 'sliceserve_num_requests_waiting', { model }), 0);
    assert.equal(sample(m, 'sliceserve_kv_cache_usage_ratio', { model }), 0);
    assert.ok((sample(m, 'sliceserve_batch_size_count', { model, phase: 'decode' }) ?? 0) >= 19);
  }
  assert.equal(sample(m, 'sliceserve_slicing_jobs_total', { model: SLICED, status: 'succeeded' }), 1);
  assert.equal(sample(m, 'sliceserve_slicing_job_progress_ratio', { model: SLICED }), 1);
  // Every sliceserve_ series carries a model label; process metrics are there too.
  const ours = m.samples.filter((s) => s.name.startsWith('sliceserve_'));
  assert.ok(ours.length > 50);
  for (const s of ours) assert.ok(s.labels.model, `${s.name} without a model label`);
  assert.ok(m.families.has('process_cpu_user_seconds_total'));
  assert.equal(m.families.get('sliceserve_time_to_first_token_seconds')?.type, 'HISTOGRAM');
  assert.equal(m.families.get('sliceserve_num_requests_running')?.type, 'GAUGE');
});

test('a client that disconnects mid-stream frees its slot', async () => {
  const ac = new AbortController();
  const res = await fetch(`${t.url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: DENSE, prompt: 'Once upon a time', max_tokens: 450, ignore_eos: true, stream: true }),
    signal: ac.signal,
  });
  const reader = res.body!.getReader();
  await reader.read();
  await waitFor(async () => sample(await scrape(t.url), 'sliceserve_num_requests_running', { model: DENSE }) === 1, 10_000, 'running 1');
  ac.abort();
  await waitFor(async () => sample(await scrape(t.url), 'sliceserve_num_requests_running', { model: DENSE }) === 0, 10_000, 'running back to 0');
  const m = await scrape(t.url);
  assert.equal(sample(m, 'sliceserve_request_aborted_total', { model: DENSE }), 1);
  assert.equal(sample(m, 'sliceserve_kv_cache_usage_ratio', { model: DENSE }), 0);
});

test('slicing on demand: 202, progress, then the model is served; the dense model serves meanwhile', async () => {
  const res = await post(`${t.url}/v1/slices`, { model: DENSE, sparsity: 0.5, cal_windows: CAL_WINDOWS }, {});
  assert.equal(res.status, 202);
  assert.equal(res.body.model, `${DENSE}-sliced-0.5`);
  assert.equal(res.body.parent, DENSE);
  assert.match(res.body.id, /^slice-/);
  assert.ok(['queued', 'running'].includes(res.body.status));
  const again = await post(`${t.url}/v1/slices`, { model: DENSE, sparsity: 0.5 }, {});
  assert.equal(again.status, 200, 'the same pending job');
  assert.equal(again.body.id, res.body.id);
  // 0.45 rounds to the same width (d' = 32) while 0.5 is still being sliced: no second job.
  const pendingTwin = await post(`${t.url}/v1/slices`, { model: DENSE, sparsity: 0.45 }, {});
  assert.equal(pendingTwin.status, 409);
  assert.match(errorOf(pendingTwin.body).message, new RegExp(`^Job '${res.body.id}' is already slicing ${DENSE} to the same width d' = 32 as '${DENSE}-sliced-0\\.5'`));
  const during = await client.completions.create({ model: DENSE, prompt: 'Once upon a time', max_tokens: 60, temperature: 0 });
  assert.equal(during.choices[0].text, GOLDEN);
  const job = await settle(t.url, res.body.id);
  assert.equal(job.status, 'succeeded', JSON.stringify(job.error));
  assert.equal(job.progress, 1);
  const models = (await get(`${t.url}/v1/models`, {})).body.data.map((m: any) => m.id);
  assert.ok(models.includes(`${DENSE}-sliced-0.5`));
  const card = (await get(`${t.url}/v1/models/${DENSE}-sliced-0.5`, {})).body;
  assert.equal(card.slicing.hidden_size, 32);
  const quarter = (await get(`${t.url}/v1/models/${SLICED}`, {})).body.slicing;
  assert.equal(card.slicing.dense_perplexity, quarter.dense_perplexity, 'the same dense model on the same held-out windows');
  assert.ok(card.slicing.perplexity > quarter.perplexity, `0.5 (${card.slicing.perplexity}) costs more than 0.25 (${quarter.perplexity})`);
  assert.deepEqual(job.quality, { perplexity: card.slicing.perplexity, dense_perplexity: card.slicing.dense_perplexity, ...card.slicing.held_out });
  const out = await client.completions.create({ model: `${DENSE}-sliced-0.5`, prompt: 'Once upon a time', max_tokens: 8, temperature: 0 });
  assert.equal(out.usage?.completion_tokens, 8);
  const conflict = await post(`${t.url}/v1/slices`, { model: DENSE, sparsity: 0.5 }, {});
  assert.equal(conflict.status, 409);
  errorOf(conflict.body);
  // 0.45 rounds to the same width (d' = 32): the served 0.5 model is named instead of a twin.
  const twin = await post(`${t.url}/v1/slices`, { model: DENSE, sparsity: 0.45 }, {});
  assert.equal(twin.status, 409);
  assert.match(errorOf(twin.body).message, new RegExp(`${DENSE}-sliced-0\\.5.*d' = 32`));
});

test('a failed slicing job reports its error and the server keeps serving', async () => {
  // An empty calibration file makes every slicing job of this server fail.
  const empty = path.join(cacheDir, 'empty-calibration.txt');
  fs.writeFileSync(empty, '');
  const s = await startTestServer({ calibrationFile: empty });
  try {
    const res = await post(`${s.url}/v1/slices`, { model: DENSE, sparsity: 0.5 }, {});
    assert.equal(res.status, 202);
    const job = await settle(s.url, res.body.id);
    assert.equal(job.status, 'failed');
    assert.match(job.error.message, /calibration file .*empty-calibration\.txt has 0 tokens/);
    const ids = (await get(`${s.url}/v1/models`, {})).body.data.map((m: any) => m.id);
    assert.deepEqual(ids, [DENSE]);
    assert.equal(sample(await scrape(s.url), 'sliceserve_slicing_jobs_total', { model: `${DENSE}-sliced-0.5`, status: 'failed' }), 1);
    const ok = await post(`${s.url}/v1/completions`, { model: DENSE, prompt: 'Once upon a time', max_tokens: 60, temperature: 0 }, {});
    assert.equal(ok.body.choices[0].text, GOLDEN);
    assert.equal((await get(`${s.url}/health/ready`, {})).status, 200, 'a failed on-demand job leaves the server ready');
  } finally {
    await s.server.shutdown(1000);
  }
});

test('a sparsity that leaves d\' = 0 is a 400 up front, naming the largest usable sparsity', async () => {
  for (const sparsity of [0.99, 0.95, 0.876]) {
    const res = await post(`${t.url}/v1/slices`, { model: DENSE, sparsity }, {});
    assert.equal(res.status, 400, `sparsity ${sparsity}`);
    const e = errorOf(res.body);
    assert.equal(e.param, 'sparsity');
    assert.equal(
      e.message,
      `Sparsity ${sparsity} leaves no columns of ${DENSE}'s hidden size 64 (d' = floor((1 - ${sparsity}) * 64 / 8) * 8 = 0); the largest usable sparsity is 0.875.`,
    );
  }
  assert.equal(maxUsableSparsity(64), 0.875);
  assert.equal(widthOrNull(0.875, 64), 8, 'the largest usable sparsity is usable');
  assert.equal(maxUsableSparsity(4096), 0.998);
  assert.equal(maxUsableSparsity(8), null);
  const jobs = (await get(`${t.url}/v1/slices`, {})).body.data;
  assert.ok(!jobs.some((j: any) => j.sparsity >= 0.876), 'no job was queued');
});

/** A server that slices stories260K at 0.25 at startup, not awaited (`ready` is the caller's). */
function startSlicingServer(overrides: Partial<Parameters<typeof startServer>[0]>) {
  return startServer({
    models: [MODEL_DIR],
    sparsities: [0.25],
    calibrationFile: CALIBRATION,
    host: '127.0.0.1',
    port: 0,
    maxBatchSize: 4,
    maxQueue: 4,
    bodyLimit: '1mb',
    threads: 1,
    defaultMetrics: false,
    logger: pino({ level: 'silent' }),
    ...overrides,
  });
}

test('a startup variant that cannot be served rejects ready and leaves the server not ready', async () => {
  const empty = path.join(cacheDir, 'empty-calibration.txt');
  fs.writeFileSync(empty, '');
  const s = await startSlicingServer({ calibrationFile: empty, logger: pino({ level: 'silent' }) });
  try {
    await assert.rejects(s.ready, (err: Error) => {
      assert.match(err.message, new RegExp(`^startup model ${DENSE}-sliced-0\\.25 could not be served: the calibration file .* has 0 tokens`));
      return true;
    });
    const ready = await get(`${s.url}/health/ready`, {});
    assert.equal(ready.status, 503);
    assert.equal(ready.body.status, 'loading');
  } finally {
    await s.shutdown(1000);
  }
  assert.throws(() => checkStartupSparsities(DENSE, 64, [0.25, 0.99]), {
    message: `--sparsity 0.99 cannot slice ${DENSE}: sparsity 0.99 leaves no columns of ${DENSE}'s hidden size 64 (d' = floor((1 - 0.99) * 64 / 8) * 8 = 0); the largest usable sparsity is 0.875`,
  });
  assert.throws(() => checkStartupSparsities(DENSE, 64, [0.25, 0.5, 0.2]), {
    message: `--sparsity 0.25 and --sparsity 0.2 both slice ${DENSE} to d' = 48, the same model; keep one of them`,
  });
  assert.doesNotThrow(() => checkStartupSparsities(DENSE, 64, [0.25, 0.5, 0.875]));
});

test('bad slicing requests: 400, 404', async () => {
  const cases: [unknown, number, string | null][] = [
    [{ model: 'nope', sparsity: 0.3 }, 404, 'model'],
    [{ model: SLICED, sparsity: 0.3 }, 400, 'model'],
    [{ model: DENSE, sparsity: 1.5 }, 400, 'sparsity'],
    [{ model: DENSE, sparsity: 'half' }, 400, 'sparsity'],
    [{ model: DENSE }, 400, 'sparsity'],
  ];
  for (const [body, status, param] of cases) {
    const res = await post(`${t.url}/v1/slices`, body, {});
    assert.equal(res.status, status, JSON.stringify(body));
    assert.equal(errorOf(res.body).param, param);
  }
  assert.equal((await get(`${t.url}/v1/slices/slice-nope`, {})).status, 404);
});

test('a shutdown during startup slicing ends startup without declaring the server ready', async () => {
  const logs: { msg?: string }[] = [];
  const cacheDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sliceserve-stop-'));
  const s = await startSlicingServer({ cacheDir, logger: pino({ level: 'info' }, { write: (line: string) => void logs.push(JSON.parse(line)) }) });
  // The slice is computed (an empty cache dir), so the shutdown comes while it runs.
  await s.shutdown(0);
  await s.ready;
  const ready = await get(`${s.url}/health/ready`).catch(() => null);
  assert.equal(ready, null, 'the listener is closed');
  assert.ok(logs.some((l) => l.msg === 'stopped'));
  assert.ok(!logs.some((l) => l.msg === 'ready'), `logged: ${logs.map((l) => l.msg).join(', ')}`);
});

test('while startup slicing runs, its variants are a retryable 503 model_loading (Retry-After), not a 404', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sliceserve-loading-'));
  // Two variants with the full 128 calibration windows: seconds of slicing, the second one queued.
  const s = await startSlicingServer({ cacheDir: dir, sparsities: [0.25, 0.5] });
  try {
    const c = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: 'unused', maxRetries: 0 });
    for (const model of [SLICED, `${DENSE}-sliced-0.5`]) {
      const res = await post(`${s.url}/v1/completions`, { model, prompt: 'Once upon a time', max_tokens: 4 }, {});
      assert.equal(res.status, 503, `${model}: ${JSON.stringify(res.body)}`);
      const e = errorOf(res.body);
      assert.equal(e.code, 'model_loading');
      assert.equal(e.param, 'model');
      assert.match(e.message, new RegExp(`^The model '${model}' is still being prepared \\((slicing, \\d+% done|the server is starting and loads it)\\); retry in about \\d+ s\\.$`));
      const retryAfter = Number(res.headers.get('retry-after'));
      assert.ok(Number.isInteger(retryAfter) && retryAfter >= 1 && retryAfter <= 60, `Retry-After ${res.headers.get('retry-after')}`);
    }
    await assert.rejects(c.chat.completions.create({ model: `${DENSE}-sliced-0.5`, messages: [{ role: 'user', content: 'Hi' }] }), (err: unknown) => err instanceof OpenAI.APIError && err.status === 503);
    const unknown = await post(`${s.url}/v1/completions`, { model: 'no-such-model', prompt: 'x', max_tokens: 1 }, {});
    assert.equal(unknown.status, 404, 'a name the command line does not give is still unknown');
    assert.equal(errorOf(unknown.body).code, 'model_not_found');
    await s.ready;
    const done = await c.completions.create({ model: `${DENSE}-sliced-0.5`, prompt: 'Once upon a time', max_tokens: 4, temperature: 0 });
    assert.equal(done.usage?.completion_tokens, 4);
    const after = await post(`${s.url}/v1/completions`, { model: `${DENSE}-sliced-0.75`, prompt: 'x', max_tokens: 1 }, {});
    assert.equal(after.status, 404, 'once ready, an unserved variant is a 404');
  } finally {
    await s.shutdown(1000);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a restart takes the startup slice from the cache', async () => {
  const second = await startTestServer({ sparsities: [0.25], calWindows: CAL_WINDOWS, cacheDir });
  try {
    const jobs = (await get(`${second.url}/v1/slices`, {})).body.data;
    assert.equal(jobs[0].status, 'succeeded');
    assert.equal(jobs[0].phase, 'loaded from cache');
    const a = await client.completions.create({ model: SLICED, prompt: 'Once upon a time', max_tokens: 30, temperature: 0 });
    const c2 = new OpenAI({ baseURL: `${second.url}/v1`, apiKey: 'unused', maxRetries: 0 });
    const b = await c2.completions.create({ model: SLICED, prompt: 'Once upon a time', max_tokens: 30, temperature: 0 });
    assert.equal(b.choices[0].text, a.choices[0].text, 'the cached slice generates the same text');
  } finally {
    await second.server.shutdown(1000);
  }
});
