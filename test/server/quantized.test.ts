/**
 * Quantized variants served side by side (`--quantize none,int8,int4`): /v1/models shows each
 * model's precision and quantization; int8 keeps the golden greedy text; POST /v1/slices slices
 * at a quantized model's own precision or at the one asked for; bad values are OpenAI-shaped
 * 400s; a restart takes the quantized slices from the cache.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import OpenAI from 'openai';
import { DENSE, GOLDEN, type TestServer, errorOf, get, post, startTestServer, waitFor } from './helpers.js';

let t: TestServer;
let cacheDir: string;
let client: OpenAI;
const ids = [DENSE, `${DENSE}-int8`, `${DENSE}-int4`, `${DENSE}-sliced-0.25`, `${DENSE}-sliced-0.25-int8`, `${DENSE}-sliced-0.25-int4`];

before(async () => {
  cacheDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sliceserve-qcache-'));
  t = await startTestServer({ sparsities: [0.25], quantize: ['none', 'int8', 'int4'], calWindows: 4, cacheDir });
  client = new OpenAI({ baseURL: `${t.url}/v1`, apiKey: 'unused', maxRetries: 0 });
});
after(async () => {
  await t.server.shutdown(1000);
  fs.rmSync(cacheDir, { recursive: true, force: true });
});

async function settle(url: string, id: string): Promise<any> {
  let job: any;
  await waitFor(async () => {
    job = (await get(`${url}/v1/slices/${id}`, {})).body;
    return job.status === 'succeeded' || job.status === 'failed';
  }, 60_000, `slicing job ${id}`);
  return job;
}

test('/v1/models: every model at every precision, with precision, quantization, parent and root', async () => {
  const cards = new Map<string, any>((await get(`${t.url}/v1/models`, {})).body.data.map((m: any) => [m.id, m]));
  assert.deepEqual([...cards.keys()].sort(), [...ids].sort());
  const dense = cards.get(DENSE);
  assert.equal(dense.precision, 'float32');
  assert.equal('quantization' in dense, false);
  const int4 = cards.get(`${DENSE}-int4`);
  assert.equal(int4.precision, 'int4');
  assert.equal(int4.parent, DENSE);
  assert.equal(int4.root, DENSE);
  assert.equal('slicing' in int4, false, 'a quantized dense model is not a slice');
  assert.deepEqual(
    { ...int4.quantization, quantized_bytes: 0 },
    {
      method: 'int4',
      format: 'onnxruntime MatMulNBits',
      linear: { bits: 4, block_size: 32, symmetric: false },
      head: { bits: 8, block_size: 128, symmetric: false },
      shortcuts: { bits: 8, block_size: 128, symmetric: false },
      embedding: null,
      accuracy_level: 4,
      rotation: null,
      quantized_bytes: 0,
    },
  );
  // stories260K per layer: q, o 64 rows, k, v 32 rows, gate, up 172 rows reading K = 64 (2 blocks of 32: 32 code bytes, 2
  // float32 scales, 1 zero-point byte), down 64 rows reading K = 172 (6 blocks: 96 + 24 + 3); the 512 x 64 head at int8
  // (one block of 128, padded: 128 + 4 + 1 bytes per row).
  const int4Linear = 5 * ((64 + 32 + 32 + 64 + 2 * 172) * (32 + 8 + 1) + 64 * (96 + 24 + 3));
  const head8 = 512 * (128 + 4 + 1);
  assert.equal(int4.quantization.quantized_bytes, int4Linear + head8);
  const s8 = cards.get(`${DENSE}-sliced-0.25-int8`);
  assert.equal(s8.precision, 'int8');
  assert.equal(s8.parent, DENSE);
  assert.equal(s8.slicing.hidden_size, 48);
  assert.equal(s8.slicing.parameters, cards.get(`${DENSE}-sliced-0.25`).slicing.parameters, 'quantizing keeps the parameter count');
  assert.equal(s8.quantization.rotation, 'random-orthogonal', 'slices are rotated before quantizing (auto)');
  const jobs = (await get(`${t.url}/v1/slices`, {})).body.data;
  assert.deepEqual(jobs.map((j: any) => [j.model, j.quantize, j.status]).sort(), [
    [`${DENSE}-sliced-0.25`, 'none', 'succeeded'],
    [`${DENSE}-sliced-0.25-int4`, 'int4', 'succeeded'],
    [`${DENSE}-sliced-0.25-int8`, 'int8', 'succeeded'],
  ]);
});

test('int8 serves the golden greedy text; every variant completes', async () => {
  const golden = await client.completions.create({ model: `${DENSE}-int8`, prompt: 'Once upon a time', max_tokens: 60, temperature: 0 });
  assert.equal(golden.choices[0].text, GOLDEN);
  for (const model of ids) {
    const r = await client.completions.create({ model, prompt: 'Once upon a time', max_tokens: 12, temperature: 0 });
    assert.equal(r.usage?.completion_tokens, 12, model);
    assert.equal(r.model, model);
  }
});

test('POST /v1/slices: a quantized model slices at its own precision, or at the one asked for; twins and bad values refused', async () => {
  const own = await post(`${t.url}/v1/slices`, { model: `${DENSE}-int4`, sparsity: 0.5, cal_windows: 4 }, {});
  assert.equal(own.status, 202, JSON.stringify(own.body));
  assert.equal(own.body.model, `${DENSE}-sliced-0.5-int4`);
  assert.equal(own.body.parent, DENSE);
  assert.equal(own.body.quantize, 'int4');
  const twin = await post(`${t.url}/v1/slices`, { model: DENSE, sparsity: 0.45, quantize: 'int4' }, {});
  assert.equal(twin.status, 409);
  assert.match(errorOf(twin.body).message, /already slicing stories260K to the same width d' = 32 as 'stories260K-sliced-0\.5-int4'/);
  assert.equal((await settle(t.url, own.body.id)).status, 'succeeded');
  const asked = await post(`${t.url}/v1/slices`, { model: DENSE, sparsity: 0.5, quantize: 'int8', quant_rotation: 'none', cal_windows: 4 }, {});
  assert.equal(asked.status, 202);
  assert.equal(asked.body.model, `${DENSE}-sliced-0.5-int8`);
  assert.equal((await settle(t.url, asked.body.id)).status, 'succeeded');
  const card = (await get(`${t.url}/v1/models/${DENSE}-sliced-0.5-int8`, {})).body;
  assert.equal(card.precision, 'int8');
  assert.equal(card.quantization.rotation, null, 'quant_rotation none');
  const served = await post(`${t.url}/v1/slices`, { model: DENSE, sparsity: 0.45, quantize: 'int4' }, {});
  assert.equal(served.status, 409);
  assert.match(errorOf(served.body).message, /^Model 'stories260K-sliced-0\.5-int4' already serves stories260K at the same sliced width d' = 32 and precision int4/);
  const bad: [unknown, string, RegExp][] = [
    [{ model: DENSE, sparsity: 0.3, quantize: 'int3' }, 'quantize', /^quantize: must be one of "none", "int8", "int4" \("none" = float weights\)$/],
    [{ model: DENSE, sparsity: 0.3, quant_rotation: 'hadamard' }, 'quant_rotation', /^quant_rotation: must be one of "auto", "random", "none"$/],
    [{ model: `${DENSE}-sliced-0.25-int8`, sparsity: 0.3 }, 'model', /^Model 'stories260K-sliced-0\.25-int8' is itself sliced; slice its dense model 'stories260K'\.$/],
  ];
  for (const [body, param, message] of bad) {
    const res = await post(`${t.url}/v1/slices`, body, {});
    assert.equal(res.status, 400, JSON.stringify(body));
    const e = errorOf(res.body);
    assert.equal(e.param, param);
    assert.equal(e.type, 'invalid_request_error');
    assert.match(e.message, message);
  }
});

test('a restart loads the quantized slice from the cache and generates the same text', async () => {
  const second = await startTestServer({ sparsities: [0.25], quantize: ['int4'], calWindows: 4, cacheDir });
  try {
    const jobs = (await get(`${second.url}/v1/slices`, {})).body.data;
    assert.equal(jobs[0].model, `${DENSE}-sliced-0.25-int4`);
    assert.equal(jobs[0].phase, 'quantized model loaded from cache');
    const ids2 = (await get(`${second.url}/v1/models`, {})).body.data.map((m: any) => m.id).sort();
    assert.deepEqual(ids2, [`${DENSE}-int4`, `${DENSE}-sliced-0.25-int4`], 'only the asked precision');
    const c2 = new OpenAI({ baseURL: `${second.url}/v1`, apiKey: 'unused', maxRetries: 0 });
    const a = await client.completions.create({ model: `${DENSE}-sliced-0.25-int4`, prompt: 'Once upon a time', max_tokens: 30, temperature: 0 });
    const b = await c2.completions.create({ model: `${DENSE}-sliced-0.25-int4`, prompt: 'Once upon a time', max_tokens: 30, temperature: 0 });
    assert.equal(b.choices[0].text, a.choices[0].text);
  } finally {
    await second.server.shutdown(1000);
  }
});
