/**
 * Symmetric eigendecomposition in float64, the core of SliceGPT's PCA (Ashkboos et al. 2024,
 * arXiv 2401.15024, Eq. 8; PROTOCOL.md §5.2 step 3).
 *
 * Two backends give the same decomposition up to rounding:
 * - `js`: ml-matrix (always available; eigh-js.ts);
 * - `lapack`: LAPACK dsyevd through the optional addon native/lapack (lapack.ts), 5-50x faster.
 * The backend comes from `options.backend`, else the env variable `SLICESERVE_EIGH`
 * (`js` | `lapack` | `auto`, default `auto` = lapack when the addon loads, else js, silently).
 */
import { eighJs } from './eigh-js.js';
import { type LapackLoad, loadLapack } from './lapack.js';

/** A concrete eigensolver. */
export type EighBackend = 'js' | 'lapack';
/** What a caller may ask for; `auto` picks lapack when its addon loads. */
export type EighBackendChoice = EighBackend | 'auto';

/** Options of {@link eighSymmetric}. */
export interface EighOptions {
  /** Overrides `SLICESERVE_EIGH`. */
  backend?: EighBackendChoice;
}

/** Result of {@link eighSymmetric}. */
export interface EighResult {
  /** n eigenvalues, descending (largest first). */
  values: Float64Array;
  /**
   * n x n row-major; column j is the unit eigenvector of `values[j]`:
   * `vectors[i*n + j]` = component i of eigenvector j.
   */
  vectors: Float64Array;
  /** Which backend computed it. */
  backend: EighBackend;
}

/** Relative asymmetry above which the input is rejected as not symmetric. */
export const SYMMETRY_TOLERANCE = 1e-8;

const CHOICES: readonly EighBackendChoice[] = ['js', 'lapack', 'auto'];

/** Reads and validates `SLICESERVE_EIGH` (unset or empty = `auto`). */
export function eighBackendFromEnv(): EighBackendChoice {
  const raw = (process.env.SLICESERVE_EIGH ?? '').trim().toLowerCase();
  if (raw === '') return 'auto';
  if (!(CHOICES as readonly string[]).includes(raw)) {
    throw new Error(`SLICESERVE_EIGH=${process.env.SLICESERVE_EIGH} is not valid: use js, lapack or auto`);
  }
  return raw as EighBackendChoice;
}

/**
 * The backend {@link eighSymmetric} will use for `choice` (default: from the environment).
 * @throws Error when `lapack` is asked for and the addon is unavailable (the message says why
 *   and how to build it), or when `SLICESERVE_EIGH` holds an unknown value.
 */
export function resolveEighBackend(choice: EighBackendChoice = eighBackendFromEnv()): EighBackend {
  if (choice === 'js') return 'js';
  const lapack = loadLapack();
  if (choice === 'lapack' && !lapack.ok) {
    throw new Error(`the LAPACK eigensolver is unavailable: ${lapack.reason}; or set SLICESERVE_EIGH=js`);
  }
  return lapack.ok ? 'lapack' : 'js';
}

/** Which eigensolvers this process can use, for diagnostics and benchmarks. */
export function eighBackendInfo(): { available: EighBackend[]; lapackImplementation?: string; lapackUnavailable?: string } {
  const lapack = loadLapack();
  return lapack.ok
    ? { available: ['js', 'lapack'], lapackImplementation: lapack.addon.implementation() }
    : { available: ['js'], lapackUnavailable: lapack.reason };
}

/**
 * Residual width from which slicing with the JS eigensolver is slow enough to say how to get
 * the LAPACK one: at n = 768 one JS eigendecomposition took 4.1 s against 0.11 s with LAPACK,
 * at 2048 98.5 s against 1.8 s (2-core Xeon, docs/linear-algebra.md).
 */
export const JS_EIGH_HINT_WIDTH = 768;

/** Seconds of one JS eigendecomposition at n = 768 on the reference machine (docs/linear-algebra.md). */
const JS_EIGH_SECONDS_AT_768 = 4.1;

/**
 * A one-line note for a slicing run that will do `count` eigendecompositions of order `n` with
 * the JS eigensolver because the LAPACK addon is unavailable: the rough time it costs (n^3
 * scaling of the measured 4.1 s at n = 768), why LAPACK is unavailable and how to build it.
 * @param choice the backend asked for (default `SLICESERVE_EIGH`); `js` asked for explicitly gives no note
 * @param lapack the addon's load outcome (default: loading it)
 * @returns null when LAPACK will be used, `js` was chosen, or n < {@link JS_EIGH_HINT_WIDTH}
 */
export function slowEigensolverHint(n: number, count: number, choice: EighBackendChoice = eighBackendFromEnv(), lapack: LapackLoad = loadLapack()): string | null {
  if (n < JS_EIGH_HINT_WIDTH || choice === 'js' || lapack.ok) return null;
  const each = JS_EIGH_SECONDS_AT_768 * (n / 768) ** 3;
  const total = each * count;
  const rough = total >= 90 ? `${Math.round(total / 60)} min` : `${Math.round(total)} s`;
  return (
    `slicing at hidden_size ${n} with the pure-JS eigensolver: ${count} eigendecompositions of ~${each < 10 ? each.toFixed(1) : Math.round(each)} s each on a 2-core machine (~${rough}); ` +
    `the LAPACK one is 40-50x faster but ${lapack.reason}: install liblapack-dev libopenblas-dev (Debian/Ubuntu) and run \`npm run build:lapack\` (docs/linear-algebra.md), or set SLICESERVE_EIGH=js to silence this note`
  );
}

/**
 * Checks a (shape, finiteness, symmetry within {@link SYMMETRY_TOLERANCE} of its largest
 * entry) and returns the exactly symmetric copy (A + A^T) / 2 that both backends decompose.
 */
function symmetrisedCopy(a: Float64Array, n: number): Float64Array {
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`eighSymmetric: n must be a positive integer, got ${n}`);
  if (a.length !== n * n) throw new RangeError(`eighSymmetric: a has ${a.length} entries, expected n*n = ${n * n}`);
  let scale = 0;
  for (let i = 0; i < a.length; i++) {
    const v = a[i];
    if (!Number.isFinite(v)) throw new RangeError(`eighSymmetric: a[${Math.floor(i / n)}][${i % n}] is ${v}`);
    scale = Math.max(scale, Math.abs(v));
  }
  const s = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    s[i * n + i] = a[i * n + i];
    for (let j = 0; j < i; j++) {
      const x = a[i * n + j];
      const y = a[j * n + i];
      if (Math.abs(x - y) > SYMMETRY_TOLERANCE * scale) {
        throw new RangeError(
          `eighSymmetric: matrix is not symmetric: a[${i}][${j}] = ${x} but a[${j}][${i}] = ${y}`,
        );
      }
      const m = 0.5 * (x + y);
      s[i * n + j] = m;
      s[j * n + i] = m;
    }
  }
  return s;
}

/**
 * Sign convention, so that both backends (and reruns) give the same vectors up to rounding:
 * in each eigenvector, the first component whose magnitude is within 1e-9 (relative) of the
 * largest magnitude is made positive.
 */
function normaliseSigns(vectors: Float64Array, n: number): void {
  for (let j = 0; j < n; j++) {
    let max = 0;
    for (let i = 0; i < n; i++) max = Math.max(max, Math.abs(vectors[i * n + j]));
    const threshold = max * (1 - 1e-9);
    let pivot = 0;
    while (pivot < n - 1 && Math.abs(vectors[pivot * n + j]) < threshold) pivot++;
    if (vectors[pivot * n + j] < 0) {
      for (let i = 0; i < n; i++) vectors[i * n + j] = -vectors[i * n + j];
    }
  }
}

/**
 * Eigendecomposition A = V diag(values) V^T of a real symmetric matrix, in float64.
 *
 * @param a - n x n row-major float64 matrix, symmetric (not modified).
 * @param n - order of the matrix, >= 1.
 * @param options - `backend` overrides `SLICESERVE_EIGH`.
 * @returns eigenvalues DESCENDING, and eigenvectors as the columns of a row-major n x n
 *   orthonormal matrix (`vectors[i*n + j]` = component i of eigenvector j), signs normalised
 *   (largest-magnitude component positive). Within a repeated eigenvalue any orthonormal
 *   basis of its eigenspace may be returned.
 * @throws RangeError for a bad n, a wrong length, a non-finite entry or an asymmetric matrix
 *   (|a_ij - a_ji| > 1e-8 max|a|); Error when `lapack` is requested but unavailable, or when
 *   LAPACK reports a failure.
 */
export function eighSymmetric(a: Float64Array, n: number, options: EighOptions = {}): EighResult {
  const backend = resolveEighBackend(options.backend ?? eighBackendFromEnv());
  const s = symmetrisedCopy(a, n);
  let result: { values: Float64Array; vectors: Float64Array };
  if (backend === 'lapack') {
    const lapack = loadLapack();
    if (!lapack.ok) throw new Error(`the LAPACK eigensolver is unavailable: ${lapack.reason}`);
    result = lapack.addon.eigh(s, n);
  } else {
    result = eighJs(s, n);
  }
  normaliseSigns(result.vectors, n);
  return { values: result.values, vectors: result.vectors, backend };
}
