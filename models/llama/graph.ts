/**
 * ONNX graph builder for the Llama family (dense and SliceGPT-sliced), with a KV cache.
 *
 * Every width comes from the weight shapes (models/llama/widths.ts), so one builder emits the
 * dense graph and any sliced width: a sliced model has a narrower residual stream d' and
 * d' x d' shortcut matrices on the residual connections (SliceGPT, arXiv 2401.15024 §3.4;
 * SLICEGPT.md §3 and §5). RMSNorm keeps dividing by the ORIGINAL hidden_size: over a residual
 * of width w it is emitted as ONNX `RMSNormalization` (opset 23) with scale
 * `sqrt(d / w) * weight` and epsilon `eps * d / w`, which is exact.
 *
 * Graph interface (the onnxruntime-genai naming convention):
 *   inputs   input_ids                   int64   [batch, sequence]
 *            position_ids                int64   [batch, sequence]   (absolute positions, RoPE)
 *            attention_bias              float32 [batch, sequence, total_sequence]
 *                                        (0 = attend, -1e9 = masked; total = past + sequence)
 *            past_key_values.{i}.key     float   [batch, num_key_value_heads, past, head_dim]
 *            past_key_values.{i}.value   same
 *   outputs  logits                      float32 [batch, sequence | 1, vocab_size]
 *            present.{i}.key|value       float   [batch, num_key_value_heads, total_sequence, head_dim]
 *
 * Attention uses ONNX opset-23 `Attention` (grouped KV heads, any head size: com.microsoft
 * GroupQueryAttention needs head_size % 16 == 0, which stories260K's 8 is not) and
 * `RotaryEmbedding` in the Hugging Face half-rotation layout.
 */
import { OnnxGraph, type BuiltModel, type ElemType } from '../onnx/builder.js';
import { W, type LoadedModel, type WeightTensor } from '../types.js';
import { layerWidths } from './widths.js';

export interface GraphOptions {
  /** 'last': logits of the last position only (serving); 'all': every position (perplexity). */
  logits: 'last' | 'all';
  /** Weight and activation precision; logits are always float32. Default float32. */
  dtype?: 'float32' | 'float16';
}

/** Value used in `attention_bias` for masked positions. Finite so fully-masked pad rows stay NaN-free. */
export const MASKED = -1e9;

/**
 * Emits the ONNX graph of a Llama-family model.
 * @param model dense or sliced model (weights `[out, in]`, HF layout).
 * @returns the encoded model and its external weight buffer.
 * @throws Error when the weight shapes do not chain (see {@link layerWidths}).
 */
export function buildLlamaGraph(model: LoadedModel, options: GraphOptions): BuiltModel {
  const { config } = model;
  const widths = layerWidths(model);
  const fp16 = options.dtype === 'float16';
  const act: ElemType = fp16 ? 'float16' : 'float32';
  const g = new OnnxGraph(`${model.id}-${options.logits}`);
  const H = config.num_attention_heads;
  const KV = config.num_key_value_heads;
  const hd = config.head_dim;
  const d = widths.normDivisor;

  const weight = (name: string, data: Float32Array, dims: number[]): string =>
    fp16 ? g.initializer(name, 'float16', dims, toFloat16(data)) : g.initializer(name, 'float32', dims, data);
  const get = (name: string): WeightTensor => {
    const t = model.weights.get(name);
    if (!t) throw new Error(`missing weight ${name}`);
    return t;
  };
  /** x @ W^T for the concatenation (along out) of weights stored [out, in]. */
  const linear = (x: string, name: string, ws: WeightTensor[]): string => {
    const inn = ws[0].shape[1];
    const out = ws.reduce((s, w) => s + w.shape[0], 0);
    return g.op('MatMul', [x, weight(name, transposeConcat(ws, inn, out), [inn, out])]);
  };
  const rmsNorm = (x: string, width: number, w: WeightTensor | undefined, name: string): string => {
    const k = Math.sqrt(d / width);
    const scale = new Float32Array(width);
    for (let i = 0; i < width; i++) scale[i] = k * (w ? w.data[i] : 1);
    return g.op('RMSNormalization', [x, weight(name, scale, [width])], { axis: -1, epsilon: { float: (config.rms_norm_eps * d) / width }, stash_type: 1 });
  };

  const inputIds = g.input('input_ids', 'int64', ['batch', 'sequence']);
  const positionIds = g.input('position_ids', 'int64', ['batch', 'sequence']);
  let bias = g.input('attention_bias', 'float32', ['batch', 'sequence', 'total_sequence']);
  bias = g.op('Unsqueeze', [bias, g.int64([1])]); // [B, 1, S, T], broadcast over heads
  if (fp16) bias = g.op('Cast', [bias], { to: 10 });

  // RoPE tables [max_position, head_dim / 2] (HF: inv_freq = theta^(-2i/hd)).
  const maxPos = config.max_position_embeddings;
  const half = hd / 2;
  const cos = new Float32Array(maxPos * half);
  const sin = new Float32Array(maxPos * half);
  for (let p = 0; p < maxPos; p++) {
    for (let i = 0; i < half; i++) {
      const angle = p * Math.pow(config.rope_theta, (-2 * i) / hd);
      cos[p * half + i] = Math.cos(angle);
      sin[p * half + i] = Math.sin(angle);
    }
  }
  const cosCache = weight('rope.cos', cos, [maxPos, half]);
  const sinCache = weight('rope.sin', sin, [maxPos, half]);

  const embed = get(W.embed);
  let x = g.op('Gather', [weight(W.embed, embed.data, embed.shape), inputIds], { axis: 0 });

  const toHeads = (t: string, heads: number): string =>
    g.op('Transpose', [g.op('Reshape', [t, g.int64([0, 0, heads, hd])])], { perm: [0, 2, 1, 3] });

  for (let l = 0; l < config.num_hidden_layers; l++) {
    const { input, middle } = widths.layers[l];
    const n1 = rmsNorm(x, input, model.weights.get(W.attnNorm(l)), `${W.layer(l)}.attn_norm_scale`);
    const qkv = linear(n1, `${W.layer(l)}.self_attn.qkv_proj.weight_t`, [get(W.q(l)), get(W.k(l)), get(W.v(l))]);
    const [q, k, v] = g.node('Split', [qkv, g.int64([H * hd, KV * hd, KV * hd])], { axis: -1 }, { outputCount: 3 });
    const qh = g.op('RotaryEmbedding', [toHeads(q, H), cosCache, sinCache, positionIds], { interleaved: 0 });
    const kh = g.op('RotaryEmbedding', [toHeads(k, KV), cosCache, sinCache, positionIds], { interleaved: 0 });
    const vh = toHeads(v, KV);
    const pastK = g.input(`past_key_values.${l}.key`, act, ['batch', KV, 'past_sequence', hd]);
    const pastV = g.input(`past_key_values.${l}.value`, act, ['batch', KV, 'past_sequence', hd]);
    const [attn] = g.node('Attention', [qh, kh, vh, bias, pastK, pastV], { scale: { float: 1 / Math.sqrt(hd) } }, {
      outputs: [g.fresh('attn'), `present.${l}.key`, `present.${l}.value`],
    });
    g.output(`present.${l}.key`, act, ['batch', KV, 'total_sequence', hd]);
    g.output(`present.${l}.value`, act, ['batch', KV, 'total_sequence', hd]);
    const merged = g.op('Reshape', [g.op('Transpose', [attn], { perm: [0, 2, 1, 3] }), g.int64([0, 0, H * hd])]);
    const attnOut = linear(merged, `${W.layer(l)}.self_attn.o_proj.weight_t`, [get(W.o(l))]);
    const sa = model.weights.get(W.attnShortcut(l));
    const residual1 = sa ? g.op('MatMul', [x, weight(W.attnShortcut(l), sa.data, sa.shape)]) : x;
    const h = g.op('Add', [residual1, attnOut]);

    const n2 = rmsNorm(h, middle, model.weights.get(W.mlpNorm(l)), `${W.layer(l)}.mlp_norm_scale`);
    const I = get(W.gate(l)).shape[0];
    const gu = linear(n2, `${W.layer(l)}.mlp.gate_up_proj.weight_t`, [get(W.gate(l)), get(W.up(l))]);
    const [gate, up] = g.node('Split', [gu, g.int64([I, I])], { axis: -1 }, { outputCount: 2 });
    const act1 = g.op('Mul', [g.op('Mul', [gate, g.op('Sigmoid', [gate])]), up]);
    const mlpOut = linear(act1, `${W.layer(l)}.mlp.down_proj.weight_t`, [get(W.down(l))]);
    const sm = model.weights.get(W.mlpShortcut(l));
    const residual2 = sm ? g.op('MatMul', [h, weight(W.mlpShortcut(l), sm.data, sm.shape)]) : h;
    x = g.op('Add', [residual2, mlpOut]);
  }

  if (options.logits === 'last') {
    x = g.op('Slice', [x, g.int64([-1]), g.int64([Number.MAX_SAFE_INTEGER]), g.int64([1])]);
  }
  const nf = rmsNorm(x, widths.head, model.weights.get(W.finalNorm), 'model.norm_scale');
  const head = model.weights.get(W.lmHead) ?? embed;
  let logits = linear(nf, 'lm_head.weight_t', [head]);
  if (fp16) logits = g.op('Cast', [logits], { to: 1 });
  g.op('Identity', [logits], {}, { output: 'logits' });
  g.output('logits', 'float32', ['batch', options.logits === 'last' ? 1 : 'sequence', head.shape[0]]);
  return g.build();
}

/** Concatenates weights [out_i, in] along out and transposes to [in, sum(out_i)]. */
function transposeConcat(ws: WeightTensor[], inn: number, out: number): Float32Array {
  const t = new Float32Array(inn * out);
  let col = 0;
  for (const w of ws) {
    const [o, i2] = w.shape;
    if (i2 !== inn) throw new Error(`fused projection: input widths differ (${i2} vs ${inn})`);
    for (let r = 0; r < o; r++) {
      const row = r * inn;
      for (let c = 0; c < inn; c++) t[c * out + col + r] = w.data[row + c];
    }
    col += o;
  }
  return t;
}

/** Float32 -> IEEE half bit patterns, round to nearest even. */
export function toFloat16(src: Float32Array): Uint16Array {
  const out = new Uint16Array(src.length);
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  for (let i = 0; i < src.length; i++) {
    f[0] = src[i];
    const x = u[0];
    const sign = (x >>> 16) & 0x8000;
    const exp = (x >>> 23) & 0xff;
    let mant = x & 0x7fffff;
    if (exp === 0xff) {
      out[i] = sign | 0x7c00 | (mant ? 0x200 : 0);
      continue;
    }
    const e = exp - 127 + 15;
    if (e >= 0x1f) {
      out[i] = sign | 0x7c00;
      continue;
    }
    if (e <= 0) {
      if (e < -10) {
        out[i] = sign;
        continue;
      }
      mant |= 0x800000;
      const shift = 14 - e;
      let h = mant >>> shift;
      const rem = mant & ((1 << shift) - 1);
      const halfway = 1 << (shift - 1);
      if (rem > halfway || (rem === halfway && h & 1)) h++;
      out[i] = sign | h;
      continue;
    }
    let h = (e << 10) | (mant >>> 13);
    const rem = mant & 0x1fff;
    if (rem > 0x1000 || (rem === 0x1000 && h & 1)) h++;
    out[i] = sign | h;
  }
  return out;
}
