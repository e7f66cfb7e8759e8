/**
 * The CLI from a directory that is not the repository (as after `npm i -g` or from a project of
 * one's own): `generate`, `eval` and `slice` find the bundled model and texts; `serve` keeps its
 * slice cache in ~/.cache/sliceserve (or SLICESERVE_CACHE_DIR / XDG_CACHE_HOME), never in the
 * working directory; a model sliced offline (`slice --out DIR`) is served as such by
 * `serve --model DIR`, with its parent and its recorded quality.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { defaultCacheDir } from '../../cli/options.js';
import { GOLDEN, ROOT, get, waitFor } from '../server/helpers.js';

const BIN = path.join(ROOT, 'bin', 'sliceserve.js');
let tmp: string;
let work: string;
let home: string;

/** The environment of a user whose home is `home` (no cache variables set). */
function userEnv(): NodeJS.ProcessEnv {
  const { SLICESERVE_CACHE_DIR: _a, XDG_CACHE_HOME: _b, ...env } = process.env;
  return { ...env, HOME: home, CI: '1' };
}

function run(args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { cwd: work, encoding: 'utf8', env: userEnv() });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sliceserve-anywhere-'));
  work = path.join(tmp, 'work');
  home = path.join(tmp, 'home');
  fs.mkdirSync(work);
  fs.mkdirSync(home);
});
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

test('generate and eval use the bundled model and evaluation text from any directory', () => {
  const g = run(['generate', '--prompt', 'Once upon a time', '--max-tokens', '60', '--temperature', '0']);
  assert.equal(g.code, 0, g.stderr);
  assert.equal(g.stdout, GOLDEN);
  const e = run(['eval', '--windows', '2', '--seq-len', '64', '--json']);
  assert.equal(e.code, 0, e.stderr);
  const result = JSON.parse(e.stdout.trim().split('\n').pop()!);
  assert.equal(result.model, 'stories260K');
  assert.equal(result.tokens, 2 * 63);
  // A path that exists nowhere is still named as the user gave it.
  const missing = run(['eval', '--data', 'nope.txt']);
  assert.notEqual(missing.code, 0);
  assert.match(missing.stderr, /^sliceserve: --data nope\.txt: no such file$/m);
});

test('slice from any directory: bundled model and calibration text; the held-out perplexity of both models is shown and recorded', () => {
  const s = run(['slice', '--sparsity', '0.5', '--cal-windows', '8', '--cal-seq-len', '128', '--held-out-windows', '4', '--out', 'half']);
  assert.equal(s.code, 0, s.stderr);
  const line = s.stdout.split('\n').find((l) => l.startsWith('held-out perplexity'));
  assert.ok(line, s.stdout);
  const m = /^held-out perplexity \(tinystories-valid-sample\.txt, 4 windows x 128 tokens\): dense (\d+\.\d{4}) -> sliced (\d+\.\d{4}) \(\+(\d+\.\d)%\)$/.exec(line);
  assert.ok(m, line);
  const config = JSON.parse(fs.readFileSync(path.join(work, 'half', 'config.json'), 'utf8'));
  const q = config.sliceserve.quality;
  assert.equal(q.dense_perplexity.toFixed(4), m[1]);
  assert.equal(q.perplexity.toFixed(4), m[2]);
  assert.equal((100 * (q.perplexity / q.dense_perplexity - 1)).toFixed(1), m[3]);
  assert.deepEqual([q.file, q.windows, q.seq_len, q.tokens], ['tinystories-valid-sample.txt', 4, 128, 4 * 127]);
  assert.equal(config.sliceserve.calibration.file, 'tinystories-train-sample.txt');
  assert.match(s.stdout, /held-out perplexity \d+\.\d\d s, total/);
  assert.deepEqual(fs.readdirSync(work), ['half'], 'nothing else lands in the working directory');

  const same = run(['slice', '--sparsity', '0.5', '--cal-windows', '8', '--calibration', path.join(ROOT, 'data', 'tinystories-valid-sample.txt'), '--out', 'x']);
  assert.notEqual(same.code, 0);
  assert.match(same.stderr, /^sliceserve: --held-out data\/tinystories-valid-sample\.txt is the calibration text: .*pass another --held-out file, or --held-out-windows 0$/m);
  const none = run(['slice', '--sparsity', '0.5', '--cal-windows', '8', '--cal-seq-len', '128', '--held-out-windows', '0', '--out', 'plain']);
  assert.equal(none.code, 0, none.stderr);
  assert.doesNotMatch(none.stdout, /held-out perplexity \(/);
  assert.equal(JSON.parse(fs.readFileSync(path.join(work, 'plain', 'config.json'), 'utf8')).sliceserve.quality, undefined);
});

test('serve from any directory: the slice cache goes to ~/.cache/sliceserve; an offline slice is served as such', async () => {
  const proc = spawn(
    process.execPath,
    [BIN, 'serve', '--model', 'models/stories260K', '--model', 'half', '--port', '0', '--threads', '1', '--cal-windows', '8', '--held-out-windows', '2', '--log-level', 'info'],
    { cwd: work, env: userEnv(), stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const logs: Record<string, any>[] = [];
  let buffered = '';
  let stderr = '';
  proc.stdout!.on('data', (chunk) => {
    buffered += String(chunk);
    const lines = buffered.split('\n');
    buffered = lines.pop()!;
    for (const l of lines) if (l.trim()) logs.push(JSON.parse(l));
  });
  proc.stderr!.on('data', (c) => (stderr += String(c)));
  try {
    await waitFor(() => logs.some((l) => l.msg === 'ready') || proc.exitCode !== null, 60_000, 'serve ready');
    assert.equal(proc.exitCode, null, stderr);
    const url = logs.find((l) => l.msg === 'listening')!.url;
    const cards = new Map<string, any>((await get(`${url}/v1/models`, {})).body.data.map((c: any) => [c.id, c]));
    assert.deepEqual([...cards.keys()].sort(), ['half', 'stories260K', 'stories260K-sliced-0.25']);
    // The offline slice: not sliced again, its parent and recorded quality kept.
    const half = cards.get('half');
    const recorded = JSON.parse(fs.readFileSync(path.join(work, 'half', 'config.json'), 'utf8')).sliceserve;
    assert.equal(half.parent, 'stories260K');
    assert.equal(half.slicing.sparsity, 0.5);
    assert.equal(half.slicing.hidden_size, 32);
    assert.equal(half.slicing.perplexity, recorded.quality.perplexity);
    assert.equal(half.slicing.dense_perplexity, recorded.quality.dense_perplexity);
    assert.deepEqual(half.slicing.held_out, { file: 'tinystories-valid-sample.txt', windows: 4, seq_len: 128, tokens: 4 * 127 });
    assert.equal((await get(`${url}/v1/slices`, {})).body.data.length, 1, 'only the dense model is sliced at startup');
    // The startup slice is measured on the held-out windows the command line asked for.
    assert.deepEqual(cards.get('stories260K-sliced-0.25').slicing.held_out, { file: 'tinystories-valid-sample.txt', windows: 2, seq_len: 256, tokens: 2 * 255 });
    // Its cache is under $HOME/.cache/sliceserve, not in the working directory.
    const cache = path.join(home, '.cache', 'sliceserve');
    assert.ok(fs.readdirSync(cache).some((n) => n.startsWith('stories260K-sliced-0.25-')), `cache: ${fs.readdirSync(cache)}`);
    assert.deepEqual(fs.readdirSync(work).sort(), ['half', 'plain', 'x'].filter((n) => fs.existsSync(path.join(work, n))).sort());
    assert.ok(!fs.existsSync(path.join(work, '.cache')));
  } finally {
    proc.kill('SIGTERM');
    await new Promise((resolve) => (proc.exitCode !== null ? resolve(null) : proc.once('exit', resolve)));
  }
});

test('defaultCacheDir: SLICESERVE_CACHE_DIR, else XDG_CACHE_HOME/sliceserve, else ~/.cache/sliceserve', () => {
  assert.equal(defaultCacheDir({ SLICESERVE_CACHE_DIR: '/var/cache/sliceserve', XDG_CACHE_HOME: '/x' }, '/home/u'), '/var/cache/sliceserve');
  assert.equal(defaultCacheDir({ XDG_CACHE_HOME: '/xdg' }, '/home/u'), '/xdg/sliceserve');
  assert.equal(defaultCacheDir({ XDG_CACHE_HOME: 'relative' }, '/home/u'), '/home/u/.cache/sliceserve', 'XDG paths must be absolute');
  assert.equal(defaultCacheDir({}, '/home/u'), '/home/u/.cache/sliceserve');
  assert.equal(defaultCacheDir({ SLICESERVE_CACHE_DIR: 'rel/dir' }, '/home/u'), path.resolve('rel/dir'));
});
