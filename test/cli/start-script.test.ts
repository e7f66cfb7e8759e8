import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';

const REPO = path.resolve(__dirname, '..', '..', '..');
const SCRIPT = path.join(REPO, 'scripts', 'start.sh');

/**
 * Runs scripts/start.sh with a fake `node` first on PATH that prints its pid, GLIBC_TUNABLES and
 * arguments, and returns them with the pid of the shell that was started.
 */
function runStart(env: Record<string, string>, args: string[]): { shellPid: number; nodePid: number; tunables: string; argv: string[] } {
  const bin = fs.mkdtempSync(path.join(os.tmpdir(), 'fake-node-'));
  fs.writeFileSync(path.join(bin, 'node'), '#!/bin/sh\necho "$$"\necho "${GLIBC_TUNABLES-<unset>}"\nfor a in "$@"; do echo "$a"; done\n', { mode: 0o755 });
  // The wrapper prints its own pid, then execs the script: with `exec node` in the script, the
  // fake node runs in that same process.
  const r = spawnSync('sh', ['-c', 'echo "$$"; exec sh "$0" "$@"', SCRIPT, ...args], { env: { PATH: `${bin}:/usr/bin:/bin`, ...env }, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const [shellPid, nodePid, tunables, ...argv] = r.stdout.trimEnd().split('\n');
  return { shellPid: Number(shellPid), nodePid: Number(nodePid), tunables, argv };
}

test('npm start (scripts/start.sh) adds glibc.malloc.hugetlb=1, keeps an explicit choice, passes arguments, and execs node', () => {
  const plain = runStart({}, ['--port', '8190']);
  assert.equal(plain.tunables, 'glibc.malloc.hugetlb=1');
  assert.deepEqual([path.resolve(plain.argv[0]), ...plain.argv.slice(1)], [path.join(REPO, 'bin', 'sliceserve.js'), 'serve', '--port', '8190']);
  assert.equal(plain.nodePid, plain.shellPid, 'node replaces the shell, so signals sent to it reach the server');
  assert.equal(runStart({ GLIBC_TUNABLES: 'glibc.malloc.arena_max=2' }, []).tunables, 'glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1');
  assert.equal(runStart({ GLIBC_TUNABLES: 'glibc.malloc.hugetlb=0' }, []).tunables, 'glibc.malloc.hugetlb=0');
  assert.equal(runStart({ GLIBC_TUNABLES: 'glibc.malloc.arena_max=2:glibc.malloc.hugetlb=2' }, []).tunables, 'glibc.malloc.arena_max=2:glibc.malloc.hugetlb=2');
});

test('package.json starts the server through the script with exec', () => {
  const pkg = JSON.parse(fs.readFileSync(path.join(REPO, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
  assert.equal(pkg.scripts.start, 'exec sh scripts/start.sh');
});
