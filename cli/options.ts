/** Option parsers shared by the CLI commands: each rejects bad input with a one-line message. */
import os from 'node:os';
import path from 'node:path';
import { InvalidArgumentError } from 'commander';
import { QUANT_CHOICES, QUANT_ROTATIONS, parseQuantChoice, parseQuantRotation, type QuantChoice, type QuantRotation } from '../slicer/quantize.js';
import { BUNDLED_CALIBRATION_FILE, BUNDLED_EVAL_FILE, BUNDLED_MODEL_DIR } from '../models/bundled.js';

export { resolveBundled } from '../models/bundled.js';

/** An integer >= min. */
export function intOption(min: number): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min) throw new InvalidArgumentError(`expected an integer >= ${min}, got "${value}"`);
    return n;
  };
}

/** Any integer of magnitude at most 2^53, the range the API's `seed` takes (negative ones included). */
export function safeIntOption(value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isInteger(n) || Math.abs(n) > 2 ** 53) throw new InvalidArgumentError(`expected an integer, got "${value}"`);
  return n;
}

/** A finite number within [min, max) (or [min, max] when inclusive). */
export function numberOption(min: number, max: number, inclusive = false): (value: string) => number {
  return (value) => {
    const n = Number(value);
    const ok = value.trim() !== '' && Number.isFinite(n) && n >= min && (inclusive ? n <= max : n < max);
    if (!ok) throw new InvalidArgumentError(`expected a number in [${min}, ${max}${inclusive ? ']' : ')'}, got "${value}"`);
    return n;
  };
}

/** A finite number within (min, max]: top-p style options whose lower end is excluded. */
export function numberAboveOption(min: number, max: number): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (!(value.trim() !== '' && Number.isFinite(n) && n > min && n <= max)) throw new InvalidArgumentError(`expected a number in (${min}, ${max}], got "${value}"`);
    return n;
  };
}

/** A graph precision: float32 or float16. */
export function dtypeOption(value: string): 'float32' | 'float16' {
  if (value !== 'float32' && value !== 'float16') throw new InvalidArgumentError(`expected float32 or float16, got "${value}"`);
  return value;
}

/** A weight precision for `--quantize`: none (float weights), int8 or int4. */
export function quantizeOption(value: string): QuantChoice {
  try {
    return parseQuantChoice(value);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
}

/**
 * `serve --quantize`: a comma-separated list of precisions, repeatable; each model is served at
 * each (duplicates dropped, order kept).
 */
export function quantizeListOption(value: string, previous: QuantChoice[] | undefined): QuantChoice[] {
  const parts = value.split(',').map((p) => p.trim()).filter((p) => p.length > 0);
  if (parts.length === 0) throw new InvalidArgumentError(`expected a comma-separated list of ${QUANT_CHOICES.join(', ')}, got "${value}"`);
  return [...new Set([...(previous ?? []), ...parts.map(quantizeOption)])];
}

/** `--quant-rotation`: auto, random or none. */
export function quantRotationOption(value: string): QuantRotation {
  try {
    return parseQuantRotation(value);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
}

/** Help text of `--quantize` (single value). */
export const QUANTIZE_HELP = `weight precision: ${QUANT_CHOICES.join(' | ')} (none = float weights; int8 / int4: MatMulNBits block-wise weights, docs/quantization.md)`;
/** Help text of `--quant-rotation`. */
export const QUANT_ROTATION_HELP = `residual rotation before quantizing: ${QUANT_ROTATIONS.join(' | ')} (auto = a seeded random orthogonal rotation for sliced models, none for dense ones)`;

/** The default model shipped in the repository (llama2.c stories260K; found from any cwd, see resolveBundled). */
export const DEFAULT_MODEL_DIR = BUNDLED_MODEL_DIR;
/** The default calibration text shipped in the repository. */
export const DEFAULT_CALIBRATION_FILE = BUNDLED_CALIBRATION_FILE;
/** The default evaluation text shipped in the repository (also the held-out text of slices). */
export const DEFAULT_EVAL_FILE = BUNDLED_EVAL_FILE;

/**
 * The slice cache directory when `--cache-dir` is not given: `SLICESERVE_CACHE_DIR`, else
 * `$XDG_CACHE_HOME/sliceserve`, else `~/.cache/sliceserve` (the XDG base-directory default, as
 * Hugging Face's `~/.cache/huggingface`): never the working directory, so that slices made from
 * different directories are shared and do not litter them.
 */
export function defaultCacheDir(env: NodeJS.ProcessEnv = process.env, home: string = os.homedir()): string {
  if (env.SLICESERVE_CACHE_DIR) return path.resolve(env.SLICESERVE_CACHE_DIR);
  const base = env.XDG_CACHE_HOME && path.isAbsolute(env.XDG_CACHE_HOME) ? env.XDG_CACHE_HOME : path.join(home, '.cache');
  return path.join(base, 'sliceserve');
}
