import assert from 'node:assert/strict';
import * as path from 'node:path';
import { test } from 'node:test';
import { Command } from 'commander';
import { register as registerConvert } from '../../cli/commands/convert.js';
import { hashModelWeights, loadModel } from '../../models/load.js';
import { readSafetensorsHeader } from '../../models/safetensors.js';
import { STORIES_DIR, tempDir } from './helpers.js';

const dense = loadModel(STORIES_DIR);

/** Runs `sliceserve convert` with `args`, returning what it printed. */
async function runConvert(args: string[]): Promise<string> {
  const program = new Command('sliceserve').exitOverride().configureOutput({ writeErr: () => {}, writeOut: () => {} });
  registerConvert(program);
  const lines: string[] = [];
  const log = console.log;
  console.log = (...parts: unknown[]) => { lines.push(parts.join(' ')); };
  try {
    await program.parseAsync(['node', 'sliceserve', 'convert', ...args]);
  } finally {
    console.log = log;
  }
  return lines.join('\n');
}

test('sliceserve convert writes a loadable Hugging Face directory and prints what it wrote', async () => {
  const out = path.join(tempDir(), 'converted');
  const printed = await runConvert(['--model', STORIES_DIR, '--out', out, '--dtype', 'bfloat16']);
  assert.match(printed, /converted stories260K \(llama2c\) to a Hugging Face directory, bfloat16/);
  assert.match(printed, /260,032 parameters, tied embeddings/);
  for (const name of ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json', 'generation_config.json']) {
    assert.match(printed, new RegExp(`\\b${name.replace('.', '\\.')}\\b`));
  }
  assert.ok(readSafetensorsHeader(path.join(out, 'model.safetensors')).tensors.every((t) => t.dtype === 'BF16'));
  const converted = loadModel(out);
  assert.equal(converted.format, 'huggingface');
  assert.deepEqual(converted.tokenizer.encode('Once upon a time'), [1, 403, 407, 261, 378]);

  await assert.rejects(runConvert(['--model', STORIES_DIR, '--out', out]), /--out .* exists and is not empty; pass --overwrite/);
  await runConvert(['--model', STORIES_DIR, '--out', out, '--overwrite']);
  assert.equal(hashModelWeights(loadModel(out)), hashModelWeights(dense));
  await assert.rejects(runConvert(['--model', STORIES_DIR, '--out', out, '--dtype', 'int8']), /Allowed choices are float32, float16, bfloat16/);
  await assert.rejects(runConvert(['--model', path.join(out, 'nope'), '--out', path.join(out, 'x')]), /no such file or directory/);
});
