import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { after, before, test } from 'node:test';
import { runPlan, type RunPlan } from '../../loadtests/runner.js';
import { runStats } from '../../loadtests/report.js';
import { planBlocks, splitRequests } from '../../loadtests/schedule.js';
import { freePort } from '../../loadtests/server-process.js';
import { startFakeServer, type FakeServer } from './fake-server.js';

let server: FakeServer;
before(async () => {
  server = await startFakeServer({
    models: [{ id: 'A' }, { id: 'B', behaviour: 'http500' }, { id: 'C', behaviour: 'drop' }, { id: 'D' }],
  });
});
after(() => server.close());

const plan = (models: string[], over: Partial<RunPlan> = {}): RunPlan => ({
  baseUrl: server.url,
  models,
  concurrencies: [1, 3],
  rounds: 2,
  requestsPerLevel: (c) => 2 * c,
  promptTokens: 10,
  outputTokens: 4,
  temperature: 0,
  seed: 1,
  vocabSize: 32000,
  bosTokenId: 1,
  timeoutS: 10,
  deadlineMs: performance.now() + 60_000,
  ...over,
});

test('requests reach the server block by block in the interleaved order, with the planned counts', async () => {
  server.received.length = 0;
  const result = await runPlan(plan(['A', 'D']));
  const expected = planBlocks(['A', 'D'], [1, 3], 2).flatMap((b) => Array<string>(splitRequests(2 * b.concurrency, 2)[b.round]).fill(b.model));
  assert.deepEqual(server.received.map((r) => r.model), expected);
  assert.equal(result.blocks.length, 8);
  assert.deepEqual(result.skipped, []);
  for (const b of result.blocks) {
    assert.equal(b.records.length, b.block.concurrency, 'each block is one wave of `concurrency` requests');
    assert.ok(b.records.every((r) => r.ok && r.output_tokens === 4 && r.concurrency === b.block.concurrency));
  }
  // every request is streaming, ignore_eos, with a distinct 10-token prompt
  assert.ok(server.received.every((r) => r.stream === true && r.ignore_eos === true && (r.prompt as number[]).length === 10));
  const levels0 = server.received.slice(0, 2).map((r) => JSON.stringify(r.prompt));
  assert.equal(levels0[0], levels0[1], 'both models get the same prompt at the same level, round and index');
  assert.equal(new Set(server.received.filter((r) => r.model === 'A').map((r) => JSON.stringify(r.prompt))).size, 8);
});

test('a failing model (500s, dropped connections) is measured to the end and counted as errors', async () => {
  const result = await runPlan(plan(['A', 'B', 'C'], { concurrencies: [2], rounds: 1, requestsPerLevel: () => 4 }));
  const stats = (m: string) => runStats(m, 0, 2, result.blocks.filter((b) => b.block.model === m).flatMap((b) => b.records), 1);
  assert.deepEqual([stats('A').requests, stats('A').errors, stats('A').output_tokens], [4, 0, 16]);
  for (const m of ['B', 'C']) {
    const s = stats(m);
    assert.deepEqual([s.requests, s.errors, s.error_rate, s.output_tokens, s.ttft_s, s.tpot_s], [4, 4, 1, 0, null, null], m);
    assert.ok(s.error_samples.length >= 1);
  }
  assert.match(stats('B').error_samples[0], /HTTP 500/);
});

test('the run is bounded: past the deadline no block starts; a timed block stops by itself', async () => {
  const late = await runPlan(plan(['A', 'D'], { deadlineMs: performance.now() - 1 }));
  assert.equal(late.blocks.length, 0);
  assert.equal(late.skipped.length, 8);
  const timed = await runPlan(plan(['A'], { concurrencies: [2], rounds: 1, requestsPerLevel: undefined, durationS: 0.3 }));
  assert.equal(timed.blocks.length, 1);
  assert.ok(timed.blocks[0].records.length >= 2);
  await assert.rejects(runPlan(plan(['A'], { requestsPerLevel: undefined })), RangeError);
});

test('an abort during a request stops the run without counting that request as an error', async () => {
  const controller = new AbortController();
  const slow = await startFakeServer({ models: [{ id: 'A' }], tokenDelayMs: 20 });
  try {
    setTimeout(() => controller.abort(), 150);
    const result = await runPlan(plan(['A'], { baseUrl: slow.url, outputTokens: 50, signal: controller.signal }));
    assert.equal(result.blocks.length, 1);
    assert.deepEqual(result.blocks[0].records, [], 'the interrupted request is dropped, not recorded as failed');
    assert.equal(result.skipped.length, 3);
  } finally {
    await slow.close();
  }
});

test('an abort stops the run: remaining blocks are skipped', async () => {
  const controller = new AbortController();
  const result = await runPlan(plan(['A', 'D'], { signal: controller.signal }), {
    onBlockDone: (_r, i) => {
      if (i === 1) controller.abort();
    },
  });
  assert.equal(result.blocks.length, 2);
  assert.equal(result.skipped.length, 6);
});

test('a peer (another server) is interleaved with our models: same schedule, same requests, its own model id', async () => {
  const peer = await startFakeServer({ models: [{ id: 'models/bench-110m-q8_0.gguf' }], style: 'llamacpp' });
  try {
    server.received.length = 0;
    const result = await runPlan(plan(['A', 'D', 'llamacpp-q8_0'], { targets: { 'llamacpp-q8_0': { baseUrl: peer.url, model: 'models/bench-110m-q8_0.gguf' } } }));
    const order = planBlocks(['A', 'D', 'llamacpp-q8_0'], [1, 3], 2);
    assert.deepEqual(result.blocks.map((b) => b.block), order, 'the peer takes its turn in the rotation like a model');
    const starts = result.blocks.map((b) => Math.min(...b.records.map((r) => r.start_s)));
    assert.deepEqual(starts, [...starts].sort((a, b) => a - b), 'blocks ran one after another in that order');
    const peerBlocks = result.blocks.filter((b) => b.block.model === 'llamacpp-q8_0');
    assert.equal(peerBlocks.length, 4);
    for (const b of peerBlocks) {
      assert.ok(b.records.every((r) => r.ok && r.model === 'llamacpp-q8_0' && r.output_tokens === 4 && r.itl_s.length === 3), 'records carry the peer name; the closing chunk is no token');
    }
    // every peer request went to the peer, with the peer's model id; ours did not
    assert.equal(peer.received.length, 2 * 1 + 2 * 3, 'requestsPerLevel(c) = 2c at levels 1 and 3');
    assert.ok(peer.received.every((r) => r.model === 'models/bench-110m-q8_0.gguf'));
    assert.ok(server.received.every((r) => r.model === 'A' || r.model === 'D'));
    // the same request shape: for each (level, round, index) the peer got A's prompt and fields
    const shape = (b: Record<string, unknown>) => JSON.stringify({ ...b, model: undefined });
    const ours = server.received.filter((r) => r.model === 'A').map((r) => shape(r.body));
    assert.deepEqual(peer.received.map((r) => shape(r.body)), ours);
    assert.deepEqual(Object.keys(peer.received[0].body).sort(), ['ignore_eos', 'max_tokens', 'model', 'prompt', 'seed', 'stream', 'stream_options', 'temperature']);
    assert.deepEqual([peer.received[0].body.temperature, peer.received[0].body.ignore_eos, peer.received[0].body.stream_options], [0, true, { include_usage: true }]);
  } finally {
    await peer.close();
  }
});

test('a peer that is down is measured to the end: every request an error, the run goes on', async () => {
  const port = await freePort();
  const result = await runPlan(plan(['A', 'gone'], { concurrencies: [2], rounds: 1, requestsPerLevel: () => 4, targets: { gone: { baseUrl: `http://127.0.0.1:${port}`, model: 'gone' } } }));
  const stats = (m: string) => runStats(m, 0, 2, result.blocks.filter((b) => b.block.model === m).flatMap((b) => b.records), 1);
  assert.deepEqual([stats('A').requests, stats('A').errors], [4, 0]);
  assert.deepEqual([stats('gone').requests, stats('gone').errors, stats('gone').output_tokens], [4, 4, 0]);
  assert.match(stats('gone').error_samples[0], /ECONNREFUSED/);
});
