/**
 * What the slicer needs to know about an architecture, and nothing more: the slicing code
 * never names a model. One adapter per architecture (models/<arch>/slicing-adapter.ts)
 * implements it; the Llama family is the first (STYLE.md: microsoft/TransformerCompression's
 * `ModelAdapter`).
 *
 * To add an architecture: implement this interface, and register it in
 * slicer/adapters.ts. Sequential blocks (attention then MLP, each with its own norm and
 * residual, SliceGPT §3.4) are what the driver supports today; parallel blocks (Phi-2,
 * SLICEGPT.md §6) would add a second driver.
 */
import type { LoadedModel, WeightTensor } from '../models/types.js';

/** Weights are stored `[out, in]` (y = x W^T) unless said otherwise. */
export interface SlicingAdapter {
  /** Human-readable architecture name (for messages). */
  readonly name: string;
  /**
   * Norm fusion (SliceGPT §3.1): returns a model whose norms are weightless (the scales are
   * folded into the linear layers that read them) and whose head is untied from the embedding.
   * It computes the same function. LayerNorm architectures also mean-centre what writes the
   * residual here.
   */
  fuseNorms(model: LoadedModel): LoadedModel;
  /** Token embedding [vocab, d] (reads nothing, writes the residual). */
  embedding: string;
  /** The head [vocab, d] (reads the residual). */
  head: string;
  /** Linear layers of layer l that READ the residual before attention (q, k, v). */
  attentionInputs(l: number): string[];
  /** The linear layer of layer l that WRITES the attention output to the residual (o). */
  attentionOutput(l: number): string;
  /** Linear layers that read the residual before the MLP (gate, up / fc1). */
  mlpInputs(l: number): string[];
  /** The linear layer that writes the MLP output (down / fc2). */
  mlpOutput(l: number): string;
  /** Names under which the shortcut matrices (stored [in, out]) are saved. */
  attentionShortcut(l: number): string;
  mlpShortcut(l: number): string;
  /**
   * Runs the attention half `r = x @ shortcut + o(attn(norm(x)))` (weightless norm dividing by
   * `normDivisor`) over calibration windows, in the model dtype (float32).
   * @param x [windows * seqLen, in] float32, row-major.
   * @returns [windows * seqLen, out] float32.
   */
  runAttentionHalf(model: LoadedModel, l: number, weights: Map<string, WeightTensor>, shortcut: WeightTensor, x: Float32Array, windows: number, seqLen: number, normDivisor: number): Promise<Float32Array>;
  /** Same for the MLP half `out = h @ shortcut + down(mlp(norm(h)))`. */
  runMlpHalf(model: LoadedModel, l: number, weights: Map<string, WeightTensor>, shortcut: WeightTensor, x: Float32Array, windows: number, seqLen: number, normDivisor: number): Promise<Float32Array>;
}
