import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { makeDirectories, makeTempDirectory } from '../../models/dirs.js';
import { saveHuggingFaceModel } from '../../models/huggingface.js';
import { loadModel } from '../../models/load.js';

test('makeDirectories creates missing parents, is idempotent, and names a file in the way', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dirs-'));
  try {
    const deep = path.join(tmp, 'a', 'b', 'c');
    makeDirectories(deep);
    assert.ok(fs.statSync(deep).isDirectory());
    makeDirectories(deep);
    fs.writeFileSync(path.join(tmp, 'file'), 'x');
    assert.throws(() => makeDirectories(path.join(tmp, 'file', 'sub')), /cannot create .*file[/\\]sub: .*not a directory/);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});

test('makeDirectories makes a parent again that another process removed meanwhile, and names a dangling link in the way', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dirs-'));
  const original = fs.mkdirSync;
  try {
    const area = path.join(tmp, 'staging');
    fs.mkdirSync(area);
    let removed = false;
    // Another writer's cleanup removes the empty staging area between our stat and our mkdir.
    fs.mkdirSync = ((p: fs.PathLike, o?: fs.MakeDirectoryOptions) => {
      if (!removed && String(p) === path.join(area, 'entry')) {
        removed = true;
        fs.rmdirSync(area);
      }
      return original(p, o);
    }) as typeof fs.mkdirSync;
    makeDirectories(path.join(area, 'entry'));
    assert.ok(removed);
    assert.ok(fs.statSync(path.join(area, 'entry')).isDirectory());
    fs.mkdirSync = original;
    fs.symlinkSync(path.join(tmp, 'nowhere'), path.join(tmp, 'dangling'));
    assert.throws(() => makeDirectories(path.join(tmp, 'dangling')), /^Error: cannot create .*dangling: .*dangling exists and is not a directory$/);
  } finally {
    fs.mkdirSync = original;
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});

test('makeDirectories fails under /proc, where Node 20 recursive mkdir never returns', { skip: !fs.existsSync('/proc/self') }, () => {
  // In a child with a time limit: a regression would spin for ever, not throw.
  const script = `require(${JSON.stringify(path.join(__dirname, '..', '..', 'models', 'dirs.js'))}).makeDirectories('/proc/sliceserve-no/such'); console.log('created')`;
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 20_000 });
  assert.equal(r.error, undefined, 'the child finished in time');
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /cannot create \/proc\/sliceserve-no\/such: ENOENT/);
});

test('makeTempDirectory and written model folders have the mode of a plain mkdir (umask), not 0700', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dirs-'));
  try {
    const plain = path.join(tmp, 'plain');
    fs.mkdirSync(plain);
    const mode = (p: string) => fs.statSync(p).mode & 0o777;
    const a = makeTempDirectory(path.join(tmp, 'x-'));
    const b = makeTempDirectory(path.join(tmp, 'x-'));
    assert.notEqual(a, b);
    assert.match(path.basename(a), /^x-[0-9a-f]{12}$/);
    assert.equal(mode(a), mode(plain));
    const out = path.join(tmp, 'model');
    saveHuggingFaceModel(loadModel('models/stories260K'), out);
    assert.equal(mode(out), mode(plain));
    assert.deepEqual(fs.readdirSync(tmp).filter((n) => n.includes('.tmp-')), [], 'no temporary folder left');
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});
