/**
 * The SliceGPT driver for parallel blocks, `out = x + attn(norm(x)) + mlp(norm(x))` (Phi-2):
 * one norm, one basis and one shortcut per layer (SliceGPT §3.4; SLICEGPT.md §6; official
 * `rotate_and_slice_parallel`). Layer l's readers (q, k, v and the MLP input) read the basis of
 * its input; its two writers (attention output and MLP output) write the basis of its output,
 * chosen by PCA of the layer output measured with the readers already sliced; the shortcut is
 * `S = Q_in[:, :din]^T Q_out[:, :dout]`.
 */
import { attentionReaders, mlpReaders } from '../models/arch/spec.js';
import { layoutOf } from '../models/registry.js';
import { layerTensors } from '../models/onnx/tensors.js';
import type { LoadedModel } from '../models/types.js';
import { runLayerPart } from './calibrate.js';
import { SliceRun, type SliceOptions, type SliceTimings } from './driver.js';
import { backToOriginal } from './rotate.js';

/**
 * Rotates and slices a FUSED model (slicer/fusion.ts) with parallel blocks to width d'.
 * @returns the sliced weights (plus one shortcut matrix per layer) and timings.
 * @throws RangeError when width exceeds hidden_size or there are no windows.
 */
export async function rotateAndSliceParallel(fused: LoadedModel, options: SliceOptions): Promise<{ model: LoadedModel; timings: SliceTimings }> {
  const { config } = fused;
  if (config.block !== 'parallel') throw new Error(`rotateAndSliceParallel: ${config.architectures[0]} has ${config.block} blocks`);
  const layout = layoutOf(config);
  const L = config.num_hidden_layers;
  const run = new SliceRun(fused, options, 2 + 2 * L);
  const { d, seqLen } = run;
  const windows = options.windows.length;

  let { Q, x: xIn } = await run.embedding();
  let din = options.width;
  for (let l = 0; l < L; l++) {
    const layer = layout.layers[l];
    const Qin = Q;
    await run.rotateReaders([...attentionReaders(layer), ...mlpReaders(layer)], Qin, din);
    // Y: the layer output in the original basis (original writers, shortcut back to the original basis).
    const Y = await run.clock('calibration_s', () =>
      runLayerPart(config, d, l, { ...layerTensors(run.weights, layer), attnShortcut: backToOriginal(Qin, d, din) }, 'block', xIn, windows, seqLen));
    run.progress(`layer ${l} block`);
    ({ Q, width: din, x: xIn } = await run.closeLayer(l, Y, Qin, din, layer.attnShortcut, [layer.o, layer.down]));
  }
  await run.head(Q, din);
  return run.result();
}
