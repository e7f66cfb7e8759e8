/**
 * The ONNX graph of a decoder-only model (dense or SliceGPT-sliced) with a KV cache, for every
 * registered family, and the one-layer graphs the slicer calibrates with. The family's layout
 * (models/registry.ts) says which tensors to read; every width comes from the weight shapes
 * (models/widths.ts), so one builder emits the dense graph and any sliced width (SliceGPT,
 * arXiv 2401.15024 §3.4; SLICEGPT.md §3 and §5). Inputs and outputs: models/onnx/contract.ts.
 */
import { isSlidingLayer, type DecoderConfig } from '../config.js';
import { layoutOf } from '../registry.js';
import type { LoadedModel } from '../types.js';
import { modelWidths } from '../widths.js';
import { BlockEmitter } from './blocks.js';
import { OnnxGraph, type BuiltModel } from './builder.js';
import { defaultAttentionKernel, keyCacheLayout, type AttentionKernel } from './contract.js';
import { layerTensors, linearTensors, normTensors, requireTensor, type LayerTensors } from './tensors.js';

export interface GraphOptions {
  /** 'last': logits of the last position only (serving); 'all': every position (perplexity). */
  logits: 'last' | 'all';
  /** Weight and activation precision; logits are always float32. Default float32. */
  dtype?: 'float32' | 'float16';
  /** How attention is emitted (default contract.ts `defaultAttentionKernel()`). */
  attention?: AttentionKernel;
  /**
   * Declare the full `present.{i}.key|value` outputs (default true, the onnxruntime-genai
   * convention). A host-side cache needs only `step_key_values.*`; without present outputs no
   * kernel has to copy the whole cache into them every step.
   */
  presentOutputs?: boolean;
  /**
   * Write the weights to this file as the graph is built (builder.ts `OnnxGraph.streamingTo`)
   * instead of one in-memory buffer: memory stays at about one layer's weights whatever the
   * model size. Open the result from a `model.onnx` saved next to it (runtime/graph-files.ts).
   */
  externalDataFile?: string;
}

/** Whether any layer of `config` uses a sliding window (the graph then takes sliding_attention_bias). */
export function usesSlidingWindow(config: DecoderConfig): boolean {
  return config.layer_types.some((_, l) => isSlidingLayer(config, l));
}

/** A graph streaming its weights to `file`, or an in-memory one. */
function newGraph(name: string, file: string | undefined): OnnxGraph {
  return file ? OnnxGraph.streamingTo(name, file) : new OnnxGraph(name);
}

/**
 * Emits the decoder graph of `model`. Tensors are read one at a time (lazy ones from disk);
 * with `externalDataFile` each is written out as soon as it is emitted, so none is kept. The
 * tensors of a quantized model's `quantization.tensors` (models/quant/model.ts) become
 * `com.microsoft.MatMulNBits` nodes (their scales in the graph's precision, float16 on GPUs);
 * everything else is float.
 * @returns the encoded model and its external weights (buffer or file).
 * @throws Error when the weight shapes do not chain (models/widths.ts) or a tensor is missing.
 */
export function buildDecoderGraph(model: LoadedModel, options: GraphOptions): BuiltModel {
  const { config, weights } = model;
  const quantized = model.quantization?.tensors;
  const layout = layoutOf(config);
  const widths = modelWidths(model, layout);
  const attention = options.attention ?? defaultAttentionKernel();
  const e = new BlockEmitter(newGraph(`${model.id}-${options.logits}`, options.externalDataFile), config, widths.normDivisor, options.dtype ?? 'float32', attention, usesSlidingWindow(config));
  const g = e.g;
  const KV = config.num_key_value_heads;
  const hd = config.head_dim;
  const keyDims = (seq: string) => (keyCacheLayout(attention) === 'transposed' ? ['batch', KV, hd, seq] : ['batch', KV, seq, hd]);

  const embed = requireTensor(weights, layout.embedTokens);
  const positions = layout.embedPositions ? requireTensor(weights, layout.embedPositions) : undefined;
  let x = e.embed(g.input('input_ids', 'int64', ['batch', 'sequence']), embed, positions, { tokens: layout.embedTokens, positions: layout.embedPositions });
  const present = options.presentOutputs !== false;
  layout.layers.forEach((layer, l) => {
    const pastK = g.input(`past_key_values.${l}.key`, e.act, keyDims('past_sequence'));
    const pastV = g.input(`past_key_values.${l}.value`, e.act, ['batch', KV, 'past_sequence', hd]);
    x = e.layer(x, l, layerTensors(weights, layer, quantized), `layers.${l}`, {
      pastK,
      pastV,
      ...(present ? { presentK: `present.${l}.key`, presentV: `present.${l}.value` } : {}),
      stepK: `step_key_values.${l}.key`,
      stepV: `step_key_values.${l}.value`,
    });
    if (present) {
      g.output(`present.${l}.key`, e.act, keyDims('total_sequence'));
      g.output(`present.${l}.value`, e.act, ['batch', KV, 'total_sequence', hd]);
    }
    g.output(`step_key_values.${l}.key`, e.act, ['batch', KV, 'sequence', hd]);
    g.output(`step_key_values.${l}.value`, e.act, ['batch', KV, 'sequence', hd]);
  });
  if (options.logits === 'last') {
    x = g.op('Slice', [x, g.int64([-1]), g.int64([Number.MAX_SAFE_INTEGER]), g.int64([1])]);
  }
  const nf = e.norm(x, widths.head, normTensors(weights, layout.finalNorm), 'final_norm');
  const untied = weights.has(layout.lmHead.weight) || quantized?.has(layout.lmHead.weight);
  const head = untied ? linearTensors(weights, layout.lmHead, quantized) : { weight: embed, ...(layout.lmHead.bias ? { bias: requireTensor(weights, layout.lmHead.bias) } : {}) };
  // Named where computed: an Identity would copy [batch, sequence | 1, vocab] floats each run.
  if (e.act === 'float16') g.op('Cast', [e.linear(nf, 'lm_head', [head])], { to: 1 }, { output: 'logits' });
  else e.linear(nf, 'lm_head', [head], 'logits');
  g.output('logits', 'float32', ['batch', options.logits === 'last' ? 1 : 'sequence', head.weight.shape[0]]);
  if (options.logits === 'last') {
    // Greedy decoding without reading the logits back: the first index of the maximum, as the
    // host-side argmax (engine/sampler.ts) picks on ties (ONNX ArgMax, select_last_index 0).
    g.op('ArgMax', ['logits'], { axis: -1, keepdims: 0, select_last_index: 0 }, { output: 'greedy_token' });
    g.output('greedy_token', 'int64', ['batch', 1]);
  }
  return g.build();
}

/**
 * Which part of layer l a calibration graph computes: the attention half or the MLP half of a
 * sequential block, or a whole parallel block.
 */
export type LayerPart = 'attention' | 'mlp' | 'block';

/**
 * A graph of ONE part of layer `l`, no KV cache, for calibration (slicer/): input `hidden`
 * [batch, sequence, in] plus `position_ids`, `attention_bias` (and `sliding_attention_bias`
 * when layer l slides) as in the decoder graph; output `out` [batch, sequence, out].
 *   attention: `x @ attn_shortcut + o(attn(norm(x)))`
 *   mlp:       `h @ mlp_shortcut + mlp(norm(h))`
 *   block:     `x @ attn_shortcut + o(attn(norm(x))) + mlp(norm(x))` (parallel blocks)
 * Runs in float32, the model dtype (PROTOCOL.md §5).
 * @param normDivisor the ORIGINAL hidden_size d.
 * @param externalDataFile as GraphOptions.externalDataFile.
 * @throws Error for a part that does not fit the block kind.
 */
export function buildLayerPartGraph(config: DecoderConfig, normDivisor: number, l: number, t: LayerTensors, part: LayerPart, externalDataFile?: string): BuiltModel {
  if ((part === 'block') !== (config.block === 'parallel')) throw new Error(`part ${part} does not fit ${config.block} blocks`);
  const e = new BlockEmitter(newGraph(`layer-${l}-${part}`, externalDataFile), config, normDivisor, 'float32', defaultAttentionKernel(), isSlidingLayer(config, l));
  const inWidth = part === 'mlp' ? t.up.weight.shape[1] : t.q.weight.shape[1];
  const outWidth = part === 'attention' ? t.o.weight.shape[0] : t.down.weight.shape[0];
  const x = e.g.input('hidden', 'float32', ['batch', 'sequence', inWidth]);
  const prefix = `layers.${l}`;
  const out = part === 'attention' ? e.attentionHalf(x, l, t, prefix, {}) : part === 'mlp' ? e.mlpHalf(x, t, prefix) : e.parallelLayer(x, l, t, prefix, {});
  e.g.op('Identity', [out], {}, { output: 'out' });
  e.g.output('out', 'float32', ['batch', 'sequence', outWidth]);
  return e.g.build();
}
