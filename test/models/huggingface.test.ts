import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { HuggingFaceWriter, loadHuggingFaceModel, saveHuggingFaceModel } from '../../models/huggingface.js';
import { hashModelWeights, loadModel } from '../../models/load.js';
import {
  fromBfloat16Array, fromFloat16Array, readSafetensors, readSafetensorsHeader, toBfloat16Array, toFloat16Array, writeSafetensors,
} from '../../models/safetensors.js';
import { parseDecoderConfig } from '../../models/registry.js';
import type { DecoderConfig, LoadedModel, SlicingInfo, WeightMap } from '../../models/types.js';
import { expectedWeightShapes } from '../../models/validate.js';
import { W } from '../helpers/llama-names.js';

const parseLlamaConfig = (json: Record<string, unknown>, file: string): DecoderConfig => parseDecoderConfig(json, file);
import { randn, rng } from '../helpers/tiny-model.js';
import { STORIES_DIR, assertLoadError, convertStories260K, tempDir } from './helpers.js';

const dense = loadModel(STORIES_DIR);
const sampleText = ['Once upon a time', 'Lily and Ben went to the park. They saw a big dog!', 'naïve café 🐶'];

test('llama2.c -> Hugging Face float32 -> load: identical weights, config and tokenizer', () => {
  const { converted, dir } = convertStories260K('float32');
  assert.equal(converted.format, 'huggingface');
  assert.equal(converted.id, 'stories260K-hf-float32');
  const { source, ...fields } = converted.config;
  assert.deepEqual(fields, dense.config);
  assert.equal(source!.torch_dtype, 'float32', 'the loaded config keeps config.json as read');
  assert.deepEqual([...converted.weights.keys()].sort(), [...dense.weights.keys()].sort());
  for (const [name, t] of dense.weights) {
    assert.deepEqual(converted.weights.get(name)!.shape, t.shape, name);
    assert.deepEqual(converted.weights.get(name)!.data, t.data, name);
  }
  assert.equal(hashModelWeights(converted), hashModelWeights(dense));
  for (const text of sampleText) assert.deepEqual(converted.tokenizer.encode(text), dense.tokenizer.encode(text));
  assert.equal(JSON.stringify(converted.tokenizer.toJSON()), JSON.stringify(dense.tokenizer.toJSON()));
  assert.deepEqual(fs.readdirSync(dir).sort(), ['config.json', 'generation_config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']);
  const config = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
  assert.equal(config.torch_dtype, 'float32');
  assert.equal(config.hidden_act, 'silu');
  assert.deepEqual(config.eos_token_id, [2, 1], 'every end-of-sequence id, as transformers reads a list');
  assert.deepEqual(JSON.parse(fs.readFileSync(path.join(dir, 'generation_config.json'), 'utf8')), { bos_token_id: 1, eos_token_id: [2, 1] });
  assert.deepEqual(converted.tokenizer.eosTokenIds, [2, 1]);
  const tokenizerConfig = JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer_config.json'), 'utf8'));
  assert.equal(tokenizerConfig.model_max_length, 512);
  assert.equal(tokenizerConfig.bos_token, '<s>');
  const header = readSafetensorsHeader(path.join(dir, 'model.safetensors'));
  assert.deepEqual(header.metadata, { format: 'pt' });
  assert.ok(!header.tensors.some((t) => t.name === W.lmHead), 'tied: no lm_head in the file');
});

test('float16 and bfloat16 conversions store the round-to-nearest-even values', () => {
  for (const [dtype, fileDtype, roundTrip, tolerance] of [
    ['float16', 'F16', (x: Float32Array) => fromFloat16Array(toFloat16Array(x)), 2 ** -11],
    ['bfloat16', 'BF16', (x: Float32Array) => fromBfloat16Array(toBfloat16Array(x)), 2 ** -8],
  ] as const) {
    const { converted, dir } = convertStories260K(dtype);
    assert.ok(readSafetensorsHeader(path.join(dir, 'model.safetensors')).tensors.every((t) => t.dtype === fileDtype));
    assert.equal(JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')).torch_dtype, dtype);
    let changed = 0;
    for (const [name, t] of dense.weights) {
      const got = converted.weights.get(name)!.data;
      assert.deepEqual(got, roundTrip(t.data), name);
      for (let i = 0; i < got.length; i++) {
        if (got[i] !== t.data[i]) changed += 1;
        // Relative error of a normal number is at most half an ulp.
        if (Math.abs(t.data[i]!) > 1e-4) assert.ok(Math.abs(got[i]! - t.data[i]!) <= tolerance * Math.abs(t.data[i]!), `${name}[${i}]`);
      }
    }
    assert.ok(changed > 200000, `${dtype}: only ${changed} values changed`);
    assert.deepEqual(converted.tokenizer.encode('Once upon a time'), [1, 403, 407, 261, 378]);
  }
});

test('a model over the shard limit is written as shards plus an index and loads back identically', () => {
  const dir = path.join(tempDir(), 'sharded');
  const files = saveHuggingFaceModel(dense, dir, { maxShardBytes: 300_000 });
  const shards = files.map((f) => f.name).filter((n) => /^model-\d{5}-of-\d{5}\.safetensors$/.test(n));
  assert.ok(shards.length >= 4, `${shards.length} shards`);
  assert.ok(files.some((f) => f.name === 'model.safetensors.index.json'));
  assert.ok(!fs.existsSync(path.join(dir, 'model.safetensors')));
  for (const s of shards) assert.ok(fs.statSync(path.join(dir, s)).size < 300_000 + 10_000, s);
  assert.equal(hashModelWeights(loadModel(dir)), hashModelWeights(dense));
});

test('saving is atomic and refuses to overwrite a non-empty directory unless asked', () => {
  const parent = tempDir();
  const out = path.join(parent, 'out');
  fs.mkdirSync(out);
  fs.writeFileSync(path.join(out, 'keep.txt'), 'x');
  assert.throws(() => saveHuggingFaceModel(dense, out), /exists and is not empty/);
  assert.deepEqual(fs.readdirSync(out), ['keep.txt']);

  // A failure half-way leaves the old directory as it was and no temporary directory behind.
  const failing: LoadedModel = { ...dense, tokenizer: { ...dense.tokenizer, toJSON: () => { throw new Error('disk full'); } } };
  assert.throws(() => saveHuggingFaceModel(failing, out, { overwrite: true }), /disk full/);
  assert.deepEqual(fs.readdirSync(out), ['keep.txt']);
  assert.deepEqual(fs.readdirSync(parent), ['out']);

  saveHuggingFaceModel(dense, out, { overwrite: true });
  assert.ok(!fs.existsSync(path.join(out, 'keep.txt')));
  assert.deepEqual(fs.readdirSync(parent), ['out']);
  assert.equal(hashModelWeights(loadModel(out)), hashModelWeights(dense));

  // An existing empty directory is fine without overwrite.
  const empty = path.join(parent, 'empty');
  fs.mkdirSync(empty);
  saveHuggingFaceModel(dense, empty);
  assert.ok(fs.existsSync(path.join(empty, 'config.json')));
});

/** The smallest valid config.json object of these tests. */
function base0(): Record<string, unknown> {
  return { architectures: ['LlamaForCausalLM'], hidden_size: 64, intermediate_size: 172, num_hidden_layers: 2, num_attention_heads: 8, vocab_size: 512 };
}

test('config.json defaults follow transformers', () => {
  const config = parseLlamaConfig({
    architectures: ['LlamaForCausalLM'], hidden_size: 64, intermediate_size: 172, num_hidden_layers: 2,
    num_attention_heads: 8, vocab_size: 512, eos_token_id: [2, 7], some_other_field: 'kept out',
  }, 'config.json');
  const { source, ...fields } = config;
  assert.equal(source!.some_other_field, 'kept out', 'the family fields are kept for saving');
  assert.deepEqual(fields, {
    architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: 64, intermediate_size: 172,
    num_hidden_layers: 2, num_attention_heads: 8, num_key_value_heads: 8, head_dim: 8, vocab_size: 512,
    max_position_embeddings: 2048, norm: 'rms', norm_eps: 1e-6, block: 'sequential', gated_mlp: true, hidden_act: 'silu',
    positions: { kind: 'rotary', rope_theta: 10000, rotary_dim: 8, rope_scaling: null }, qk_norm: null,
    sliding_window: null, layer_types: ['full_attention', 'full_attention'], tie_word_embeddings: false,
    bos_token_id: 1, eos_token_id: 2, eos_token_ids: [2, 7],
  });
  assert.equal(parseLlamaConfig({ ...base0(), eos_token_id: 7 }, 'c.json').eos_token_ids, undefined, 'one id: no list');
  assert.equal(parseLlamaConfig({ ...base0(), eos_token_id: [7] }, 'c.json').eos_token_ids, undefined, 'a list of one: no list');
  assertLoadError(() => parseLlamaConfig({ ...base0(), eos_token_id: [2, 600] }, 'c.json'), 'c.json', 'eos_token_id 600 is not below vocab_size 512');
  const base = { architectures: ['LlamaForCausalLM'], hidden_size: 64, intermediate_size: 172, num_hidden_layers: 2, num_attention_heads: 8, vocab_size: 512 };
  assertLoadError(() => parseLlamaConfig({ ...base, architectures: ['GemmaForCausalLM'] }, 'c.json'), 'c.json', 'unknown architecture GemmaForCausalLM; supported: Llama (LlamaForCausalLM)');
  assertLoadError(() => parseLlamaConfig({ ...base, num_attention_heads: '8' }, 'c.json'), 'c.json', 'num_attention_heads');
  assertLoadError(() => parseLlamaConfig({ ...base, num_key_value_heads: 3 }, 'c.json'), 'c.json', 'not a multiple of num_key_value_heads 3');
  assertLoadError(() => parseLlamaConfig({ ...base, rope_scaling: { type: 'yarn', factor: 2 } }, 'c.json'), 'c.json', 'rope_scaling rope_type yarn is not supported');
  assertLoadError(() => parseLlamaConfig({ ...base, rope_scaling: { rope_type: 'linear' } }, 'c.json'), 'c.json', 'rope_scaling rope_type linear needs factor');
  assertLoadError(() => parseLlamaConfig({ ...base, hidden_act: 'mish' }, 'c.json'), 'c.json', 'hidden_act mish is not supported');
  assertLoadError(() => parseLlamaConfig({ ...base, hidden_size: 60 }, 'c.json'), 'c.json', 'hidden_size 60 is not a multiple');
  const { architectures: _, ...noArchitectures } = base;
  assertLoadError(() => parseLlamaConfig(noArchitectures, 'c.json'), 'c.json', 'no "architectures" or "model_type" field');
  assert.equal(parseLlamaConfig({ ...noArchitectures, model_type: 'llama' }, 'c.json').architectures[0], 'LlamaForCausalLM', 'model_type alone finds the family');
});

/** Writes `model`'s directory, then rewrites one of its files with `edit`. */
function savedCopy(edit?: (dir: string) => void): string {
  const dir = path.join(tempDir(), 'model');
  saveHuggingFaceModel(dense, dir);
  edit?.(dir);
  return dir;
}

test('bad Hugging Face directories name the file and the problem', () => {
  const editJson = (file: string, change: (json: any) => void) => {
    const json = JSON.parse(fs.readFileSync(file, 'utf8'));
    change(json);
    fs.writeFileSync(file, JSON.stringify(json));
  };

  let dir = savedCopy((d) => editJson(path.join(d, 'config.json'), (c) => { c.architectures = ['GPT2LMHeadModel']; }));
  assertLoadError(() => loadHuggingFaceModel(dir), path.join(dir, 'config.json'), 'unknown architecture GPT2LMHeadModel; supported: Llama (LlamaForCausalLM)');

  dir = savedCopy((d) => fs.rmSync(path.join(d, 'config.json')));
  assertLoadError(() => loadHuggingFaceModel(dir), path.join(dir, 'config.json'), 'config file not found');

  dir = savedCopy((d) => fs.rmSync(path.join(d, 'model.safetensors')));
  assertLoadError(() => loadHuggingFaceModel(dir), dir, 'no model.safetensors or model.safetensors.index.json');

  dir = savedCopy((d) => fs.rmSync(path.join(d, 'tokenizer.json')));
  assertLoadError(() => loadHuggingFaceModel(dir), path.join(dir, 'tokenizer.json'), 'tokenizer file not found');

  // A tokenizer with more tokens than the embedding has rows.
  dir = savedCopy((d) => editJson(path.join(d, 'tokenizer.json'), (t) => {
    t.added_tokens.push({ id: 512, content: '<extra>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
  }));
  assertLoadError(() => loadHuggingFaceModel(dir), path.join(dir, 'tokenizer.json'), 'the tokenizer has 513 tokens', path.join(dir, 'config.json'), 'vocab_size 512');

  // A wrong tensor shape, a missing tensor, an unexpected tensor.
  const rewriteWeights = (d: string, change: (w: WeightMap) => void) => {
    const file = path.join(d, 'model.safetensors');
    const { weights } = readSafetensors(file);
    change(weights);
    writeSafetensors(file, weights);
  };
  dir = savedCopy((d) => rewriteWeights(d, (w) => { w.set(W.k(3), { shape: [64, 32], data: w.get(W.k(3))!.data }); }));
  assertLoadError(() => loadHuggingFaceModel(dir), path.join(dir, 'model.safetensors'), `tensor ${W.k(3)} has shape [64, 32]`, '[32, 64]', 'config.json');
  dir = savedCopy((d) => rewriteWeights(d, (w) => { w.delete(W.up(4)); }));
  assertLoadError(() => loadHuggingFaceModel(dir), path.join(dir, 'model.safetensors'), `missing tensor ${W.up(4)}`);
  dir = savedCopy((d) => rewriteWeights(d, (w) => { w.set('model.layers.5.mlp.up_proj.weight', { shape: [1], data: new Float32Array(1) }); }));
  assertLoadError(() => loadHuggingFaceModel(dir), path.join(dir, 'model.safetensors'), 'unexpected tensor model.layers.5.mlp.up_proj.weight');

  // Old checkpoints' rotary buffers are dropped, a tied lm_head too.
  dir = savedCopy((d) => rewriteWeights(d, (w) => {
    w.set('model.layers.0.self_attn.rotary_emb.inv_freq', { shape: [4], data: new Float32Array(4) });
    w.set(W.lmHead, w.get(W.embed)!);
  }));
  assert.equal(hashModelWeights(loadHuggingFaceModel(dir)), hashModelWeights(dense));

  // A sharded index pointing at a missing shard.
  dir = path.join(tempDir(), 'sharded');
  saveHuggingFaceModel(dense, dir, { maxShardBytes: 300_000 });
  fs.rmSync(path.join(dir, 'model-00002-of-00004.safetensors'));
  assertLoadError(() => loadHuggingFaceModel(dir), path.join(dir, 'model.safetensors.index.json'), 'shard model-00002-of-00004.safetensors', 'does not exist');
});

function slicingInfo(sliced: number, sliceHead: boolean): SlicingInfo {
  return {
    sparsity: 0.5, original_hidden_size: 16, sliced_hidden_size: sliced, round_interval: 8, slice_head: sliceHead,
    calibration: { file: 'train.txt', sha256: 'ab', windows: 4, seq_len: 32, tokens: 128 },
    source_model_sha256: 'cd', created: '2026-11-29T00:00:00Z',
  };
}

const slicedJson = (sliceHead: boolean): Record<string, unknown> => ({
  architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: 16, intermediate_size: 24,
  num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 4, vocab_size: 512,
  max_position_embeddings: 64, rms_norm_eps: 1e-5, rope_theta: 10000, tie_word_embeddings: false,
  bos_token_id: 1, eos_token_id: 2, sliceserve: slicingInfo(8, sliceHead),
});
const slicedConfig = (sliceHead: boolean): DecoderConfig => parseDecoderConfig(slicedJson(sliceHead), 'config.json');

test('sliced models: expected shapes (d = 16, d\' = 8, 2 layers)', () => {
  const shapes = Object.fromEntries(expectedWeightShapes(slicedConfig(false)));
  assert.deepEqual(shapes, {
    [W.embed]: [512, 8],
    [W.q(0)]: [16, 8], [W.k(0)]: [8, 8], [W.v(0)]: [8, 8], [W.o(0)]: [8, 16], [W.attnShortcut(0)]: [8, 8],
    [W.gate(0)]: [24, 8], [W.up(0)]: [24, 8], [W.down(0)]: [8, 24], [W.mlpShortcut(0)]: [8, 8],
    [W.q(1)]: [16, 8], [W.k(1)]: [8, 8], [W.v(1)]: [8, 8], [W.o(1)]: [8, 16], [W.attnShortcut(1)]: [8, 8],
    [W.gate(1)]: [24, 8], [W.up(1)]: [24, 8], [W.down(1)]: [16, 24], [W.mlpShortcut(1)]: [8, 16],
    [W.lmHead]: [512, 16],
  });
  const headSliced = Object.fromEntries(expectedWeightShapes(slicedConfig(true)));
  assert.deepEqual(headSliced[W.down(1)], [8, 24]);
  assert.deepEqual(headSliced[W.mlpShortcut(1)], [8, 8]);
  assert.deepEqual(headSliced[W.lmHead], [512, 8]);
});

test('sliced models: save and load round trip with the sliceserve section; norm weights are rejected', () => {
  for (const sliceHead of [false, true]) {
    const config = slicedConfig(sliceHead);
    const r = rng(sliceHead ? 2 : 1);
    const weights: WeightMap = new Map();
    for (const [name, shape] of expectedWeightShapes(config)) {
      weights.set(name, { shape, data: randn(shape.reduce((a, b) => a * b, 1), 0.5, r) });
    }
    const model: LoadedModel = { ...dense, id: 'sliced', config, weights };
    const dir = path.join(tempDir(), 'sliced');
    saveHuggingFaceModel(model, dir);
    const loaded = loadModel(dir);
    const { source: _s, ...fields } = loaded.config;
    const { source: _t, ...expected } = config;
    assert.deepEqual(fields, expected);
    assert.equal(hashModelWeights(loaded), hashModelWeights(model));
    assert.deepEqual(JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')).sliceserve, config.sliceserve);

    const withNorm = new Map(weights).set(W.attnNorm(0), { shape: [8], data: new Float32Array(8) });
    assertLoadError(() => saveHuggingFaceModel({ ...model, weights: withNorm }, path.join(tempDir(), 'x')), 'sliced (in memory)', `unexpected tensor ${W.attnNorm(0)}`);
  }
  assertLoadError(() => parseLlamaConfig({ ...slicedJson(false), tie_word_embeddings: true }, 'c.json'), 'c.json', 'tie_word_embeddings');
  assertLoadError(() => parseLlamaConfig({ ...slicedJson(false), sliceserve: { ...slicingInfo(8, false), slice_head: 'no' } }, 'c.json'), 'c.json', 'sliceserve.slice_head');
  assertLoadError(() => parseLlamaConfig({ ...slicedJson(false), sliceserve: slicingInfo(32, false) }, 'c.json'), 'c.json', 'sliced_hidden_size 32 exceeds hidden_size 16');
});

test('HuggingFaceWriter: tensors in any order, read back before commit, the directory appears only at commit', () => {
  const parent = tempDir();
  const out = path.join(parent, 'streamed');
  const writer = HuggingFaceWriter.create(dense, out, { maxShardBytes: 200_000 });
  const names = [...dense.weights.keys()].filter((n) => !(dense.config.tie_word_embeddings && n === W.lmHead)).reverse();
  assert.deepEqual(writer.missing, [...names].sort());
  for (const name of names) {
    writer.write(name, dense.weights.get(name)!);
    assert.deepEqual(Array.from(writer.readBack(name).data), Array.from(dense.weights.get(name)!.data), name);
  }
  assert.equal(fs.existsSync(out), false, 'nothing at the target before commit');
  const files = writer.commit();
  assert.ok(files.some((f) => f.name === 'model.safetensors.index.json'), 'sharded');
  assert.deepEqual(fs.readdirSync(parent), ['streamed']);
  assert.equal(hashModelWeights(loadModel(out)), hashModelWeights(dense));

  // A commit with a tensor missing fails, naming it, and leaves nothing behind; so does abort.
  const partial = HuggingFaceWriter.create(dense, path.join(parent, 'partial'));
  partial.write(names[0], dense.weights.get(names[0])!);
  assert.throws(() => partial.commit(), /planned tensor\(s\) were never written/);
  const aborted = HuggingFaceWriter.create(dense, path.join(parent, 'aborted'));
  aborted.abort();
  assert.deepEqual(fs.readdirSync(parent), ['streamed']);
  assert.throws(() => HuggingFaceWriter.create(dense, out), /exists and is not empty/);
  assert.throws(() => HuggingFaceWriter.create(dense, path.join(parent, 'x'), { dtype: 'int8' as never }), /unknown dtype int8/);
});
