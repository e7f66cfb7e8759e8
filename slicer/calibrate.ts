/**
 * Calibration forwards of the slicer: the signal entering the first layer (the embedding
 * output) and one part of one layer at a time (models/onnx/decoder-graph.ts
 * `buildLayerPartGraph`), run through onnxruntime in float32, the model dtype (PROTOCOL.md §5),
 * over every calibration window, each fed with positions 0..seqLen-1 and a causal mask (the
 * sliding-window mask for sliding layers).
 */
import os from 'node:os';
import * as ort from 'onnxruntime-node';
import { isSlidingLayer, type DecoderConfig } from '../models/config.js';
import { MASKED, SLIDING_BIAS_INPUT } from '../models/onnx/contract.js';
import { buildLayerPartGraph, type LayerPart } from '../models/onnx/decoder-graph.js';
import type { LayerTensors } from '../models/onnx/tensors.js';
import type { WeightTensor } from '../models/types.js';
import { withGraphFiles } from '../runtime/graph-files.js';

/** Windows per onnxruntime run during calibration. */
const CALIBRATION_BATCH = 16;

/**
 * The embedding output of every calibration token in the original basis: the token embedding
 * row, plus the learned position embedding row (position + offset) when the model has one.
 * @param windows equal-length token windows.
 * @returns [windows * seqLen, d] float32, row-major.
 */
export function embeddingSignal(windows: readonly (readonly number[])[], embedTokens: WeightTensor, embedPositions?: { table: WeightTensor; offset: number }): Float32Array {
  const d = embedTokens.shape[1];
  const seqLen = windows[0].length;
  const x = new Float32Array(windows.length * seqLen * d);
  // Read once: lazy tensors produce their values on each read.
  const tokens = embedTokens.data;
  const positions = embedPositions?.table.data;
  let row = 0;
  for (const w of windows) {
    w.forEach((token, p) => {
      const out = x.subarray(row * d, (row + 1) * d);
      out.set(tokens.subarray(token * d, (token + 1) * d));
      if (embedPositions && positions) {
        const r = p + embedPositions.offset;
        const pos = positions.subarray(r * d, (r + 1) * d);
        for (let j = 0; j < d; j++) out[j] += pos[j];
      }
      row++;
    });
  }
  return x;
}

/**
 * The causal mask [B, S, S] (0 = attend, MASKED = masked) of windows fed with positions
 * 0..S-1, restricted to the last `window` positions (j > i - window) when given.
 */
export function calibrationMask(batch: number, seqLen: number, window: number | null): Float32Array {
  const bias = new Float32Array(batch * seqLen * seqLen);
  for (let b = 0; b < batch; b++) {
    for (let i = 0; i < seqLen; i++) {
      const row = (b * seqLen + i) * seqLen;
      for (let j = 0; j < seqLen; j++) if (j > i || (window !== null && j <= i - window)) bias[row + j] = MASKED;
    }
  }
  return bias;
}

/**
 * Runs one part of layer `l` over calibration windows.
 * @param x [windows * seqLen, in] float32 (the part's input).
 * @param normDivisor the ORIGINAL hidden_size d.
 * @returns [windows * seqLen, out] float32.
 */
export async function runLayerPart(config: DecoderConfig, normDivisor: number, l: number, tensors: LayerTensors, part: LayerPart, x: Float32Array, windows: number, seqLen: number): Promise<Float32Array> {
  const inWidth = part === 'mlp' ? tensors.up.weight.shape[1] : tensors.q.weight.shape[1];
  const outWidth = part === 'attention' ? tensors.o.weight.shape[0] : tensors.down.weight.shape[0];
  // The layer's weights go to a temporary file that onnxruntime reads by path (runtime/graph-files.ts).
  const session = await withGraphFiles(
    (file) => buildLayerPartGraph(config, normDivisor, l, tensors, part, file),
    ({ modelPath }) => ort.InferenceSession.create(modelPath, { graphOptimizationLevel: 'all', intraOpNumThreads: os.availableParallelism() }),
  );
  return runGraph(session, x, inWidth, outWidth, windows, seqLen, isSlidingLayer(config, l) ? config.sliding_window : null);
}

async function runGraph(session: ort.InferenceSession, x: Float32Array, inWidth: number, outWidth: number, windows: number, seqLen: number, slidingWindow: number | null): Promise<Float32Array> {
  try {
    const out = new Float32Array(windows * seqLen * outWidth);
    for (let start = 0; start < windows; start += CALIBRATION_BATCH) {
      const B = Math.min(CALIBRATION_BATCH, windows - start);
      const pos = new BigInt64Array(B * seqLen);
      for (let b = 0; b < B; b++) for (let i = 0; i < seqLen; i++) pos[b * seqLen + i] = BigInt(i);
      const hidden = x.subarray(start * seqLen * inWidth, (start + B) * seqLen * inWidth);
      const feeds: Record<string, ort.Tensor> = {
        hidden: new ort.Tensor('float32', hidden, [B, seqLen, inWidth]),
        position_ids: new ort.Tensor('int64', pos, [B, seqLen]),
        attention_bias: new ort.Tensor('float32', calibrationMask(B, seqLen, null), [B, seqLen, seqLen]),
      };
      if (slidingWindow !== null) feeds[SLIDING_BIAS_INPUT] = new ort.Tensor('float32', calibrationMask(B, seqLen, slidingWindow), [B, seqLen, seqLen]);
      const res = await session.run(feeds);
      out.set(res.out.data as Float32Array, start * seqLen * outWidth);
    }
    return out;
  } finally {
    await session.release();
  }
}
