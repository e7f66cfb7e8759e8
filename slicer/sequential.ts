/**
 * The SliceGPT driver for sequential blocks (attention, then MLP, each with its own norm and
 * residual): Ashkboos et al. 2024 (arXiv 2401.15024) §3.3-3.4; official
 * `rotate_and_slice_sequential`; PROTOCOL.md §5.3, step for step.
 *
 * Calibration is sequential: the signals that calibrate layer l come from layers 0..l-1 in
 * their already-sliced form, and inside layer l the MLP-input signal is measured with the
 * attention inputs already sliced, the layer output with the MLP inputs already sliced.
 */
import { attentionReaders, mlpReaders } from '../models/arch/spec.js';
import { layoutOf } from '../models/registry.js';
import { layerTensors } from '../models/onnx/tensors.js';
import type { LoadedModel } from '../models/types.js';
import { runLayerPart } from './calibrate.js';
import { SliceRun, type SliceOptions, type SliceTimings } from './driver.js';
import { backToOriginal, shortcutMatrix } from './rotate.js';

/**
 * Rotates and slices a FUSED model (slicer/fusion.ts) with sequential blocks to width d'.
 * @returns the sliced weights (plus shortcut matrices) as a new LoadedModel, and timings.
 * @throws RangeError when width exceeds hidden_size or there are no windows.
 */
export async function rotateAndSliceSequential(fused: LoadedModel, options: SliceOptions): Promise<{ model: LoadedModel; timings: SliceTimings }> {
  const { config } = fused;
  if (config.block !== 'sequential') throw new Error(`rotateAndSliceSequential: ${config.architectures[0]} has ${config.block} blocks`);
  const layout = layoutOf(config);
  const L = config.num_hidden_layers;
  const run = new SliceRun(fused, options, 2 + 3 * L);
  const { d } = run;
  const dp = options.width;
  const windows = options.windows.length;
  const { seqLen } = run;

  let { Q, x: xIn } = await run.embedding();
  let din = dp;
  for (let l = 0; l < L; l++) {
    const layer = layout.layers[l];
    const Qa = Q;
    await run.rotateReaders(attentionReaders(layer), Qa, din);
    // R: the MLP-norm input in the original basis (original o, shortcut back to the original basis).
    const R = await run.clock('calibration_s', () =>
      runLayerPart(config, d, l, { ...layerTensors(run.weights, layer), attnShortcut: backToOriginal(Qa, d, din) }, 'attention', xIn, windows, seqLen));
    run.progress(`layer ${l} attention`);
    const Qm = await run.basis(R, `layer ${l} mlp input`);
    run.weights.set(layer.attnShortcut, await run.clock('rotation_s', () => shortcutMatrix(Qa, din, Qm, dp, d)));
    await run.rotateWriters([layer.o], Qm, dp);
    await run.rotateReaders(mlpReaders(layer), Qm, dp);
    // R' = x_in S_attn + o_new(attn(x_in)), equal to (R Qm)[:, :d'] up to rounding.
    const Rp = await run.project(R, Qm, dp);
    // Y: the layer output in the original basis (original down, shortcut back to the original basis).
    const Y = await run.clock('calibration_s', () =>
      runLayerPart(config, d, l, { ...layerTensors(run.weights, layer), mlpShortcut: backToOriginal(Qm, d, dp) }, 'mlp', Rp, windows, seqLen));
    run.progress(`layer ${l} mlp`);
    ({ Q, width: din, x: xIn } = await run.closeLayer(l, Y, Qm, dp, layer.mlpShortcut!, [layer.down]));
  }
  await run.head(Q, din);
  return run.result();
}
