/**
 * Quantizing a float model (dense, or sliced by slicer/index.ts) for serving, as the CLI's
 * `--quantize` and the server's variants ask: the optional random residual rotation of a sliced
 * model first (slicer/random-rotation.ts), then the preset's block-wise quantization
 * (models/quant/), cached on disk like slices: content-addressed by the float weights' hash,
 * the preset's options, the rotation and {@link QUANTIZER_VERSION}, written atomically
 * (models/quant/artifact.ts), so a restart loads the quantized weights instead of recomputing
 * them. docs/quantization.md has the measurements behind the defaults.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { hashModelWeights } from '../models/load.js';
import { loadQuantizedArtifact, saveQuantizedArtifact } from '../models/quant/artifact.js';
import { quantizedModelBytes, quantizeModel, quantPreset, QuantizationError, type QuantPresetName, type QuantRotationInfo } from '../models/quant/index.js';
import type { LoadedModel } from '../models/types.js';
import { openCacheEntry, quarantineCacheEntry, releaseStaging, sealCacheEntry, stageCacheEntry } from './cache.js';
import { randomRotationPlan } from './random-rotation.js';

/**
 * Bump when the quantizer or the rotation changes the weights they produce (invalidates the
 * quantized cache).
 */
export const QUANTIZER_VERSION = 'matmulnbits-1';

/** What `--quantize` takes: a preset, or `none` for float weights. */
export type QuantChoice = 'none' | QuantPresetName;
/** The values of {@link QuantChoice}, in the order help texts list them. */
export const QUANT_CHOICES: readonly QuantChoice[] = ['none', 'int8', 'int4'];

/**
 * The residual rotation before quantizing: `random` (a seeded random orthogonal basis, sliced
 * models only), `none`, or `auto`: random for a sliced model, none for a dense one (measured on
 * stories260K: it lowers the int4 and int8 perplexity cost of the slices; docs/quantization.md).
 */
export type QuantRotation = 'auto' | 'random' | 'none';
export const QUANT_ROTATIONS: readonly QuantRotation[] = ['auto', 'random', 'none'];

/** Seed of the default rotation (the one measured in docs/quantization.md). */
export const DEFAULT_ROTATION_SEED = 0;

/**
 * Parses a `--quantize` value.
 * @throws QuantizationError with a one-line message naming the valid values.
 */
export function parseQuantChoice(value: string): QuantChoice {
  const v = value.trim().toLowerCase();
  if ((QUANT_CHOICES as readonly string[]).includes(v)) return v as QuantChoice;
  throw new QuantizationError(`expected ${QUANT_CHOICES.join(', ')} (none = float weights), got ${JSON.stringify(value)}`);
}

/**
 * Parses a `--quant-rotation` value.
 * @throws QuantizationError naming the valid values.
 */
export function parseQuantRotation(value: string): QuantRotation {
  const v = value.trim().toLowerCase();
  if ((QUANT_ROTATIONS as readonly string[]).includes(v)) return v as QuantRotation;
  throw new QuantizationError(`expected ${QUANT_ROTATIONS.join(', ')}, got ${JSON.stringify(value)}`);
}

/** The model id a choice gives: `<id>` for none, `<id>-int8` / `<id>-int4` otherwise. */
export function quantizedModelId(id: string, choice: QuantChoice): string {
  return choice === 'none' ? id : `${id}-${choice}`;
}

/**
 * Whether `rotation` rotates `model` before quantizing.
 * @throws QuantizationError for `random` on a dense model (its norms carry weights).
 */
export function rotatesBeforeQuantizing(model: Pick<LoadedModel, 'id' | 'config'>, rotation: QuantRotation): boolean {
  const sliced = model.config.sliceserve !== undefined;
  if (rotation === 'random' && !sliced) throw new QuantizationError(`--quant-rotation random needs a sliced model and ${model.id} is dense; slice it (--sparsity) or pass --quant-rotation auto or none`);
  return rotation === 'random' || (rotation === 'auto' && sliced);
}

export interface QuantizeOptions {
  preset: QuantPresetName;
  /** Default 'auto'. */
  rotation?: QuantRotation;
  /** Seed of a random rotation (default {@link DEFAULT_ROTATION_SEED}). */
  seed?: number;
  /** Cache directory; null or undefined = no cache. */
  cacheDir?: string | null;
  /**
   * Take the float tensors out of the input model as they are rotated and quantized (default
   * true), so no second float32 copy is held; the input must not be used afterwards.
   */
  consume?: boolean;
  /** Told when a cached entry cannot be used (it is moved aside and the model quantized again). */
  onWarning?: (message: string) => void;
}

export interface QuantizeReport {
  /** True when the result came from the cache. */
  cached: boolean;
  /** Cache directory of the result ('' without a cache). */
  dir: string;
  seconds: number;
  rotation: QuantRotationInfo | null;
  /** Bytes of the quantized tensors (codes, float32 scales, zero points). */
  quantizedBytes: number;
}

/**
 * Quantizes a float model (rotating a sliced one first when the rotation says so), or loads it
 * from the cache.
 * @returns the quantized model (id `<id>-<preset>`) and a report.
 * @throws QuantizationError for an already quantized model, an unknown preset, a bad
 *   rotation, or a weight that cannot be quantized; Error when the cache cannot be written.
 */
export async function quantizeModelWithReport(model: LoadedModel, options: QuantizeOptions, onProgress?: (p: { phase: string; fraction: number }) => void): Promise<{ model: LoadedModel; report: QuantizeReport }> {
  const t0 = performance.now();
  if (model.quantization) throw new QuantizationError(`${model.id} is already quantized (${model.quantization.preset}); pass its float model, or --quantize none`);
  const preset = quantPreset(options.preset);
  const rotate = rotatesBeforeQuantizing(model, options.rotation ?? 'auto');
  const rotation: QuantRotationInfo | null = rotate ? { kind: 'random-orthogonal', seed: options.seed ?? DEFAULT_ROTATION_SEED } : null;
  const id = `${model.id}-${options.preset}`;
  const consume = options.consume ?? true;
  let cacheDir = '';
  let sourceSha256: string | null = null;
  if (options.cacheDir) {
    sourceSha256 = hashModelWeights(model);
    const key = createHash('sha256').update(JSON.stringify([QUANTIZER_VERSION, sourceSha256, options.preset, preset, rotation])).digest('hex').slice(0, 16);
    cacheDir = path.resolve(options.cacheDir, `${id}-${key}`);
    if (fs.existsSync(cacheDir)) {
      // Checked against the hashes recorded at write time (slicer/cache.ts); an unusable entry
      // is moved aside and the model quantized again.
      const found = await openCacheEntry(cacheDir, id, (dir, name) => loadQuantizedArtifact(dir, { id: name }));
      if ('model' in found) {
        const cached = found.model;
        onProgress?.({ phase: 'quantized model loaded from cache', fraction: 1 });
        return { model: cached, report: { cached: true, dir: cacheDir, seconds: (performance.now() - t0) / 1000, rotation: cached.quantization!.rotation, quantizedBytes: quantizedModelBytes(cached) } };
      }
      const moved = quarantineCacheEntry(cacheDir, found.problem);
      options.onWarning?.(`the cached quantized model ${cacheDir} cannot be used (${found.problem}); moved to ${moved}, quantizing ${id} again`);
    }
  }
  // Each tensor is rotated (when asked) just before it is quantized, and let go after.
  if (rotation) onProgress?.({ phase: 'random residual rotation and quantization', fraction: 0 });
  const quantized = await quantizeModel(model, options.preset, {
    consume,
    rotation,
    transform: rotation ? randomRotationPlan(model, rotation.seed) : undefined,
    onTensor: (done, total) => onProgress?.({ phase: `quantizing to ${options.preset}`, fraction: (done / total) * 0.99 }),
  });
  let result: LoadedModel = { ...quantized, dir: cacheDir };
  if (cacheDir) {
    // Built in a staging directory, sealed with its manifest of hashes and renamed in one step.
    const staging = stageCacheEntry(cacheDir);
    try {
      const built = path.join(staging, 'entry');
      saveQuantizedArtifact(result, built, { overwrite: true, sourceSha256 });
      sealCacheEntry(built, cacheDir);
    } catch (err) {
      throw new Error(`cannot write the quantized cache entry ${cacheDir}: ${err instanceof Error ? err.message : String(err)}`);
    } finally {
      releaseStaging(staging);
    }
    // Served from the files: the float tensors (embedding, biases) are then read from disk on use.
    result = loadQuantizedArtifact(cacheDir, { id });
  }
  onProgress?.({ phase: 'quantized', fraction: 1 });
  return { model: result, report: { cached: false, dir: cacheDir, seconds: (performance.now() - t0) / 1000, rotation, quantizedBytes: quantizedModelBytes(result) } };
}
