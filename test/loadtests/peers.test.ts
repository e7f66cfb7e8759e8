import assert from 'node:assert/strict';
import { test } from 'node:test';
import { peerWarnings, peerWeightBytesPerToken, probePeer, type Peer } from '../../loadtests/peers.js';
import { freePort } from '../../loadtests/server-process.js';
import { FAKE_MODELS, startFakeServer } from './fake-server.js';

// what llama-server's /v1/models reported for bench-110m converted to q8_0 (its `meta`)
const META = { vocab_type: true, n_vocab: 32000, n_ctx: 256, n_ctx_train: 2048, n_embd: 768, n_params: 124668672, size: 132516864, ftype: 'Q8_0' };

test("probePeer reads llama.cpp's model id and meta; another server's first id; never throws", async () => {
  const llama = await startFakeServer({ models: [{ id: 'gguf/bench-110m-q8_0.gguf' }], style: 'llamacpp', meta: META });
  const ours = await startFakeServer({ models: FAKE_MODELS });
  const failing = await startFakeServer({ models: [] });
  try {
    const p = await probePeer({ name: 'q8', url: llama.url });
    assert.deepEqual(p, {
      name: 'q8',
      url: llama.url,
      model: 'gguf/bench-110m-q8_0.gguf',
      info: { n_vocab: 32000, n_params: 124668672, size_bytes: 132516864, n_embd: 768, ftype: 'Q8_0' },
      startError: null,
    });
    const o = await probePeer({ name: 'other', url: ours.url });
    assert.deepEqual([o.model, o.info, o.startError], ['synth', null, null]);
    const empty = await probePeer({ name: 'empty', url: failing.url });
    assert.deepEqual([empty.model, empty.startError], ['empty', 'GET /v1/models lists no model']);
    const port = await freePort();
    const down = await probePeer({ name: 'down', url: `http://127.0.0.1:${port}` });
    assert.equal(down.model, 'down', 'the name stands in for the model id');
    assert.match(down.startError ?? '', /^not reachable: .*\(ECONNREFUSED\)$/);
    const missing = await probePeer({ name: 'nf', url: `${ours.url}/nothing` });
    assert.match(missing.startError ?? '', /^GET \/v1\/models answered HTTP 404/);
  } finally {
    await Promise.all([llama.close(), ours.close(), failing.close()]);
  }
});

test('peerWeightBytesPerToken: the file less the embedding table at the mean bytes per weight', () => {
  const info = { n_vocab: 32000, n_params: 124668672, size_bytes: 132516864, n_embd: 768, ftype: 'Q8_0' };
  const embedding = 32000 * 768;
  assert.equal(peerWeightBytesPerToken(info), 132516864 * (1 - embedding / 124668672));
  // q8_0 stores 34 bytes per 32 weights: 100.1 M weights read per token -> 106.3 MB exactly; the estimate is within 1 %
  const exact = ((124668672 - embedding - 25 * 768) * 34) / 32;
  assert.ok(Math.abs(peerWeightBytesPerToken(info)! / exact - 1) < 0.01);
  assert.equal(peerWeightBytesPerToken(null), null);
  assert.equal(peerWeightBytesPerToken({ ...info, size_bytes: null }), null);
  assert.equal(peerWeightBytesPerToken({ ...info, n_params: embedding }), null, 'nothing but embeddings: no estimate');
});

test('peerWarnings: one line per problem; a name that is also one of our ids is refused', () => {
  const peer = (over: Partial<Peer>): Peer => ({ name: 'p', url: 'http://127.0.0.1:1', model: 'm', info: null, startError: null, ...over });
  assert.deepEqual(peerWarnings([peer({})], ['synth'], 32000), []);
  const lines = peerWarnings([peer({ name: 'down', startError: 'not reachable: fetch failed (ECONNREFUSED)' }), peer({ name: 'small', info: { n_vocab: 512, n_params: null, size_bytes: null, n_embd: null, ftype: null } })], ['synth'], 32000);
  assert.equal(lines.length, 2);
  assert.match(lines[0], /^peer down \(http:\/\/127\.0\.0\.1:1\): not reachable: .*; measuring it anyway, its failed requests count as errors$/);
  assert.match(lines[1], /^peer small: its vocabulary has 512 tokens, the prompts use ids up to 31999/);
  assert.ok(lines.every((l) => !l.includes('\n')));
  assert.throws(() => peerWarnings([peer({ name: 'synth' })], ['synth', 'synth-sliced-0.5'], 32000), /--peer synth: that name is also a model served by SliceServe/);
});
