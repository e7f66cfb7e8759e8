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

import { HuggingFaceWriter } from '../models/huggingface.js';
import { loadSlicedArtifact } from './artifact.js';
import { openCacheEntry, quarantineCacheEntry, releaseStaging, sealCacheEntry, stageCacheEntry } from './cache.js';
import { pcaBasis, type SliceOptions, type SliceTimings } from './driver.js';
import { fuseNorms } from './fusion.js';
import { rotateAndSliceParallel } from './parallel.js';
import { slowEigensolverHint } from './linalg/index.js';
import { heldOutQuality } from './quality.js';
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
  /**
   * Held-out text (not the calibration text) on which the slice's and the dense model's
   * perplexity are measured and recorded (`sliceserve.quality`); null or undefined = not measured.
   */
  heldOutFile?: string | null;
  /** Held-out windows (default 16; 0 = not measured). Tokens per window: calSeqLen. */
  heldOutWindows?: number;
  /**
   * Receives notes worth a user's attention before a slice is computed (e.g. that the pure-JS
   * eigensolver will be slow at this hidden_size and how to get LAPACK); default: none.
   */
  warn?: (message: string) => void;
  /**
   * Write the artifact to this directory as the slicer goes (a cache entry when `cacheDir` is
   * set, else this directory; without either the sliced model stays in memory). Tensors are
   * written to a temporary directory beside it as each becomes final and the directory is
   * renamed into place at the end, so slicing holds about one layer's tensors, not the model.
   */
  outDir?: string;
  /** Replace a non-empty `outDir` (default false: refuse). */
  overwrite?: boolean;
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
  /** Seconds per phase; `held_out_s`: the held-out perplexity of dense and slice (0 when not measured). */
  timings: SliceTimings & { held_out_s: number; total_s: number };
  /** True when the result came from the cache. */
  cached: boolean;
  /** Directory of the artifact (the cache entry or `outDir`; '' when the slice is in memory only). */
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
 *   and a report (widths, parameter counts, seconds per phase). With a cache or `outDir` the
 *   model is the artifact loaded back (its tensors read from disk on use).
 * @throws RangeError / Error as {@link readCalibration}; Error for an already-sliced model or an
 *   architecture the registry does not know; Error when the cache directory cannot be written;
 *   RangeError / Error of slicer/quality.ts for a held-out file that is the calibration text, too short or unreadable.
 */
export async function sliceModelWithReport(model: LoadedModel, options: SliceModelOptions, onProgress?: (p: SliceProgress) => void): Promise<{ model: LoadedModel; report: SliceReport }> {
  if (model.config.sliceserve) throw new Error(`${model.id} is already sliced (sparsity ${model.config.sliceserve.sparsity}); slice its dense parent instead`);
  if (model.quantization) throw new Error(`${model.id} is quantized (${model.quantization.preset}); slice its float model, then quantize the slice`);
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
    source_model: model.id,
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
        report: { width, originalWidth: d, parametersBefore, parametersAfter: countParameters(cached.weights), timings: { calibration_s: 0, pca_s: 0, rotation_s: 0, held_out_s: 0, total_s: (performance.now() - t0) / 1000 }, cached: true, dir: cacheDir },
      };
    }
    const moved = quarantineCacheEntry(cacheDir, found.problem);
    options.onWarning?.(`the cached slice ${cacheDir} cannot be used (${found.problem}); moved to ${moved}, slicing ${id} again`);
  }


  // One PCA for the embeddings, then per layer one (parallel blocks) or two (sequential: MLP input, output).
  const eigendecompositions = 1 + (model.config.block === 'parallel' ? 1 : 2) * model.config.num_hidden_layers;
  const hint = slowEigensolverHint(d, eigendecompositions);
  if (hint) options.warn?.(hint);
  const fused = fuseNorms(model);
  const slicedConfig = { ...fused.config, sliceserve: info };
  // The artifact is written as the slicer goes (slicer/driver.ts SliceSink): each final tensor
  // goes to a temporary directory and is read back from there when needed again. config.json
  // is written at commit, so the held-out quality measured below is in it. A cache entry is
  // built in its staging directory and sealed (manifest of hashes, one rename: slicer/cache.ts).
  const staging = cacheDir ? stageCacheEntry(cacheDir) : null;
  const target = staging ? path.join(staging, 'entry') : options.outDir ? path.resolve(options.outDir) : '';
  let writer: HuggingFaceWriter | null = null;
  try {
    writer = target ? HuggingFaceWriter.create({ id, config: slicedConfig, tokenizer: model.tokenizer }, target, { dtype: 'float32', overwrite: !cacheDir && (options.overwrite ?? false) }) : null;
  } catch (err) {
    if (staging) releaseStaging(staging);
    throw err;
  }
  let result: LoadedModel;
  let timings: SliceTimings;
  let heldOutS = 0;
  try {
    const sliced = await rotateAndSlice(fused, {
      width,
      sliceHead,
      windows: calibration.windows,
      basis: pcaBasis(0.01),
      onProgress: (p) => onProgress?.({ phase: p.phase, fraction: p.fraction * 0.99 }),
      ...(writer ? { sink: { put: (name, t) => (writer.write(name, t), writer.readBack(name)) } } : {}),
    });
    timings = sliced.timings;
    result = { ...sliced.model, id, dir: target, config: slicedConfig };
    const heldOutWindows = options.heldOutWindows ?? 16;
    if (options.heldOutFile && heldOutWindows > 0) {
      const tHeldOut = performance.now();
      onProgress?.({ phase: 'held-out perplexity', fraction: 0.99 });
      info.quality = await heldOutQuality(model, result, { file: options.heldOutFile, windows: heldOutWindows, seqLen: info.calibration.seq_len, calibrationSha256: calibration.sha256 });
      heldOutS = (performance.now() - tHeldOut) / 1000;
    }
  } catch (err) {
    writer?.abort();
    if (staging) releaseStaging(staging);
    throw err;
  }
  if (writer) {
    try {
      writer.commit();
      if (cacheDir && staging) sealCacheEntry(target, cacheDir);
    } catch (err) {
      if (cacheDir) throw new Error(`cannot write the slice cache entry ${cacheDir}: ${err instanceof Error ? err.message : String(err)}`);
      throw err;
    } finally {
      if (staging) releaseStaging(staging);
    }
    result = await loadSlicedArtifact(cacheDir || target, id);
  }
  onProgress?.({ phase: 'done', fraction: 1 });
  return {
    model: result,
    report: { width, originalWidth: d, parametersBefore, parametersAfter: countParameters(result.weights), timings: { ...timings, held_out_s: heldOutS, total_s: (performance.now() - t0) / 1000 }, cached: false, dir: cacheDir || target },
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
