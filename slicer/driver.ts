/**
 * What the two SliceGPT drivers (slicer/sequential.ts, slicer/parallel.ts) share: options,
 * the basis choice, timings and progress, the embedding step, and the verbs applied to a
 * layout's readers and writers (SliceGPT §3.3-3.4; SLICEGPT.md §5-6).
 */
import type { LayerLayout, LinearNames } from '../models/arch/spec.js';
import { layoutOf } from '../models/registry.js';
import type { LoadedModel, WeightMap, WeightTensor } from '../models/types.js';
import { embeddingSignal } from './calibrate.js';
import { MomentAccumulator, pcaFromMoment } from './linalg/index.js';
import { projectSignal, rotateReader, rotateWriter, rotateWriterBias, shortcutMatrix } from './rotate.js';

/**
 * Chooses the orthogonal basis of one position from its calibration signal.
 * @param signal [tokens, n] float32 in the ORIGINAL basis.
 * @returns Q, n x n row-major, directions in columns, most important first.
 */
export type BasisFn = (signal: Float32Array, tokens: number, n: number, position: string) => Promise<Float64Array>;

/** PCA of the uncentred second moment with damping (PROTOCOL.md §5.2), float64. */
export function pcaBasis(damping = 0.01, record?: (position: string, eigenvalues: Float64Array, dampingAdded: number) => void): BasisFn {
  return async (signal, tokens, n, position) => {
    const acc = new MomentAccumulator(n);
    await acc.add(signal, tokens);
    const pca = pcaFromMoment(await acc.moment(), n, damping);
    record?.(position, pca.eigenvalues, pca.dampingAdded);
    return pca.Q;
  };
}

/**
 * Where the drivers put each tensor of the sliced model once it is final (the embedding after
 * the embedding step, a layer's tensors after that layer, the head at the end), so that a
 * driver run holds about one layer's tensors instead of the whole sliced model.
 */
export interface SliceSink {
  /**
   * Takes the final tensor `name` (e.g. writes it to the artifact) and returns what the run
   * keeps in its place (e.g. a lazy tensor that reads it back).
   */
  put(name: string, tensor: WeightTensor): WeightTensor;
}

export interface SliceOptions {
  /** d', the kept width of every sliced position. */
  width: number;
  /** Also slice the head's input (else the last layer outputs the full width). */
  sliceHead: boolean;
  /** Calibration token windows, each fed with positions 0..seqLen-1. */
  windows: readonly (readonly number[])[];
  basis: BasisFn;
  onProgress?: (p: { phase: string; fraction: number }) => void;
  /** Receives every tensor once it is final (default: all stay in memory). */
  sink?: SliceSink;
}

/** Every tensor name a layer's layout mentions (weights, biases, norms, shortcuts). */
export function layerTensorNames(layer: LayerLayout): string[] {
  const names: string[] = [];
  const add = (n: { weight?: string; bias?: string } | undefined) => {
    if (n?.weight) names.push(n.weight);
    if (n?.bias) names.push(n.bias);
  };
  for (const n of [layer.inputNorm, layer.q, layer.k, layer.v, layer.o, layer.qNorm, layer.kNorm, layer.postAttentionNorm, layer.gate, layer.up, layer.down]) add(n);
  names.push(layer.attnShortcut);
  if (layer.mlpShortcut) names.push(layer.mlpShortcut);
  return names;
}

export interface SliceTimings {
  /** Seconds in calibration forwards (onnxruntime, float32). */
  calibration_s: number;
  /** Seconds computing bases (second moments + eigendecompositions). */
  pca_s: number;
  /** Seconds rotating and slicing weights (float64 products). */
  rotation_s: number;
}

/** The state one driver run carries: the weights being rewritten, timings, progress. */
export class SliceRun {
  readonly weights: WeightMap;
  readonly timings: SliceTimings = { calibration_s: 0, pca_s: 0, rotation_s: 0 };
  readonly d: number;
  readonly tokens: number;
  readonly seqLen: number;
  private step = 0;
  /** Tensors already handed to the sink. */
  private readonly finished = new Set<string>();

  /**
   * @param fused a model with fused norms (slicer/fusion.ts).
   * @param steps progress steps of the whole run.
   * @throws RangeError when the width is outside [1, hidden_size] or there are no windows.
   */
  constructor(readonly fused: LoadedModel, readonly options: SliceOptions, private readonly steps: number) {
    this.d = fused.config.hidden_size;
    if (!(options.width >= 1 && options.width <= this.d)) throw new RangeError(`sliced width ${options.width} must be in [1, ${this.d}]`);
    if (options.windows.length === 0) throw new RangeError('no calibration windows');
    if (!fused.config.fused_norms && !fused.config.sliceserve) throw new Error(`${fused.id}: fuse the norms before rotating (slicer/fusion.ts)`);
    this.weights = new Map(fused.weights);
    this.seqLen = options.windows[0].length;
    this.tokens = options.windows.length * this.seqLen;
  }

  get(name: string): WeightTensor {
    const t = this.weights.get(name);
    if (!t) throw new Error(`missing weight ${name}`);
    return t;
  }

  /** Hands the tensors `names` (those present) to the sink as final (no-op without a sink). */
  finish(names: Iterable<string>): void {
    const sink = this.options.sink;
    if (!sink) return;
    for (const name of names) {
      const t = this.weights.get(name);
      if (t && !this.finished.has(name)) {
        this.weights.set(name, sink.put(name, t));
        this.finished.add(name);
      }
    }
  }

  /** {@link finish} for every tensor of layer `l`. */
  finishLayer(l: number): void {
    this.finish(layerTensorNames(layoutOf(this.fused.config).layers[l]));
  }

  /** Runs `f`, adding its duration to `timings[key]`. */
  async clock<T>(key: keyof SliceTimings, f: () => Promise<T>): Promise<T> {
    const t0 = performance.now();
    try {
      return await f();
    } finally {
      this.timings[key] += (performance.now() - t0) / 1000;
    }
  }

  progress(phase: string): void {
    this.options.onProgress?.({ phase, fraction: ++this.step / this.steps });
  }

  /** The basis of a position from its signal (timed as PCA). */
  basis(signal: Float32Array, position: string): Promise<Float64Array> {
    return this.clock('pca_s', () => this.options.basis(signal, this.tokens, this.d, position));
  }

  /** Readers of the residual: W <- (W Q)[:, :k] (biases are on the output side: unchanged). */
  async rotateReaders(readers: readonly LinearNames[], Q: Float64Array, k: number): Promise<void> {
    await this.clock('rotation_s', async () => {
      for (const r of readers) this.weights.set(r.weight, await rotateReader(this.get(r.weight), Q, this.d, k));
    });
  }

  /** Writers of the residual: W <- (Q^T W)[:k, :], b <- (b Q)[:k]. */
  async rotateWriters(writers: readonly LinearNames[], Q: Float64Array, k: number): Promise<void> {
    await this.clock('rotation_s', async () => {
      for (const w of writers) {
        this.weights.set(w.weight, await rotateWriter(this.get(w.weight), Q, this.d, k));
        if (w.bias) this.weights.set(w.bias, await rotateWriterBias(this.get(w.bias), Q, this.d, k));
      }
    });
  }

  /** (X Q)[:, :k] of a signal in the original basis. */
  project(x: Float32Array, Q: Float64Array, k: number): Promise<Float32Array> {
    return this.clock('rotation_s', () => projectSignal(x, this.tokens, Q, this.d, k));
  }

  /**
   * The embedding step: X = embedding output of the calibration tokens (original basis),
   * Q_0 = basis(X), token (and learned position) embeddings <- (E Q_0)[:, :d'].
   * @returns Q_0 and the sliced signal (X Q_0)[:, :d'].
   */
  async embedding(): Promise<{ Q: Float64Array; x: Float32Array }> {
    const { config } = this.fused;
    const layout = layoutOf(config);
    const dp = this.options.width;
    const positions = layout.embedPositions && config.positions.kind === 'learned' ? { table: this.get(layout.embedPositions), offset: config.positions.offset } : undefined;
    const X0 = embeddingSignal(this.options.windows, this.get(layout.embedTokens), positions);
    const Q = await this.basis(X0, 'embedding');
    await this.clock('rotation_s', async () => {
      for (const name of [layout.embedTokens, ...(layout.embedPositions ? [layout.embedPositions] : [])]) {
        this.weights.set(name, await rotateReader(this.get(name), Q, this.d, dp));
      }
    });
    const x = await this.project(X0, Q, dp);
    this.finish([layout.embedTokens, ...(layout.embedPositions ? [layout.embedPositions] : [])]);
    this.progress('embedding');
    return { Q, x };
  }

  /** The width the output of layer l keeps: d' except the last layer without slice_head. */
  outputWidth(l: number): number {
    return l < this.fused.config.num_hidden_layers - 1 || this.options.sliceHead ? this.options.width : this.d;
  }

  /**
   * The end of layer l, the same in both drivers: Q_out = basis(Y) of the layer's output signal
   * Y [tokens, d] (original basis), the residual shortcut `shortcut` <- Q_in[:, :kIn]^T Q_out[:, :kOut]
   * (SliceGPT §3.3), the residual writers rotated into Q_out and sliced to kOut = outputWidth(l),
   * and the layer's tensors handed over.
   * @returns Q_out, kOut and the next layer's input (Y Q_out)[:, :kOut].
   */
  async closeLayer(l: number, Y: Float32Array, Qin: Float64Array, kIn: number, shortcut: string, writers: readonly LinearNames[]): Promise<{ Q: Float64Array; width: number; x: Float32Array }> {
    const Q = await this.basis(Y, `layer ${l} output`);
    const width = this.outputWidth(l);
    this.weights.set(shortcut, await this.clock('rotation_s', () => shortcutMatrix(Qin, kIn, Q, width, this.d)));
    await this.rotateWriters(writers, Q, width);
    const x = await this.project(Y, Q, width);
    this.finishLayer(l);
    this.progress(`layer ${l} output`);
    return { Q, width, x };
  }

  /** The head reads the last basis: W <- (W Q)[:, :k]. */
  async head(Q: Float64Array, k: number): Promise<void> {
    await this.rotateReaders([layoutOf(this.fused.config).lmHead], Q, k);
    this.progress('head');
  }

  /**
   * The sliced model: the fused one with the rewritten weights (every tensor not handed to the
   * sink yet is handed over now).
   */
  result(): { model: LoadedModel; timings: SliceTimings } {
    this.finish([...this.weights.keys()]);
    return { model: { ...this.fused, weights: this.weights }, timings: this.timings };
  }
}
