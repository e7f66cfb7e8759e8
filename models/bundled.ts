/**
 * The model and texts shipped in the package, found from any working directory: the CLI's
 * defaults (`serve`, `generate`, `eval`, `slice`) and the benchmarks name them relative to the
 * package root, and {@link resolveBundled} turns such a path into the file that exists.
 */
import fs from 'node:fs';
import path from 'node:path';

/** The package root (this file compiles to `<root>/dist/models/bundled.js`). */
export const PACKAGE_ROOT = path.resolve(__dirname, '..', '..');

/** The bundled model (llama2.c stories260K), relative to the package root. */
export const BUNDLED_MODEL_DIR = 'models/stories260K';
/** The bundled calibration text (TinyStories training sample; data/SOURCES.md). */
export const BUNDLED_CALIBRATION_FILE = 'data/tinystories-train-sample.txt';
/** The bundled evaluation text (TinyStories validation sample), also the held-out text of slices. */
export const BUNDLED_EVAL_FILE = 'data/tinystories-valid-sample.txt';

/**
 * An absolute path for `p`: `p` itself when absolute or when it exists relative to the working
 * directory; else the package's copy when there is one (`models/stories260K` from any
 * directory); else `p` resolved against the working directory (so that the caller's "no such
 * file" message names the path the user meant).
 */
export function resolveBundled(p: string): string {
  if (path.isAbsolute(p) || fs.existsSync(p)) return path.resolve(p);
  const bundled = path.join(PACKAGE_ROOT, p);
  return fs.existsSync(bundled) ? bundled : path.resolve(p);
}
