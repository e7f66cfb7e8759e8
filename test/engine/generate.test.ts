/**
 * The dense path end to end on the real stories260K checkpoint, against llama2.c `run.c`
 * (issue 2 acceptance: golden greedy text and last-position logits; PROTOCOL.md §1).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { generate } from '../../engine/generate.js';
import { saveHuggingFaceModel } from '../../models/huggingface.js';
import { loadModel } from '../../models/load.js';
import type { LoadedModel } from '../../models/types.js';
import { DecoderSession } from '../../runtime/decoder-session.js';

const GOLDEN =
  ', there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball. She wanted to play with it, but it was too high.\nLily';

let model: LoadedModel;
let session: DecoderSession;
before(async () => {
  model = loadModel('models/stories260K');
  session = await DecoderSession.create(model, { threads: 1 });
});
after(async () => session.release());

const greedy = { temperature: 0, topP: 1, topK: 0, presencePenalty: 0, frequencyPenalty: 0 };

test('greedy "Once upon a time", 60 tokens, equals llama2.c run.c -t 0 -n 64', async () => {
  const ids = model.tokenizer.encode('Once upon a time');
  assert.deepEqual(ids, [1, 403, 407, 261, 378]);
  const r = await generate(session, model.tokenizer, ids, { maxTokens: 60, sampling: greedy });
  assert.equal(r.text, GOLDEN);
  assert.equal(r.tokens.length, 60);
  assert.equal(r.finishReason, 'length');
});

test('last-position logits of "Once upon a time" match llama2.c within 1e-4', async () => {
  const logits = (await session.step([{ cache: session.newCache(), tokens: [1, 403, 407, 261, 378] }]))[0];
  let argmax = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i] > logits[argmax]) argmax = i;
  assert.equal(argmax, 432);
  assert.ok(Math.abs(logits[432] - 17.7994) < 1e-4, `logit ${logits[432]}`);
  const first = [-10.13657, -5.32947, -10.13808];
  first.forEach((v, i) => assert.ok(Math.abs(logits[i] - v) < 1e-4, `logit[${i}] = ${logits[i]}`));
});

test('streamed deltas concatenate to the completion', async () => {
  const deltas: string[] = [];
  const r = await generate(session, model.tokenizer, model.tokenizer.encode('The cat'), { maxTokens: 30, sampling: greedy, onText: (d) => deltas.push(d) });
  assert.equal(deltas.join(''), r.text);
  assert.ok(r.text.length > 0);
});

test('seeded sampling is reproducible, and different seeds differ', async () => {
  const sampling = { temperature: 1, topP: 0.9, topK: 40, presencePenalty: 0, frequencyPenalty: 0 };
  const ids = model.tokenizer.encode('Tom had a dog');
  const a = await generate(session, model.tokenizer, ids, { maxTokens: 40, sampling: { ...sampling, seed: 7 } });
  const b = await generate(session, model.tokenizer, ids, { maxTokens: 40, sampling: { ...sampling, seed: 7 } });
  const c = await generate(session, model.tokenizer, ids, { maxTokens: 40, sampling: { ...sampling, seed: 8 } });
  assert.deepEqual(a.tokens, b.tokens);
  assert.notDeepEqual(a.tokens, c.tokens);
});

test('llama2.c -> Hugging Face directory -> same logits', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sliceserve-hf-'));
  try {
    saveHuggingFaceModel(model, path.join(dir, 'hf'));
    const hf = loadModel(path.join(dir, 'hf'));
    assert.equal(hf.format, 'huggingface');
    const s2 = await DecoderSession.create(hf, { threads: 1 });
    const tokens = hf.tokenizer.encode('One day, Lily met a bird.');
    const a = (await session.step([{ cache: session.newCache(), tokens }]))[0];
    const b = (await s2.step([{ cache: s2.newCache(), tokens }]))[0];
    await s2.release();
    assert.deepEqual(Array.from(b), Array.from(a));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a prompt longer than the context is refused', async () => {
  const long = new Array(model.config.max_position_embeddings).fill(300);
  await assert.rejects(generate(session, model.tokenizer, long, { maxTokens: 1, sampling: greedy }), /context length is 512/);
});
