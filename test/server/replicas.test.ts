/**
 * Two server processes on one slice cache directory (as two replicas on a shared volume): asked
 * for the same slice at once they compute it once (the cache lock) and both serve it; a slice
 * made on one is loaded by the other without recomputing, through POST /v1/slices or by a
 * request naming it (a retryable 503 while it loads); the cache holds one intact artifact.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { loadSlicedArtifact } from '../../slicer/artifact.js';
import { DENSE, ROOT, errorOf, get, post, waitFor } from './helpers.js';

interface Replica {
  proc: ChildProcess;
  url: string;
  logs: Record<string, any>[];
}

let cacheDir: string;
const replicas: Replica[] = [];

/** Starts `sliceserve serve --dense-only` on a free port with the shared cache; resolves once ready. */
async function startReplica(): Promise<Replica> {
  const proc = spawn(
    process.execPath,
    [path.join(ROOT, 'bin', 'sliceserve.js'), 'serve', '--dense-only', '--port', '0', '--threads', '1', '--cal-windows', '16', '--log-level', 'info'],
    { env: { ...process.env, SLICESERVE_CACHE_DIR: cacheDir }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const logs: Record<string, any>[] = [];
  let buffered = '';
  proc.stdout!.on('data', (chunk) => {
    buffered += String(chunk);
    const lines = buffered.split('\n');
    buffered = lines.pop()!;
    for (const line of lines) if (line.trim()) logs.push(JSON.parse(line));
  });
  let stderr = '';
  proc.stderr!.on('data', (c) => (stderr += String(c)));
  await waitFor(() => logs.some((l) => l.msg === 'ready') || proc.exitCode !== null, 30_000, 'replica ready');
  if (proc.exitCode !== null) throw new Error(`replica exited: ${stderr}`);
  return { proc, url: logs.find((l) => l.msg === 'listening')!.url, logs };
}

async function settle(url: string, id: string): Promise<any> {
  let job: any;
  await waitFor(async () => {
    job = (await get(`${url}/v1/slices/${id}`, {})).body;
    return job.status === 'succeeded' || job.status === 'failed';
  }, 90_000, `job ${id}`);
  return job;
}

const greedy = async (url: string, model: string) =>
  (await post(`${url}/v1/completions`, { model, prompt: 'Once upon a time', max_tokens: 20, temperature: 0 }, {})).body.choices[0].text as string;

/** The cache entries (directories) of a model, and what else lies in the cache. */
function cacheEntries(model: string): { entries: string[]; other: string[] } {
  const names = fs.readdirSync(cacheDir);
  return { entries: names.filter((n) => n.startsWith(`${model}-`) && !n.startsWith('.')), other: names.filter((n) => !n.startsWith(`${DENSE}-sliced-`)) };
}

before(async () => {
  cacheDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sliceserve-shared-cache-'));
  replicas.push(...(await Promise.all([startReplica(), startReplica()])));
});
after(async () => {
  for (const r of replicas) {
    r.proc.kill('SIGTERM');
    await new Promise((resolve) => (r.proc.exitCode !== null ? resolve(null) : r.proc.once('exit', resolve)));
  }
  fs.rmSync(cacheDir, { recursive: true, force: true });
});

test('two replicas asked for the same slice at once compute it once and serve the same model', async () => {
  const [a, b] = replicas;
  const model = `${DENSE}-sliced-0.25`;
  const submitted = await Promise.all([a, b].map((r) => post(`${r.url}/v1/slices`, { model: DENSE, sparsity: 0.25 }, {})));
  for (const s of submitted) assert.equal(s.status, 202, JSON.stringify(s.body));
  const jobs = await Promise.all([a, b].map((r, i) => settle(r.url, submitted[i].body.id)));
  assert.deepEqual(jobs.map((j) => j.status), ['succeeded', 'succeeded'], JSON.stringify(jobs));
  // One replica sliced it; the other waited for the lock, then loaded it.
  assert.deepEqual(jobs.map((j) => j.phase).sort(), ['done', 'loaded from cache'].sort(), JSON.stringify(jobs.map((j) => j.phase)));
  const waiter = replicas[jobs.findIndex((j) => j.phase === 'loaded from cache')];
  assert.ok(waiter.logs.some((l) => /waiting for the slice cache lock/.test(l.msg)), 'the second replica waited for the lock');
  const { entries, other } = cacheEntries(model);
  assert.equal(entries.length, 1, `one artifact: ${fs.readdirSync(cacheDir)}`);
  assert.deepEqual(other, [], 'no temporary directory or lock left behind');
  const artifact = await loadSlicedArtifact(path.join(cacheDir, entries[0]));
  assert.equal(artifact.config.sliceserve?.sparsity, 0.25);
  assert.equal(await greedy(a.url, model), await greedy(b.url, model));
});

test('a slice made on one replica is loaded by the other: through POST /v1/slices, or by a request naming it', async () => {
  const [a, b] = replicas;
  const made = await post(`${a.url}/v1/slices`, { model: DENSE, sparsity: 0.5 }, {});
  const computed = await settle(a.url, made.body.id);
  assert.equal(computed.phase, 'done');
  const reused = await settle(b.url, (await post(`${b.url}/v1/slices`, { model: DENSE, sparsity: 0.5 }, {})).body.id);
  assert.deepEqual([reused.status, reused.phase], ['succeeded', 'loaded from cache']);
  // A third sparsity, made on b; a completion on a names it: a retryable 503 while a loads it from the cache.
  const third = `${DENSE}-sliced-0.375`;
  await settle(b.url, (await post(`${b.url}/v1/slices`, { model: DENSE, sparsity: 0.375 }, {})).body.id);
  const first = await post(`${a.url}/v1/completions`, { model: third, prompt: 'Once upon a time', max_tokens: 5 }, {});
  assert.equal(first.status, 503, JSON.stringify(first.body));
  assert.equal(errorOf(first.body).code, 'model_loading');
  assert.ok(Number(first.headers.get('retry-after')) >= 1);
  await waitFor(async () => (await post(`${a.url}/v1/completions`, { model: third, prompt: 'Once upon a time', max_tokens: 5 }, {})).status === 200, 60_000, 'a serves the discovered slice');
  const jobs = (await get(`${a.url}/v1/slices`, {})).body.data;
  assert.equal(jobs.find((j: any) => j.model === third).phase, 'loaded from cache');
  assert.equal(await greedy(a.url, third), await greedy(b.url, third));
  assert.equal((await post(`${a.url}/v1/completions`, { model: `${DENSE}-sliced-0.9`, prompt: 'x' }, {})).status, 404, 'a slice nobody cached is unknown');
});
