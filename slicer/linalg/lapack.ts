/**
 * Loader of the optional LAPACK addon (native/lapack, built by `npm run build:lapack`).
 *
 * The addon is never required for SliceServe to work: when it was not built, or the system
 * LAPACK/OpenBLAS libraries it links are missing, {@link loadLapack} reports why and the
 * eigensolver falls back to JavaScript (see eigh.ts). Nothing is logged here.
 */
import fs from 'node:fs';
import path from 'node:path';

/** What native/lapack/eigh.c exports. */
export interface LapackAddon {
  /**
   * LAPACK `dsyevd` on a symmetric n x n row-major float64 matrix (not modified).
   * Returns eigenvalues DESCENDING and eigenvectors as columns of a row-major n x n array
   * (`vectors[i*n + j]` = component i of eigenvector j). Throws on bad arguments or info != 0.
   */
  eigh(a: Float64Array, n: number): { values: Float64Array; vectors: Float64Array };
  /** OpenBLAS's config string and core name, or "LAPACK" for another implementation. */
  implementation(): string;
}

/** Outcome of {@link loadLapack}: the addon, or the reason it is unavailable. */
export type LapackLoad = { ok: true; addon: LapackAddon; path: string } | { ok: false; reason: string };

/**
 * Where the built addon is looked for: `SLICESERVE_LAPACK_ADDON` if set, else
 * `<repo>/native/lapack/build/Release/sliceserve_lapack.node` (this file compiles to
 * `<repo>/dist/slicer/linalg/lapack.js`).
 */
export function lapackAddonPath(): string {
  const override = process.env.SLICESERVE_LAPACK_ADDON;
  if (override) return path.resolve(override);
  return path.resolve(__dirname, '..', '..', '..', 'native', 'lapack', 'build', 'Release', 'sliceserve_lapack.node');
}

/**
 * The OpenBLAS kernel family to force for a CPU with the given /proc/cpuinfo flags, or
 * undefined to leave OpenBLAS's own detection alone. Debian's OpenBLAS 0.3.21 does not know
 * recent Xeons (e.g. family 6 model 207) and falls back to its slowest generic x86-64
 * kernels ("Prescott"): dsyevd at n = 2048 took 5.2 s instead of 1.9 s with SkylakeX kernels.
 * Only instruction sets the CPU reports are chosen, so the choice cannot fault.
 */
export function openblasCoreTypeFor(flags: ReadonlySet<string>): string | undefined {
  if (['avx512f', 'avx512bw', 'avx512dq', 'avx512vl', 'avx512cd'].every((f) => flags.has(f))) return 'SKYLAKEX';
  if (['avx2', 'fma'].every((f) => flags.has(f))) return 'HASWELL';
  return undefined;
}

/** The first `flags` line of /proc/cpuinfo as a set (empty where there is no such file). */
function cpuFlags(): Set<string> {
  try {
    const text = fs.readFileSync('/proc/cpuinfo', 'utf8');
    const line = text.split('\n').find((l) => l.startsWith('flags'));
    return new Set(line ? line.slice(line.indexOf(':') + 1).trim().split(/\s+/) : []);
  } catch {
    return new Set();
  }
}

let cached: LapackLoad | undefined;

/**
 * Loads the addon once per process (memoised). Before loading, and only when the user has
 * not set `OPENBLAS_CORETYPE`, sets it from the CPU flags ({@link openblasCoreTypeFor}):
 * OpenBLAS reads it once, when the library is loaded.
 */
export function loadLapack(): LapackLoad {
  if (cached) return cached;
  const file = lapackAddonPath();
  if (!fs.existsSync(file)) {
    cached = { ok: false, reason: `addon not built (${file} missing; run \`npm run build:lapack\`)` };
    return cached;
  }
  if (process.platform === 'linux' && process.env.OPENBLAS_CORETYPE === undefined) {
    const core = openblasCoreTypeFor(cpuFlags());
    if (core) process.env.OPENBLAS_CORETYPE = core;
  }
  try {
    const addon = require(file) as LapackAddon;
    if (typeof addon.eigh !== 'function' || typeof addon.implementation !== 'function') {
      cached = { ok: false, reason: `${file} is not the sliceserve_lapack addon` };
    } else {
      cached = { ok: true, addon, path: file };
    }
  } catch (err) {
    const message = err instanceof Error ? err.message.split('\n')[0] : String(err);
    cached = { ok: false, reason: `addon failed to load (${message})` };
  }
  return cached;
}
