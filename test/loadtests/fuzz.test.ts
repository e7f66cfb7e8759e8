/**
 * The fuzzer (loadtests/fuzz.ts), a short run in CI: every category against a real server in
 * this process, 0 5xx, 0 answers outside the OpenAI error shape, healthy and golden after each
 * category. `npm run fuzz` runs the full set (~1,300 inputs).
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { assertLoopback, fuzzTotals, openAIErrorProblem, runFuzz } from '../../loadtests/fuzz.js';
import { startTestServer, type TestServer } from '../server/helpers.js';

let t: TestServer;
before(async () => {
  t = await startTestServer({ maxQueue: 64 });
});
after(() => t.server.shutdown(1000));

test('openAIErrorProblem accepts the OpenAI error shape only', () => {
  assert.equal(openAIErrorProblem({ error: { message: 'm', type: 'invalid_request_error', param: null, code: null } }), null);
  assert.equal(openAIErrorProblem({ error: { message: 'm', type: 't', param: 'model', code: 'x' } }), null);
  assert.match(openAIErrorProblem({ error: { message: '', type: 't', param: null, code: null } }) ?? '', /message/);
  assert.match(openAIErrorProblem({ error: { message: 'm', type: 't', param: 1, code: null } }) ?? '', /param/);
  assert.match(openAIErrorProblem({ error: { message: 'm', type: 't', param: null, code: null }, extra: 1 }) ?? '', /top-level keys/);
  assert.match(openAIErrorProblem('Bad Request') ?? '', /not a JSON object/);
  assert.match(openAIErrorProblem({ detail: 'x' }) ?? '', /top-level keys/);
});

test('the fuzzer targets loopback addresses only', () => {
  for (const ok of ['http://127.0.0.1:8080', 'http://127.1.2.3:1', 'http://localhost:3000', 'http://[::1]:8080']) assert.doesNotThrow(() => assertLoopback(ok));
  for (const bad of ['http://10.0.0.1:8080', 'http://192.168.1.2', 'http://example.com', 'http://0.0.0.0:8080']) assert.throws(() => assertLoopback(bad), /only 127\.0\.0\.0\/8/);
});

test('a short fuzz run: every category, 0 5xx, 0 shape violations, healthy after each', { timeout: 300_000 }, async () => {
  const results = await runFuzz({ url: t.url, scale: 0.15, seed: 7 });
  assert.deepEqual(results.map((r) => r.category), ['completion-fields', 'bodies', 'model-names', 'slices-fields', 'routes', 'raw-http', 'ws-handshake', 'ws-messages']);
  const totals = fuzzTotals(results);
  assert.ok(totals.inputs >= 300, `${totals.inputs} inputs`);
  assert.deepEqual(results.flatMap((r) => r.violations), []);
  assert.equal(totals.serverErrors, 0);
  assert.equal(totals.unhealthy, 0);
  // The run did reach the parser, the handshake and the frame checks.
  const outcomes = Object.assign({}, ...results.map((r) => r.outcomes)) as Record<string, number>;
  assert.ok(outcomes['431'] >= 1 && outcomes['ws:close 1002'] >= 1 && outcomes['405'] >= 1, JSON.stringify(outcomes));
});
