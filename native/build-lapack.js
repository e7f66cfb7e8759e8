#!/usr/bin/env node
'use strict';
// Builds the optional LAPACK addon (native/lapack -> native/lapack/build/Release/sliceserve_lapack.node)
// that slicer/linalg uses for fast symmetric eigendecompositions. Never runs at install time.
//
// Usage: npm run build:lapack [-- --optional]
//   --optional   exit 0 with a one-line note when a prerequisite is missing (for CI scripts that
//                build the addon only where the system libraries are installable).
// Prerequisites: a C compiler and make, Node's headers (shipped with the node binary, or pass
// --nodedir through SLICESERVE_NODEDIR), and LAPACK: `apt-get install liblapack-dev libopenblas-dev`
// on Debian/Ubuntu (OpenBLAS is 5-10x faster than the reference LAPACK). Link flags can be
// overridden with SLICESERVE_LAPACK_LIBS (default "-llapack").
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const optional = process.argv.includes('--optional');
const addonDir = path.join(__dirname, 'lapack');
const builtAddon = path.join(addonDir, 'build', 'Release', 'sliceserve_lapack.node');
const libs = process.env.SLICESERVE_LAPACK_LIBS || '-llapack';

function fail(message) {
  if (optional) {
    console.log(`build:lapack: skipped (${message}); slicer/linalg will use the JS eigensolver`);
    process.exit(0);
  }
  console.error(`build:lapack: ${message}`);
  process.exit(1);
}

/** Directory with include/node/node_api.h, so node-gyp does not try to download headers. */
function findNodeDir() {
  const candidates = [process.env.SLICESERVE_NODEDIR, path.resolve(process.execPath, '..', '..')];
  return candidates.find((d) => d && fs.existsSync(path.join(d, 'include', 'node', 'node_api.h')));
}

/** node-gyp: the one npm puts on PATH for scripts, else the copy bundled with npm. */
function findNodeGyp() {
  const candidates = [
    process.env.npm_config_node_gyp,
    path.resolve(process.execPath, '..', '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
  ];
  try {
    candidates.push(require.resolve('node-gyp/bin/node-gyp.js'));
  } catch {
    // not installed locally: fine
  }
  return candidates.find((p) => p && fs.existsSync(p));
}

/** Links a tiny program that calls dsyevd_ to tell "no LAPACK" apart from other build errors. */
function lapackLinks() {
  const cc = process.env.CC || 'cc';
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sliceserve-lapack-'));
  try {
    const src = path.join(dir, 'probe.c');
    fs.writeFileSync(src, 'extern void dsyevd_(void);\nint main(void) { dsyevd_(); return 0; }\n');
    const r = spawnSync(cc, [src, '-o', path.join(dir, 'probe'), ...libs.split(/\s+/).filter(Boolean)], {
      encoding: 'utf8',
    });
    if (r.error) return `no C compiler (${cc}: ${r.error.message})`;
    return r.status === 0 ? null : `cannot link LAPACK with "${libs}" (install liblapack-dev libopenblas-dev)`;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const nodeDir = findNodeDir();
if (!nodeDir) fail('Node headers (include/node/node_api.h) not found next to the node binary; set SLICESERVE_NODEDIR');
const nodeGyp = findNodeGyp();
if (!nodeGyp) fail('node-gyp not found (it ships with npm; run this through `npm run build:lapack`)');
const linkProblem = lapackLinks();
if (linkProblem) fail(linkProblem);

const build = spawnSync(process.execPath, [nodeGyp, 'rebuild', `--nodedir=${nodeDir}`, '--loglevel=warn'], {
  cwd: addonDir,
  stdio: 'inherit',
  env: { ...process.env, SLICESERVE_LAPACK_LIBS: libs },
});
if (build.status !== 0) {
  console.error('build:lapack: node-gyp failed (see the compiler output above)');
  process.exit(1);
}

// Smoke test in a child process: [[2,1],[1,2]] has eigenvalues 3 and 1.
const check = spawnSync(
  process.execPath,
  [
    '-e',
    `const m = require(${JSON.stringify(builtAddon)});
     const r = m.eigh(new Float64Array([2, 1, 1, 2]), 2);
     if (Math.abs(r.values[0] - 3) > 1e-12 || Math.abs(r.values[1] - 1) > 1e-12) process.exit(2);
     console.log(m.implementation().split(' ').slice(0, 2).join(' '));`,
  ],
  { encoding: 'utf8' },
);
if (check.status !== 0) {
  console.error(`build:lapack: the built addon failed its smoke test\n${check.stderr}`);
  process.exit(1);
}
console.log(`build:lapack: built ${path.relative(process.cwd(), builtAddon)} (${check.stdout.trim()})`);
