import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { hugePageAdvice, hugePageStatus, withMallocHugePages } from '../../runtime/huge-pages.js';

/** A THP mode file with `content`, as the kernel writes it. */
function thpFile(content: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'thp-'));
  const file = path.join(dir, 'enabled');
  fs.writeFileSync(file, content);
  return file;
}

test('huge pages are active with THP "always", or "madvise" plus glibc.malloc.hugetlb=1', () => {
  const madvise = thpFile('always [madvise] never\n');
  const always = thpFile('[always] madvise never\n');
  const never = thpFile('always madvise [never]\n');
  const tuned = { GLIBC_TUNABLES: 'glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1' };
  assert.deepEqual(hugePageStatus(tuned, madvise), { transparentHugePages: 'madvise', mallocHugetlb: '1', active: true });
  assert.deepEqual(hugePageStatus({}, madvise), { transparentHugePages: 'madvise', mallocHugetlb: null, active: false });
  assert.deepEqual(hugePageStatus({ GLIBC_TUNABLES: 'glibc.malloc.hugetlb=0' }, madvise), { transparentHugePages: 'madvise', mallocHugetlb: '0', active: false });
  assert.deepEqual(hugePageStatus({}, always), { transparentHugePages: 'always', mallocHugetlb: null, active: true });
  assert.deepEqual(hugePageStatus(tuned, never), { transparentHugePages: 'never', mallocHugetlb: '1', active: false });
  assert.deepEqual(hugePageStatus(tuned, path.join(os.tmpdir(), 'no-such-dir-thp', 'enabled')), { transparentHugePages: null, mallocHugetlb: '1', active: false });
  // glibc applies the entries in order: the last one of a name is in effect.
  assert.deepEqual(hugePageStatus({ GLIBC_TUNABLES: 'glibc.malloc.hugetlb=0:glibc.malloc.hugetlb=1' }, madvise), { transparentHugePages: 'madvise', mallocHugetlb: '1', active: true });
  assert.equal(hugePageStatus({ GLIBC_TUNABLES: 'glibc.malloc.hugetlb=1:glibc.malloc.hugetlb=0' }, madvise).active, false);
});

test('withMallocHugePages adds the tunable, keeps other tunables and an explicit choice, and copies the env', () => {
  const empty: NodeJS.ProcessEnv = { PATH: '/bin' };
  const added = withMallocHugePages(empty);
  assert.equal(added.GLIBC_TUNABLES, 'glibc.malloc.hugetlb=1');
  assert.equal(added.PATH, '/bin');
  assert.equal(empty.GLIBC_TUNABLES, undefined, 'the input is not modified');
  assert.equal(withMallocHugePages({ GLIBC_TUNABLES: 'glibc.malloc.arena_max=2' }).GLIBC_TUNABLES, 'glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1');
  assert.equal(withMallocHugePages({ GLIBC_TUNABLES: 'glibc.malloc.hugetlb=0' }).GLIBC_TUNABLES, 'glibc.malloc.hugetlb=0');
  // What the server then reports for the child's environment.
  assert.equal(hugePageStatus(withMallocHugePages({}), thpFile('always [madvise] never')).active, true);
});

test('the startup advice names the fix only where the tunable would help', () => {
  assert.match(hugePageAdvice({ transparentHugePages: 'madvise', mallocHugetlb: null, active: false }), /GLIBC_TUNABLES=glibc\.malloc\.hugetlb=1/);
  assert.match(hugePageAdvice({ transparentHugePages: 'madvise', mallocHugetlb: '1', active: true }), /^weights on transparent huge pages$/);
  assert.doesNotMatch(hugePageAdvice({ transparentHugePages: 'never', mallocHugetlb: null, active: false }), /GLIBC_TUNABLES/);
  assert.match(hugePageAdvice({ transparentHugePages: null, mallocHugetlb: null, active: false }), /unavailable/);
  // An explicit other value is reported as such, not answered with "start with ...=1".
  assert.match(hugePageAdvice({ transparentHugePages: 'madvise', mallocHugetlb: '0', active: false }), /^weights on 4 KiB pages \(GLIBC_TUNABLES sets glibc\.malloc\.hugetlb=0\)/);
  assert.match(hugePageAdvice({ transparentHugePages: 'madvise', mallocHugetlb: '2', active: false }), /hugetlbfs/);
});
