/**
 * The SliceGPT driver for sequential blocks (attention, then MLP, each with its own norm and
 * residual): Ashkboos et al. 2024 (arXiv 2401.15024) §3.3-3.4; official
 * `rotate_and_slice_sequential`; PROTOCOL.md §5.3, step for step.
 *
 * Calibration is sequential: the signals that calibrate layer l come from layers 0..l-1 in
 * their already-sliced form, and inside layer l the MLP-input signal is measured with the
 * attention inputs already sliced, the layer output with the MLP inputs already sliced.
 */
import type { LoadedModel, WeightTensor } from '../models/types.js';
import type { SlicingAdapter } from './adapter.js';
import { MomentAccumulator, pcaFromMoment } from './linalg/index.js';
import { backToOriginal, projectSignal, rotateReader, rotateWriter, shortcutMatrix } from './rotate.js';

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

export interface SequentialSliceOptions {
  /** d', the kept width of every sliced position. */
  width: number;
  /** Also slice the head's input (else the last layer outputs the full width). */
  sliceHead: boolean;
  /** Calibration token windows, each fed with positions 0..seqLen-1. */
  windows: readonly (readonly number[])[];
  basis: BasisFn;
  onProgress?: (p: { phase: string; fraction: number }) => void;
}

export interface SliceTimings {
  /** Seconds in calibration forwards (onnxruntime, float32). */
  calibration_s: number;
  /** Seconds computing bases (second moments + eigendecompositions). */
  pca_s: number;
  /** Seconds rotating and slicing weights (float64 products). */
  rotation_s: number;
}

/**
 * Rotates and slices a FUSED model (adapter.fuseNorms) to width d'.
 * @returns the sliced weights (plus shortcut matrices) as a new LoadedModel, and timings.
 * @throws RangeError when width exceeds hidden_size or there are no windows.
 */
export async function rotateAndSliceSequential(fused: LoadedModel, adapter: SlicingAdapter, options: SequentialSliceOptions): Promise<{ model: LoadedModel; timings: SliceTimings }> {
  const d = fused.config.hidden_size;
  const L = fused.config.num_hidden_layers;
  const dp = options.width;
  if (!(dp >= 1 && dp <= d)) throw new RangeError(`sliced width ${dp} must be in [1, ${d}]`);
  const windows = options.windows;
  if (windows.length === 0) throw new RangeError('no calibration windows');
  const seqLen = windows[0].length;
  const N = windows.length * seqLen;
  const weights = new Map<string, WeightTensor>(fused.weights);
  const timings: SliceTimings = { calibration_s: 0, pca_s: 0, rotation_s: 0 };
  const clock = async <T>(key: keyof SliceTimings, f: () => Promise<T>): Promise<T> => {
    const t0 = performance.now();
    try {
      return await f();
    } finally {
      timings[key] += (performance.now() - t0) / 1000;
    }
  };
  const steps = 2 + 3 * L;
  let step = 0;
  const progress = (phase: string) => options.onProgress?.({ phase, fraction: ++step / steps });
  const get = (name: string): WeightTensor => {
    const t = weights.get(name);
    if (!t) throw new Error(`missing weight ${name}`);
    return t;
  };

  // Embedding output, original basis: X = E[calibration tokens].
  const embed = get(adapter.embedding);
  const X0 = new Float32Array(N * d);
  windows.flat().forEach((t, i) => X0.set(embed.data.subarray(t * d, (t + 1) * d), i * d));
  let Q = await clock('pca_s', () => options.basis(X0, N, d, 'embedding'));
  weights.set(adapter.embedding, await clock('rotation_s', () => rotateReader(embed, Q, d, dp)));
  let xIn = await clock('rotation_s', () => projectSignal(X0, N, Q, d, dp));
  let din = dp;
  progress('embedding');

  for (let l = 0; l < L; l++) {
    const Qa = Q;
    // Attention inputs read the current basis.
    await clock('rotation_s', async () => {
      for (const name of adapter.attentionInputs(l)) weights.set(name, await rotateReader(get(name), Qa, d, din));
    });
    // R: the MLP-norm input in the original basis (original o, shortcut back to the original basis).
    const R = await clock('calibration_s', () => adapter.runAttentionHalf(fused, l, weights, backToOriginal(Qa, d, din), xIn, windows.length, seqLen, d));
    progress(`layer ${l} attention`);
    const Qm = await clock('pca_s', () => options.basis(R, N, d, `layer ${l} mlp input`));
    await clock('rotation_s', async () => {
      weights.set(adapter.attentionShortcut(l), await shortcutMatrix(Qa, din, Qm, dp, d));
      weights.set(adapter.attentionOutput(l), await rotateWriter(get(adapter.attentionOutput(l)), Qm, d, dp));
      for (const name of adapter.mlpInputs(l)) weights.set(name, await rotateReader(get(name), Qm, d, dp));
    });
    // R' = x_in S_attn + o_new(attn(x_in)), equal to (R Qm)[:, :d'] up to rounding.
    const Rp = await clock('rotation_s', () => projectSignal(R, N, Qm, d, dp));
    // Y: the layer output in the original basis (original down, shortcut back to the original basis).
    const Y = await clock('calibration_s', () => adapter.runMlpHalf(fused, l, weights, backToOriginal(Qm, d, dp), Rp, windows.length, seqLen, d));
    progress(`layer ${l} mlp`);
    const Qn = await clock('pca_s', () => options.basis(Y, N, d, `layer ${l} output`));
    const dout = l < L - 1 || options.sliceHead ? dp : d;
    await clock('rotation_s', async () => {
      weights.set(adapter.mlpShortcut(l), await shortcutMatrix(Qm, dp, Qn, dout, d));
      weights.set(adapter.mlpOutput(l), await rotateWriter(get(adapter.mlpOutput(l)), Qn, d, dout));
    });
    xIn = await clock('rotation_s', () => projectSignal(Y, N, Qn, d, dout));
    Q = Qn;
    din = dout;
    progress(`layer ${l} output`);
  }
  weights.set(adapter.head, await clock('rotation_s', () => rotateReader(get(adapter.head), Q, d, din)));
  progress('head');
  return { model: { ...fused, weights }, timings };
}
