/**
 * The slicer's library API: `sliceModel(model, options, onProgress)` returns a SliceGPT-sliced
 * model (Ashkboos et al. 2024, arXiv 2401.15024), computing it or taking it from a
 * content-addressed on-disk cache, so that a server restart reuses a slice instead of
 * recomputing it. The CLI's `slice` command and the server's startup / on-demand slicing
 * both call it.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { hashModelWeights } from '../models/load.js';
import { countParameters } from '../models/parameters.js';
import { buildTokenStream, cutWindows } from '../models/tokenizer/index.js';
import type { LoadedModel, SlicingInfo } from '../models/types.js';

import { openCacheEntry, quarantineCacheEntry, writeCacheEntry } from './cache.js';
import { pcaBasis, type SliceOptions, type SliceTimings } from './driver.js';
import { fuseNorms } from './fusion.js';
import { rotateAndSliceParallel } from './parallel.js';
import { rotateAndSliceSequential } from './sequential.js';
import { slicedWidth } from './width.js';

export { largestUsableSparsity, slicedWidth } from './width.js';
export { countParameters } from '../models/parameters.js';

/**
 * Bump when a change to the algorithm changes the weights it produces, or a change to the
 * artifact changes what a cached one must contain (invalidates caches). 2: config.json lists
 * every end-of-sequence id (`eos_token_id` [2, 1] for llama2.c models). 3: one slicer for every
 * family (config.json keeps the family's own fields).
 */
export const SLICER_VERSION = 'slicegpt-3';

export interface SliceModelOptions {
  /** Fraction of hidden_size removed, in [0, 1). */
  sparsity: number;
  /** Calibration text: stories separated by `<|endoftext|>` (PROTOCOL.md §3). */
  calibrationFile: string;
  /** Calibration windows (default 128). */
  calWindows?: number;
  /** Tokens per calibration window (default 256). */
  calSeqLen?: number;
  /** d' is rounded down to a multiple of this (default 8). */
  roundInterval?: number;
  /** Slice the head's input too (default false, as the reference implementation). */
  sliceHead?: boolean;
  /** Cache directory; null or undefined = no cache. */
  cacheDir?: string | null;
  /** Told about a cached slice that failed its integrity check and is recomputed (one line). */
  onWarning?: (message: string) => void;
}

export interface SliceProgress {
  phase: string;
  /** 0..1 */
  fraction: number;
}

export interface SliceReport {
  width: number;
  originalWidth: number;
  parametersBefore: number;
  parametersAfter: number;
  timings: SliceTimings & { total_s: number };
  /** True when the result came from the cache. */
  cached: boolean;
  /** Cache directory of the result ('' without a cache). */
  dir: string;
}

/** The API/model id of a slice: `<dense id>-sliced-<sparsity>`. */
export function slicedModelId(denseId: string, sparsity: number): string {
  return `${denseId}-sliced-${sparsity}`;
}

/**
 * Validates options and reads the calibration windows (PROTOCOL.md §3: stream of the file,
 * windows stream[i*seqLen : (i+1)*seqLen], i = 0..calWindows-1).
 * @throws RangeError for a sparsity outside [0, 1), bad window counts, or a calibration file
 *   with fewer tokens than asked for (the message names the file and both counts); Error when
 *   the file cannot be read.
 */
export function readCalibration(model: LoadedModel, options: SliceModelOptions): { windows: number[][]; sha256: string; tokens: number } {
  slicedWidth(options.sparsity, model.config.hidden_size, options.roundInterval ?? 8);
  let bytes: Buffer;
  try {
    bytes = fs.readFileSync(options.calibrationFile);
  } catch (err) {
    throw new Error(`cannot read the calibration file ${options.calibrationFile}: ${(err as NodeJS.ErrnoException).code ?? err}`);
  }
  const stream = buildTokenStream(bytes, model.tokenizer);
  const windows = cutWindows(Array.from(stream.tokens), options.calSeqLen ?? 256, options.calWindows ?? 128, `the calibration file ${options.calibrationFile}`);
  return { windows, sha256: createHash('sha256').update(bytes).digest('hex'), tokens: stream.tokens.length };
}

/**
 * Slices `model` (dense) with SliceGPT, or loads the slice from the cache.
 * @returns the sliced model (id `<dense id>-sliced-<sparsity>`, config.sliceserve filled in)
 *   and a report (widths, parameter counts, seconds per phase).
 * @throws RangeError / Error as {@link readCalibration}; Error for an already-sliced model or an
 *   architecture the registry does not know; Error when the cache directory cannot be written.
 */
export async function sliceModelWithReport(model: LoadedModel, options: SliceModelOptions, onProgress?: (p: SliceProgress) => void): Promise<{ model: LoadedModel; report: SliceReport }> {
  if (model.config.sliceserve) throw new Error(`${model.id} is already sliced (sparsity ${model.config.sliceserve.sparsity}); slice its dense parent instead`);
  const t0 = performance.now();
  const d = model.config.hidden_size;
  const roundInterval = options.roundInterval ?? 8;
  const width = slicedWidth(options.sparsity, d, roundInterval);
  const sliceHead = options.sliceHead ?? false;
  const calibration = readCalibration(model, options);
  const modelHash = hashModelWeights(model);
  const info: SlicingInfo = {
    sparsity: options.sparsity,
    original_hidden_size: d,
    sliced_hidden_size: width,
    round_interval: roundInterval,
    slice_head: sliceHead,
    calibration: {
      file: path.basename(options.calibrationFile),
      sha256: calibration.sha256,
      windows: calibration.windows.length,
      seq_len: calibration.windows[0].length,
      tokens: calibration.windows.length * calibration.windows[0].length,
    },
    source_model_sha256: modelHash,
    created: new Date().toISOString(),
  };
  const id = slicedModelId(model.id, options.sparsity);
  const key = createHash('sha256')
    .update(JSON.stringify([SLICER_VERSION, modelHash, options.sparsity, roundInterval, sliceHead, calibration.sha256, info.calibration.windows, info.calibration.seq_len]))
    .digest('hex')
    .slice(0, 16);
  const cacheDir = options.cacheDir ? path.resolve(options.cacheDir, `${id}-${key}`) : '';
  const parametersBefore = countParameters(model.weights);

  if (cacheDir && fs.existsSync(cacheDir)) {
    // Checked against the hashes recorded at write time (slicer/cache.ts); an unusable entry
    // is moved aside and the model sliced again.
    const found = await openCacheEntry(cacheDir, id);
    if ('model' in found) {
      const cached = found.model;
      onProgress?.({ phase: 'loaded from cache', fraction: 1 });
      return {
        model: cached,
        report: { width, originalWidth: d, parametersBefore, parametersAfter: countParameters(cached.weights), timings: { calibration_s: 0, pca_s: 0, rotation_s: 0, total_s: (performance.now() - t0) / 1000 }, cached: true, dir: cacheDir },
      };
    }
    const moved = quarantineCacheEntry(cacheDir, found.problem);
    options.onWarning?.(`the cached slice ${cacheDir} cannot be used (${found.problem}); moved to ${moved}, slicing ${id} again`);
  }

  const { model: sliced, timings } = await rotateAndSlice(fuseNorms(model), {
    width,
    sliceHead,
    windows: calibration.windows,
    basis: pcaBasis(0.01),
    onProgress: (p) => onProgress?.({ phase: p.phase, fraction: p.fraction * 0.99 }),
  });
  const result: LoadedModel = { ...sliced, id, dir: cacheDir, config: { ...sliced.config, sliceserve: info } };
  if (cacheDir) await writeCacheEntry(result, cacheDir);
  onProgress?.({ phase: 'done', fraction: 1 });
  return {
    model: result,
    report: { width, originalWidth: d, parametersBefore, parametersAfter: countParameters(result.weights), timings: { ...timings, total_s: (performance.now() - t0) / 1000 }, cached: false, dir: cacheDir },
  };
}

/**
 * The driver for the model's block kind: slicer/sequential.ts or slicer/parallel.ts.
 * @param fused a model with fused norms (slicer/fusion.ts).
 */
export function rotateAndSlice(fused: LoadedModel, options: SliceOptions): Promise<{ model: LoadedModel; timings: SliceTimings }> {
  return fused.config.block === 'parallel' ? rotateAndSliceParallel(fused, options) : rotateAndSliceSequential(fused, options);
}

/** {@link sliceModelWithReport} without the report: the server's entry point. */
export async function sliceModel(model: LoadedModel, options: SliceModelOptions, onProgress?: (p: SliceProgress) => void): Promise<LoadedModel> {
  return (await sliceModelWithReport(model, options, onProgress)).model;
}
