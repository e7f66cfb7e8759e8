import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { hashModelWeights, loadModel } from '../../models/load.js';
import type { WeightMap } from '../../models/types.js';
import { W } from '../helpers/llama-names.js';
import { STORIES_BIN, STORIES_DIR, TOK512, assertLoadError, tempDir } from './helpers.js';

const dense = loadModel(STORIES_DIR);

test('loadModel dispatches on the directory contents and names the model after its directory', () => {
  assert.equal(dense.format, 'llama2c');
  assert.equal(dense.id, 'stories260K');
  const fromFile = loadModel(STORIES_BIN, { id: 'custom' });
  assert.equal(fromFile.format, 'llama2c');
  assert.equal(fromFile.id, 'custom');
  assert.equal(hashModelWeights(fromFile), hashModelWeights(dense));
});

test('loadModel lists what it expected when nothing fits', () => {
  const dir = tempDir();
  assertLoadError(() => loadModel(dir), dir, 'no model found', 'config.json', 'tok*.bin', 'holds nothing');
  fs.writeFileSync(path.join(dir, 'notes.txt'), 'x');
  fs.copyFileSync(TOK512, path.join(dir, 'tok512.bin'));
  assertLoadError(() => loadModel(dir), dir, 'no model found', 'holds notes.txt, tok512.bin');
  assertLoadError(() => loadModel(path.join(dir, 'notes.txt')), path.join(dir, 'notes.txt'), 'not a model');
  assertLoadError(() => loadModel(path.join(dir, 'missing')), path.join(dir, 'missing'), 'no such file or directory');
});

test('hashModelWeights depends on every name, shape and value, not on insertion order', () => {
  const h = hashModelWeights(dense);
  assert.match(h, /^[0-9a-f]{64}$/);
  const reversed: WeightMap = new Map([...dense.weights].reverse());
  assert.equal(hashModelWeights({ weights: reversed }), h);

  const nudged: WeightMap = new Map(dense.weights);
  const q = dense.weights.get(W.q(2))!;
  const data = Float32Array.from(q.data);
  data[17] = Math.fround(data[17]! * (1 + 2 ** -23)); // one ulp
  nudged.set(W.q(2), { shape: q.shape, data });
  assert.notEqual(hashModelWeights({ weights: nudged }), h);

  const reshaped: WeightMap = new Map(dense.weights);
  reshaped.set(W.q(2), { shape: [32, 128], data: q.data });
  assert.notEqual(hashModelWeights({ weights: reshaped }), h);

  const renamed: WeightMap = new Map(dense.weights);
  renamed.delete(W.q(2));
  renamed.set('model.layers.2.self_attn.q_proj.weight2', q);
  assert.notEqual(hashModelWeights({ weights: renamed }), h);
});
