/**
 * Integrity of the slice cache (slicer/cache.ts, issue 15): hashes recorded at write time and
 * checked on load; a corrupt or partial entry is moved aside and the model sliced again;
 * `kill -9` in the middle of a write never leaves an entry that a later load would use.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { loadModel } from '../../models/load.js';
import type { LoadedModel } from '../../models/types.js';
import { CORRUPT_DIR, MANIFEST_FILE, STAGING_DIR, hashFile, openCacheEntry, sweepStaging, verifyCacheEntry, writeCacheEntry } from '../../slicer/cache.js';
import { sliceModelWithReport } from '../../slicer/index.js';
import { REPO_ROOT } from '../models/helpers.js';

const CALIBRATION = path.join(REPO_ROOT, 'data', 'tinystories-train-sample.txt');
const OPTIONS = { sparsity: 0.25, calibrationFile: CALIBRATION, calWindows: 4, calSeqLen: 64 };

let dense: LoadedModel;
let sliced: LoadedModel;
let tmp: string;
before(async () => {
  dense = loadModel(path.join(REPO_ROOT, 'models', 'stories260K'));
  sliced = (await sliceModelWithReport(dense, OPTIONS)).model;
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sliceserve-cache-test-'));
});
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

function freshRoot(name: string): string {
  const root = path.join(tmp, name);
  fs.mkdirSync(root, { recursive: true });
  return root;
}

/** Writes one byte differently at `offset` of a file (size unchanged). */
function flipByte(file: string, offset: number): void {
  const fd = fs.openSync(file, 'r+');
  const b = Buffer.alloc(1);
  fs.readSync(fd, b, 0, 1, offset);
  b[0] ^= 0xff;
  fs.writeSync(fd, b, 0, 1, offset);
  fs.closeSync(fd);
}

test('an entry records the size and SHA-256 of every file, and opens to the same weights', async () => {
  const entry = path.join(freshRoot('roundtrip'), 'e');
  await writeCacheEntry(sliced, entry);
  const manifest = JSON.parse(fs.readFileSync(path.join(entry, MANIFEST_FILE), 'utf8'));
  assert.equal(manifest.format, 1);
  const files = fs.readdirSync(entry).filter((n) => n !== MANIFEST_FILE).sort();
  assert.deepEqual(Object.keys(manifest.files).sort(), files);
  assert.ok(files.includes('model.safetensors') && files.includes('config.json'));
  for (const name of files) assert.deepEqual(manifest.files[name], hashFile(path.join(entry, name)));
  assert.equal(verifyCacheEntry(entry), null);
  const opened = await openCacheEntry(entry, 'x');
  assert.ok('model' in opened);
  for (const [name, t] of sliced.weights) assert.deepEqual(opened.model.weights.get(name)?.data, t.data, name);
  const staging = path.join(path.dirname(entry), STAGING_DIR);
  assert.ok(!fs.existsSync(staging) || fs.readdirSync(staging).length === 0, 'the staging area is left empty or removed');
});

test('each kind of damage is detected and named', async () => {
  const root = freshRoot('damage');
  const cases: [string, (entry: string) => void, RegExp][] = [
    ['one byte of the weights changed', (e) => flipByte(path.join(e, 'model.safetensors'), 4000), /model\.safetensors has SHA-256 [0-9a-f]{16}\.\.\., [0-9a-f]{16}\.\.\. was written/],
    ['weights truncated (a partial write)', (e) => fs.truncateSync(path.join(e, 'model.safetensors'), 1000), /model\.safetensors has 1000 bytes, \d+ were written/],
    ['config.json deleted', (e) => fs.rmSync(path.join(e, 'config.json')), /config\.json: ENOENT/],
    ['no manifest', (e) => fs.rmSync(path.join(e, MANIFEST_FILE)), /no sliceserve-manifest\.json/],
    ['manifest garbage', (e) => fs.writeFileSync(path.join(e, MANIFEST_FILE), '{"format": 1, "files":'), /sliceserve-manifest\.json is unreadable/],
    ['manifest lists nothing', (e) => fs.writeFileSync(path.join(e, MANIFEST_FILE), '{"format": 1, "files": {}}'), /not a format-1 manifest listing files/],
    ['manifest points outside', (e) => fs.writeFileSync(path.join(e, MANIFEST_FILE), '{"format": 1, "files": {"../x": {"bytes": 1, "sha256": "00"}}}'), /outside the entry/],
  ];
  for (const [what, damage, message] of cases) {
    const entry = path.join(root, what.replace(/\W+/g, '-'));
    await writeCacheEntry(sliced, entry);
    damage(entry);
    assert.match(verifyCacheEntry(entry) ?? 'accepted', message, what);
    const opened = await openCacheEntry(entry, 'x');
    assert.ok('problem' in opened, what);
  }
});

test('sliceModel: a corrupt cached slice is moved aside, recomputed to the same weights, and reported once', async () => {
  const cacheDir = freshRoot('slice');
  const first = await sliceModelWithReport(dense, { ...OPTIONS, cacheDir });
  assert.equal(first.report.cached, false);
  const entry = first.report.dir;
  assert.equal(verifyCacheEntry(entry), null);
  assert.equal((await sliceModelWithReport(dense, { ...OPTIONS, cacheDir })).report.cached, true);

  flipByte(path.join(entry, 'model.safetensors'), 5000);
  const warnings: string[] = [];
  const third = await sliceModelWithReport(dense, { ...OPTIONS, cacheDir, onWarning: (m) => warnings.push(m) });
  assert.equal(third.report.cached, false, 'sliced again');
  assert.equal(warnings.length, 1);
  assert.match(warnings[0], /the cached slice .* cannot be used \(model\.safetensors has SHA-256 .*\); moved to .*\.corrupt.*, slicing stories260K-sliced-0\.25 again/);
  for (const [name, t] of first.model.weights) assert.deepEqual(third.model.weights.get(name)?.data, t.data, name);
  const aside = fs.readdirSync(path.join(cacheDir, CORRUPT_DIR));
  assert.equal(aside.length, 1);
  assert.match(fs.readFileSync(path.join(cacheDir, CORRUPT_DIR, aside[0], 'REASON.txt'), 'utf8'), /model\.safetensors has SHA-256/);
  assert.equal(verifyCacheEntry(entry), null, 'the new entry is whole');
  // A fourth call uses the new entry.
  const fourth = await sliceModelWithReport(dense, { ...OPTIONS, cacheDir, onWarning: (m) => warnings.push(m) });
  assert.equal(fourth.report.cached, true);
  assert.equal(warnings.length, 1);
});

test('sliceModel: an entry without a manifest (an old or unfinished one) is sliced again, not used', async () => {
  const cacheDir = freshRoot('nomanifest');
  const first = await sliceModelWithReport(dense, { ...OPTIONS, cacheDir });
  fs.rmSync(path.join(first.report.dir, MANIFEST_FILE));
  const warnings: string[] = [];
  const again = await sliceModelWithReport(dense, { ...OPTIONS, cacheDir, onWarning: (m) => warnings.push(m) });
  assert.equal(again.report.cached, false);
  assert.match(warnings.join('\n'), /no sliceserve-manifest\.json/);
});

test('kill -9 in the middle of writes never leaves an entry that a later load would use', { timeout: 120_000 }, async () => {
  const source = path.join(tmp, 'source');
  await writeCacheEntry(sliced, source);
  const root = freshRoot('killed');
  const writer = path.join(__dirname, 'cache-writer.js');
  let leftovers = 0;
  const delays = [0, 3, 7, 12, 20, 35, 50, 80, 120, 200];
  for (const delay of delays) {
    const child = spawn(process.execPath, [writer, source, root], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve, reject) => {
      child.stdout.once('data', () => resolve());
      child.once('exit', (code) => reject(new Error(`the writer exited (${code}) before writing`)));
    });
    await new Promise((r) => setTimeout(r, delay));
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await exited;
    // What a later load sees: every entry under its final name is whole.
    for (const name of fs.readdirSync(root).filter((n) => !n.startsWith('.'))) {
      assert.equal(verifyCacheEntry(path.join(root, name)), null, `${name} after kill -9 at ${delay} ms`);
    }
    const staging = path.join(root, STAGING_DIR);
    const left = fs.existsSync(staging) ? fs.readdirSync(staging) : [];
    leftovers += left.length;
    // The next writer removes what the dead one left.
    assert.equal(sweepStaging(root).length, left.length);
    assert.deepEqual(fs.existsSync(staging) ? fs.readdirSync(staging) : [], []); // a finished writer removes the empty staging area
  }
  const entries = fs.readdirSync(root).filter((n) => !n.startsWith('.'));
  assert.ok(entries.length > 0, 'the writers finished some entries');
  assert.ok(leftovers > 0, 'some kills landed in the middle of a write (unfinished staging directories were left)');
  for (const name of entries) assert.ok('model' in (await openCacheEntry(path.join(root, name), name)), name);
});
