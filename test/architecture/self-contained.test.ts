/**
 * `npm test` must pass on a fresh clone that has no `../shared` beside it (brief; issue 15):
 * no test source names a path above the repository. `.ci/run` also runs the whole suite from a
 * clone in a directory without `../shared`; this check names the offending line at once.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { REPO_ROOT } from '../models/helpers.js';

function sources(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return e.name === 'fixtures' ? [] : sources(p);
    return e.name.endsWith('.ts') ? [p] : [];
  });
}

/** `../shared`, `'..', 'shared'` and absolute workspace paths, in code (comments included: they are cheap to fix). */
const OUTSIDE = [/\.\.\/shared\b/, /'\.\.',\s*'shared'/, /\/work\/shared\b/];

test('no test source reads a path outside the repository (../shared)', () => {
  const hits: string[] = [];
  const self = path.join(REPO_ROOT, 'test', 'architecture', 'self-contained.test.ts');
  for (const file of sources(path.join(REPO_ROOT, 'test')).filter((f) => f !== self)) {
    fs.readFileSync(file, 'utf8')
      .split('\n')
      .forEach((line, i) => {
        if (OUTSIDE.some((re) => re.test(line))) hits.push(`${path.relative(REPO_ROOT, file)}:${i + 1}: ${line.trim()}`);
      });
  }
  assert.deepEqual(hits, []);
});

test('the check itself finds such a line', () => {
  assert.ok(OUTSIDE.some((re) => re.test("calibrationFile: '../shared/data/x.txt'")));
  assert.ok(OUTSIDE.some((re) => re.test("path.resolve(REPO_ROOT, '..', 'shared', 'data')")));
  assert.ok(!OUTSIDE.some((re) => re.test("path.join(REPO_ROOT, 'data', 'x.txt')")));
});
