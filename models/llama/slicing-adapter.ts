/**
 * The Llama family's SliceGPT adapter (slicer/adapter.ts): RMSNorm fusion and the calibration
 * forwards of one half layer, run through onnxruntime half-layer graphs (float32, the model
 * dtype, PROTOCOL.md §5).
 */
import os from 'node:os';
import * as ort from 'onnxruntime-node';
import type { SlicingAdapter } from '../../slicer/adapter.js';
import { W, type LoadedModel, type WeightTensor } from '../types.js';
import { buildHalfLayerGraph, MASKED } from './graph.js';

/** Windows per onnxruntime run during calibration. */
const CALIBRATION_BATCH = 16;

/** W <- W diag(alpha): scales column j of a weight stored [out, in] by alpha[j]. */
function scaleColumns(w: WeightTensor, alpha: Float32Array): WeightTensor {
  const [out, inn] = w.shape;
  const data = new Float32Array(w.data.length);
  for (let o = 0; o < out; o++) for (let i = 0; i < inn; i++) data[o * inn + i] = w.data[o * inn + i] * alpha[i];
  return { shape: [out, inn], data };
}

async function runHalf(graph: ReturnType<typeof buildHalfLayerGraph>, x: Float32Array, inWidth: number, outWidth: number, windows: number, seqLen: number): Promise<Float32Array> {
  const session = await ort.InferenceSession.create(graph.model, {
    graphOptimizationLevel: 'all',
    intraOpNumThreads: os.availableParallelism(),
    externalData: [{ path: graph.externalDataPath, data: graph.externalData }],
  } as ort.InferenceSession.SessionOptions);
  try {
    const out = new Float32Array(windows * seqLen * outWidth);
    for (let start = 0; start < windows; start += CALIBRATION_BATCH) {
      const B = Math.min(CALIBRATION_BATCH, windows - start);
      const pos = new BigInt64Array(B * seqLen);
      const bias = new Float32Array(B * seqLen * seqLen);
      for (let b = 0; b < B; b++) {
        for (let i = 0; i < seqLen; i++) {
          pos[b * seqLen + i] = BigInt(i);
          for (let j = i + 1; j < seqLen; j++) bias[(b * seqLen + i) * seqLen + j] = MASKED;
        }
      }
      const hidden = x.subarray(start * seqLen * inWidth, (start + B) * seqLen * inWidth);
      const res = await session.run({
        hidden: new ort.Tensor('float32', hidden, [B, seqLen, inWidth]),
        position_ids: new ort.Tensor('int64', pos, [B, seqLen]),
        attention_bias: new ort.Tensor('float32', bias, [B, seqLen, seqLen]),
      });
      out.set(res.out.data as Float32Array, start * seqLen * outWidth);
    }
    return out;
  } finally {
    await session.release();
  }
}

const get = (weights: Map<string, WeightTensor>, name: string): WeightTensor => {
  const t = weights.get(name);
  if (!t) throw new Error(`missing weight ${name}`);
  return t;
};

export const llamaSlicingAdapter: SlicingAdapter = {
  name: 'LlamaForCausalLM',
  embedding: W.embed,
  head: W.lmHead,
  attentionInputs: (l) => [W.q(l), W.k(l), W.v(l)],
  attentionOutput: (l) => W.o(l),
  mlpInputs: (l) => [W.gate(l), W.up(l)],
  mlpOutput: (l) => W.down(l),
  attentionShortcut: (l) => W.attnShortcut(l),
  mlpShortcut: (l) => W.mlpShortcut(l),

  /**
   * SliceGPT §3.1 for RMSNorm (PROTOCOL.md §5.1): q, k, v <- W diag(rms_att); gate, up <-
   * W diag(rms_ffn); head <- (lm_head or the tied embedding) diag(rms_final), a new matrix.
   * The embedding is NOT mean-centred (PROTOCOL.md §7: that would change a Llama model).
   */
  fuseNorms(model: LoadedModel): LoadedModel {
    const weights = new Map(model.weights);
    const L = model.config.num_hidden_layers;
    const fuse = (norm: string, readers: string[]) => {
      const alpha = weights.get(norm);
      if (!alpha) return;
      for (const r of readers) weights.set(r, scaleColumns(get(weights, r), alpha.data));
      weights.delete(norm);
    };
    for (let l = 0; l < L; l++) {
      fuse(W.attnNorm(l), [W.q(l), W.k(l), W.v(l)]);
      fuse(W.mlpNorm(l), [W.gate(l), W.up(l)]);
    }
    const head = weights.get(W.lmHead) ?? get(weights, W.embed);
    const finalNorm = weights.get(W.finalNorm);
    weights.set(W.lmHead, finalNorm ? scaleColumns(head, finalNorm.data) : { shape: [...head.shape], data: Float32Array.from(head.data) });
    weights.delete(W.finalNorm);
    return { ...model, weights, config: { ...model.config, tie_word_embeddings: false } };
  },

  async runAttentionHalf(model, l, weights, shortcut, x, windows, seqLen, normDivisor) {
    const attention = { q: get(weights, W.q(l)), k: get(weights, W.k(l)), v: get(weights, W.v(l)), o: get(weights, W.o(l)), shortcut };
    const graph = buildHalfLayerGraph(model.config, normDivisor, { attention });
    return runHalf(graph, x, attention.q.shape[1], attention.o.shape[0], windows, seqLen);
  },

  async runMlpHalf(model, l, weights, shortcut, x, windows, seqLen, normDivisor) {
    const mlp = { gate: get(weights, W.gate(l)), up: get(weights, W.up(l)), down: get(weights, W.down(l)), shortcut };
    const graph = buildHalfLayerGraph(model.config, normDivisor, { mlp });
    return runHalf(graph, x, mlp.gate.shape[1], mlp.down.shape[0], windows, seqLen);
  },
};
