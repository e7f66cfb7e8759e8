/**
 * Every family against Hugging Face transformers itself: tiny random checkpoints written by
 * transformers' `save_pretrained` (float32, float16, bfloat16, sharded), with the float64
 * logits, greedy continuation and protocol perplexity that transformers computed on them
 * (scripts/transformers-goldens.py; test/fixtures/transformers/<variant>/expected.json).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { generate } from '../../engine/generate.js';
import { loadModel } from '../../models/load.js';
import { buildTokenStream, cutWindows } from '../../models/tokenizer/index.js';
import { DecoderSession } from '../../runtime/decoder-session.js';
import { perplexity } from '../../runtime/perplexity.js';
import { REPO_ROOT } from './helpers.js';

const FIXTURES = path.join(REPO_ROOT, 'test', 'fixtures', 'transformers');
const EVAL_FILE = path.join(REPO_ROOT, 'data', 'tinystories-valid-sample.txt');

interface Expected {
  dtype: string;
  tokens: number[];
  logits_shape: [number, number];
  prompt: number[];
  greedy: number[];
  perplexity: { seq_len: number; windows: number; value: number };
}

const variants = fs.readdirSync(FIXTURES).filter((d) => fs.existsSync(path.join(FIXTURES, d, 'expected.json'))).sort();

test('the transformers fixtures cover every family', () => {
  const families = new Set(variants.map((v) => JSON.parse(fs.readFileSync(path.join(FIXTURES, v, 'config.json'), 'utf8')).architectures[0]));
  assert.deepEqual([...families].sort(), ['LlamaForCausalLM', 'MistralForCausalLM', 'OPTForCausalLM', 'Phi3ForCausalLM', 'PhiForCausalLM', 'Qwen2ForCausalLM', 'Qwen3ForCausalLM']);
});

for (const variant of variants) {
  test(`${variant}: logits, greedy text and perplexity equal transformers'`, async () => {
    const dir = path.join(FIXTURES, variant);
    const expected = JSON.parse(fs.readFileSync(path.join(dir, 'expected.json'), 'utf8')) as Expected;
    const buf = fs.readFileSync(path.join(dir, 'expected-logits.f32'));
    const want = new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
    const model = loadModel(dir);
    const all = await DecoderSession.create(model, { logits: 'all', threads: 1 });
    try {
      const got = (await all.step([{ cache: all.newCache(), tokens: expected.tokens }]))[0];
      assert.equal(got.length, want.length);
      let err = 0;
      for (let i = 0; i < got.length; i++) err = Math.max(err, Math.abs(got[i] - want[i]));
      assert.ok(err < 1e-4, `max |logit - transformers| = ${err}`);
      const stream = buildTokenStream(fs.readFileSync(EVAL_FILE), model.tokenizer);
      const windows = cutWindows(Array.from(stream.tokens), expected.perplexity.seq_len, expected.perplexity.windows);
      const ppl = (await perplexity(all, windows)).perplexity;
      assert.ok(Math.abs(ppl - expected.perplexity.value) < 1e-4 * expected.perplexity.value, `perplexity ${ppl} vs ${expected.perplexity.value}`);
    } finally {
      await all.release();
    }
    const last = await DecoderSession.create(model, { threads: 1 });
    try {
      const r = await generate(last, model.tokenizer, expected.prompt, { maxTokens: expected.greedy.length, sampling: { temperature: 0, topP: 1, topK: 0, presencePenalty: 0, frequencyPenalty: 0 }, stopAtEos: false });
      assert.deepEqual(r.tokens, expected.greedy);
    } finally {
      await last.release();
    }
  });
}
