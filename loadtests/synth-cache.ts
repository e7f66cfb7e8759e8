/**
 * Synthetic benchmark models, generated once into a cache folder (`.cache/synth/` by
 * default, git-ignored) and reused by later runs.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { SYNTH_INFO_FILE, writeSynthModel, type SynthInfo } from '../models/synth.js';

/** The cache folder of (preset, seed): `<cacheDir>/<preset>-seed<seed>`. */
export function synthCachePath(cacheDir: string, preset: string, seed: number): string {
  return path.join(cacheDir, `${preset}-seed${seed}`);
}

/**
 * The directory of the synthetic model (preset, seed), generating it first when the cache
 * has no complete copy (a complete copy has `synth.json` naming the same preset and seed).
 *
 * @param log progress messages (generation of bench-110m takes several seconds).
 * @throws Error for an unknown preset or an I/O failure.
 */
export function ensureSynthModel(preset: string, cacheDir: string, seed: number, log: (message: string) => void = () => undefined): string {
  const dir = synthCachePath(cacheDir, preset, seed);
  try {
    const info = JSON.parse(fs.readFileSync(path.join(dir, SYNTH_INFO_FILE), 'utf8')) as SynthInfo;
    if (info.preset === preset && info.seed === seed && fs.existsSync(path.join(dir, 'config.json'))) return dir;
  } catch {
    /* not cached yet */
  }
  log(`[bench] generating the synthetic model ${preset} (seed ${seed}) into ${dir} ...`);
  const t0 = performance.now();
  const { files, parameters } = writeSynthModel(preset, dir, { seed, overwrite: true });
  const bytes = files.reduce((s, f) => s + f.bytes, 0);
  log(`[bench] ${preset}: ${(parameters / 1e6).toFixed(1)} M parameters, ${(bytes / 2 ** 20).toFixed(0)} MiB written in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  return dir;
}
