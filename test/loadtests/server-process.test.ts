import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { hasModels, precisionOf, selectModels } from '../../loadtests/models.js';
import { ServerProcess, freePort, listModels, waitForServer } from '../../loadtests/server-process.js';
import { FAKE_MODELS } from './fake-server.js';

const script = path.join(__dirname, 'fake-server.js');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'server-process-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

test('a spawned server is waited for until every model is listed, then stopped (and gone)', async () => {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const server = ServerProcess.start(process.execPath, [script, '--port', String(port)], { cwd: tmp, logFile: path.join(tmp, 'a.log') });
  try {
    const cards = await waitForServer(url, (c) => hasModels(c, null, [0.25, 0.5]), 30, { alive: () => server.failure() });
    assert.deepEqual(cards.map((c) => c.id), FAKE_MODELS.map((m) => m.id));
  } finally {
    await server.stop();
  }
  assert.equal(alive(server.pid!), false);
  assert.equal(await listModels(url), null, 'nothing answers on the port any more');
  assert.match(fs.readFileSync(path.join(tmp, 'a.log'), 'utf8'), /fake server listening/);
  await server.stop(); // idempotent
});

test('a server that exits while starting fails the wait with its log tail', async () => {
  const port = await freePort();
  const server = ServerProcess.start(process.execPath, [script, '--exit-after-ms', '100'], { cwd: tmp, logFile: path.join(tmp, 'b.log') });
  await assert.rejects(
    waitForServer(`http://127.0.0.1:${port}`, () => true, 30, { alive: () => server.failure(), intervalMs: 50 }),
    /the server exited early \(exit code 3\)[\s\S]*failing on purpose/,
  );
  await server.stop();
});

test('waiting times out naming what was seen', async () => {
  const port = await freePort();
  await assert.rejects(waitForServer(`http://127.0.0.1:${port}`, () => true, 0.2, { intervalMs: 50 }), /not ready after 0.2 s \(models seen: none\)/);
});

test('selectModels picks the dense entry and its variants by sparsity, in the asked order', () => {
  const sel = selectModels(FAKE_MODELS, null, [0.5, 0.25]).byPrecision[0];
  assert.equal(sel.dense.id, 'synth');
  assert.deepEqual(sel.sliced.map((c) => c.id), ['synth-sliced-0.5', 'synth-sliced-0.25']);
  assert.deepEqual(selectModels(FAKE_MODELS, 'synth', null).byPrecision[0].sliced.map((c) => c.id), ['synth-sliced-0.25', 'synth-sliced-0.5']);
  assert.throws(() => selectModels(FAKE_MODELS, null, [0.3]), /no variant of "synth" sliced at sparsity 0.3 in \/v1\/models \(offered: synth, synth-sliced-0.25, synth-sliced-0.5\)/);
  assert.throws(() => selectModels(FAKE_MODELS.slice(1), null, []), /no dense model/);
  assert.equal(hasModels(FAKE_MODELS.slice(0, 2), null, [0.25, 0.5]), false);
});

test('selectModels picks every precision of the dense model and its slices (serve --quantize)', () => {
  const q = (id: string, method: string, slicing?: (typeof FAKE_MODELS)[number]['slicing']) => ({
    id, root: 'synth', parent: 'synth', precision: method, ...(slicing ? { slicing } : {}),
    quantization: { method, linear: { bits: method === 'int4' ? 4 : 8, block_size: 32, symmetric: false }, head: null, shortcuts: null },
  });
  const cards = [...FAKE_MODELS, q('synth-int4', 'int4'), q('synth-sliced-0.25-int4', 'int4', FAKE_MODELS[1].slicing), q('synth-int8', 'int8')];
  const sel = selectModels(cards, null, [0.25], ['int4', 'none']);
  assert.equal(sel.root, 'synth');
  assert.deepEqual(sel.byPrecision.map((p) => [p.precision, p.dense.id, p.sliced.map((c) => c.id)]), [
    ['int4', 'synth-int4', ['synth-sliced-0.25-int4']],
    ['none', 'synth', ['synth-sliced-0.25']],
  ]);
  assert.throws(() => selectModels(cards, null, [0.25], ['int8']), /no variant of "synth" sliced at sparsity 0.25 at int8 in \/v1\/models/);
  assert.throws(() => selectModels(FAKE_MODELS, null, [], ['int4']), /no dense model "synth" at int4 in \/v1\/models .*; serve it with --quantize int4/);
  assert.equal(precisionOf(cards[3]), 'int4');
  assert.equal(precisionOf(FAKE_MODELS[0]), 'none', 'a card without precision (an older server) is float');
});
