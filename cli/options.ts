/** Option parsers shared by the CLI commands: each rejects bad input with a one-line message. */
import { InvalidArgumentError } from 'commander';

/** An integer >= min. */
export function intOption(min: number): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min) throw new InvalidArgumentError(`expected an integer >= ${min}, got "${value}"`);
    return n;
  };
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

/** The default model shipped in the repository (llama2.c stories260K). */
export const DEFAULT_MODEL_DIR = 'models/stories260K';
/** The default calibration text shipped in the repository. */
export const DEFAULT_CALIBRATION_FILE = 'data/tinystories-train-sample.txt';
/** The default evaluation text shipped in the repository. */
export const DEFAULT_EVAL_FILE = 'data/tinystories-valid-sample.txt';
