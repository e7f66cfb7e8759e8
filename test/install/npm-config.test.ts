/**
 * `npm ci` stays offline and quiet (issue 15): onnxruntime-node's postinstall, which downloads
 * CUDA binaries from NuGet, is denied through npm's install-script policy (`allowScripts` in
 * package.json, read by npm 11.19 and enforced by default from npm's next major), not through
 * an `.npmrc` key that npm does not know (npm 11 warns "Unknown project config" for those and
 * says they stop working in the next major). `.ci/run` also runs `npm ci` in a fresh clone and
 * fails on any npm warning or a downloaded CUDA provider.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { REPO_ROOT } from '../models/helpers.js';

const pkg = JSON.parse(fs.readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')) as { allowScripts?: Record<string, boolean>; devEngines?: { packageManager?: { name: string; version: string } } };
const lock = JSON.parse(fs.readFileSync(path.join(REPO_ROOT, 'package-lock.json'), 'utf8')) as { packages: Record<string, { hasInstallScript?: boolean }> };

test('every dependency with an install script is reviewed in allowScripts; onnxruntime-node is denied', () => {
  const withScripts = Object.entries(lock.packages)
    .filter(([, p]) => p.hasInstallScript)
    .map(([where]) => where.slice(where.lastIndexOf('node_modules/') + 'node_modules/'.length))
    .sort();
  assert.ok(withScripts.includes('onnxruntime-node'), 'the lockfile records onnxruntime-node as having an install script');
  assert.deepEqual(withScripts.filter((name) => pkg.allowScripts?.[name] === undefined), [], 'unreviewed install scripts');
  assert.equal(pkg.allowScripts?.['onnxruntime-node'], false);
  assert.equal(pkg.devEngines?.packageManager?.name, 'npm');
});

test('.npmrc sets nothing npm would not know (comments only)', () => {
  const file = path.join(REPO_ROOT, '.npmrc');
  const settings = fs.existsSync(file) ? fs.readFileSync(file, 'utf8').split('\n').filter((l) => l.trim() !== '' && !/^\s*[#;]/.test(l)) : [];
  assert.deepEqual(settings, []);
});

test('npm reads the project config without a warning', () => {
  const r = spawnSync('npm', ['config', 'list'], { cwd: REPO_ROOT, encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, r.stderr);
  assert.doesNotMatch(r.stderr, /npm warn/i);
});
