/**
 * The CLI on every family (a child process, as a user runs it): `eval` gives the protocol
 * perplexity that transformers computed on the fixture (test/fixtures/transformers/, written by
 * scripts/transformers-goldens.py), `generate` its greedy continuation, and `slice` makes an
 * artifact that `eval` and `generate` accept, for a LayerNorm family (OPT) and a parallel one (Phi).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { loadModel } from '../../models/load.js';

const BIN = path.resolve('bin/sliceserve.js');
const FIXTURES = path.resolve('test/fixtures/transformers');

function run(args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', env: { ...process.env, CI: '1' } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

interface Expected {
  prompt: number[];
  greedy: number[];
  perplexity: { seq_len: number; windows: number; value: number };
}

for (const variant of ['llama-llama3', 'mistral', 'qwen2', 'qwen3', 'phi3', 'opt', 'phi']) {
  test(`${variant}: eval and generate from the CLI equal transformers' perplexity and greedy text`, () => {
    const dir = path.join(FIXTURES, variant);
    const expected = JSON.parse(fs.readFileSync(path.join(dir, 'expected.json'), 'utf8')) as Expected;
    const e = run(['eval', '--model', dir, '--seq-len', String(expected.perplexity.seq_len), '--windows', String(expected.perplexity.windows), '--json']);
    assert.equal(e.code, 0, e.stderr);
    const got = JSON.parse(e.stdout.trim().split('\n').pop()!) as { perplexity: number };
    assert.ok(Math.abs(got.perplexity - expected.perplexity.value) < 1e-4 * expected.perplexity.value, `${got.perplexity} vs ${expected.perplexity.value}`);

    // The golden prompt is token ids; the CLI takes text: use the text whose encoding is those ids.
    const tokenizer = loadModel(dir).tokenizer;
    const text = tokenizer.decode(expected.prompt);
    assert.deepEqual(tokenizer.encode(text), expected.prompt, 'the prompt text encodes back to the golden ids');
    const g = run(['generate', '--model', dir, '--prompt', text, '--max-tokens', String(expected.greedy.length), '--temperature', '0', '--ignore-eos']);
    assert.equal(g.code, 0, g.stderr);
    assert.equal(g.stdout, tokenizer.decode(expected.greedy));
  });
}

for (const variant of ['opt', 'phi']) {
  test(`${variant}: slice --sparsity 0.25 writes an artifact that eval and generate accept`, () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sliceserve-family-'));
    try {
      const out = path.join(tmp, 'sliced');
      const s = run(['slice', '--model', path.join(FIXTURES, variant), '--sparsity', '0.25', '--cal-windows', '8', '--cal-seq-len', '64', '--out', out]);
      assert.equal(s.code, 0, s.stderr);
      const config = JSON.parse(fs.readFileSync(path.join(out, 'config.json'), 'utf8'));
      assert.equal(config.architectures[0], variant === 'opt' ? 'OPTForCausalLM' : 'PhiForCausalLM', 'the family\'s own config');
      assert.equal(config.sliceserve.sparsity, 0.25);
      const e = run(['eval', '--model', out, '--seq-len', '64', '--windows', '2', '--json']);
      assert.equal(e.code, 0, e.stderr);
      assert.ok(Number.isFinite(JSON.parse(e.stdout.trim().split('\n').pop()!).perplexity));
      const g = run(['generate', '--model', out, '--prompt', 'Once upon a time', '--max-tokens', '8', '--temperature', '0']);
      assert.equal(g.code, 0, g.stderr);
      assert.ok(g.stdout.length > 0);
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });
}
