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
 *                                        ([..., head_dim, past] with the 'primitives' kernel:
 *                                        {@link keyCacheLayout})
 *            past_key_values.{i}.value   float   [batch, num_key_value_heads, past, head_dim]
 *   outputs  logits                      float32 [batch, sequence | 1, vocab_size]
 *            greedy_token                int64   [batch, 1] ('last' logits only: the argmax
 *                                        of each row's logits, lowest index on ties)
 *            present.{i}.key|value       float   [batch, num_key_value_heads, total_sequence, head_dim]
 *                                        (unless `presentOutputs: false`)
 *            step_key_values.{i}.key|value  float [batch, num_key_value_heads, sequence, head_dim]
 *                                        (only this step's entries, after RoPE: what a host-side
 *                                        cache needs back; fetching these instead of present.*
 *                                        saves copying the whole cache out every decode step)
 *
 * Attention is emitted from MatMul/Softmax by default ('primitives', see
 * {@link AttentionKernel}), or as the ONNX opset-23 `Attention` operator ('onnx-op'; grouped
 * KV heads, any head size: com.microsoft GroupQueryAttention needs head_size % 16 == 0, which
 * stories260K's 8 is not); RoPE is opset-23 `RotaryEmbedding` in the Hugging Face
 * half-rotation layout.
 */
import { OnnxGraph, type BuiltModel, type ElemType } from '../onnx/builder.js';
import { toFloat16Array } from '../safetensors.js';
import { W, type LlamaConfig, type LoadedModel, type WeightTensor } from '../types.js';
import { layerWidths } from './widths.js';

export interface GraphOptions {
  /** 'last': logits of the last position only (serving); 'all': every position (perplexity). */
  logits: 'last' | 'all';
  /** Weight and activation precision; logits are always float32. Default float32. */
  dtype?: 'float32' | 'float16';
  /** How attention is emitted (default {@link DEFAULT_ATTENTION_KERNEL}). */
  attention?: AttentionKernel;
  /**
   * Declare the full `present.{i}.key|value` outputs (default true, the onnxruntime-genai
   * convention). A host-side cache needs only `step_key_values.*`; without present outputs no
   * kernel has to copy the whole cache into them every step.
   */
  presentOutputs?: boolean;
}

/**
 * 'onnx-op': the opset-23 `Attention` operator; 'primitives': MatMul + Softmax with the query
 * heads of a KV group batched into one GEMM and a transposed key cache (see
 * {@link keyCacheLayout}). Both are exact and work for any head size. 'primitives' is the
 * default: on bench-110m at batch 16 with ~100 cached tokens it takes the non-weight work of a
 * decode step from ~20.6 to ~12.8 ms (onnxruntime's CPU `Attention` concatenates the whole
 * past into a present tensor and scores each query head separately); set
 * SLICESERVE_ATTENTION=onnx-op to compare.
 */
export type AttentionKernel = 'onnx-op' | 'primitives';
export const DEFAULT_ATTENTION_KERNEL: AttentionKernel = (process.env.SLICESERVE_ATTENTION as AttentionKernel) || 'primitives';

/**
 * Layout of `past_key_values.{i}.key` (and `present.{i}.key`) for an attention kernel:
 * 'standard' [batch, num_key_value_heads, past, head_dim] (onnxruntime-genai), or 'transposed'
 * [batch, num_key_value_heads, head_dim, past] for 'primitives', which multiplies queries by
 * the keys without transposing the cache every step. Values are always standard.
 */
export function keyCacheLayout(kernel: AttentionKernel = DEFAULT_ATTENTION_KERNEL): 'standard' | 'transposed' {
  return kernel === 'primitives' ? 'transposed' : 'standard';
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
  const e = new LlamaEmitter(new OnnxGraph(`${model.id}-${options.logits}`), config, widths.normDivisor, options.dtype ?? 'float32', options.attention);
  const g = e.g;
  const get = (name: string): WeightTensor => {
    const t = model.weights.get(name);
    if (!t) throw new Error(`missing weight ${name}`);
    return t;
  };
  const KV = config.num_key_value_heads;
  const hd = config.head_dim;
  const keyDims = (seq: string) => (keyCacheLayout(options.attention) === 'transposed' ? ['batch', KV, hd, seq] : ['batch', KV, seq, hd]);

  const embed = get(W.embed);
  let x = g.op('Gather', [e.weight(W.embed, embed.data, embed.shape), g.input('input_ids', 'int64', ['batch', 'sequence'])], { axis: 0 });
  for (let l = 0; l < config.num_hidden_layers; l++) {
    const pastK = g.input(`past_key_values.${l}.key`, e.act, keyDims('past_sequence'));
    const pastV = g.input(`past_key_values.${l}.value`, e.act, ['batch', KV, 'past_sequence', hd]);
    const present = options.presentOutputs !== false;
    const h = e.attentionHalf(x, l, attentionWeights(model, l), {
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
    x = e.mlpHalf(h, l, mlpWeights(model, l));
  }
  if (options.logits === 'last') {
    x = g.op('Slice', [x, g.int64([-1]), g.int64([Number.MAX_SAFE_INTEGER]), g.int64([1])]);
  }
  const nf = e.rmsNorm(x, widths.head, model.weights.get(W.finalNorm), 'model.norm_scale');
  const head = model.weights.get(W.lmHead) ?? embed;
  // Named where computed: an Identity would copy [batch, sequence | 1, vocab] floats each run.
  if (e.act === 'float16') g.op('Cast', [e.linear(nf, 'lm_head.weight_t', [head])], { to: 1 }, { output: 'logits' });
  else e.linear(nf, 'lm_head.weight_t', [head], 'logits');
  g.output('logits', 'float32', ['batch', options.logits === 'last' ? 1 : 'sequence', head.shape[0]]);
  if (options.logits === 'last') {
    // Greedy decoding without reading the logits back: the first index of the maximum, as the
    // host-side argmax (engine/sampler.ts) picks on ties (ONNX ArgMax, select_last_index 0).
    g.op('ArgMax', ['logits'], { axis: -1, keepdims: 0, select_last_index: 0 }, { output: 'greedy_token' });
    g.output('greedy_token', 'int64', ['batch', 1]);
  }
  return g.build();
}

/** The weights of one attention half: `r = x @ shortcut + o(attn(norm(x)))`. */
export interface AttentionWeights {
  q: WeightTensor;
  k: WeightTensor;
  v: WeightTensor;
  o: WeightTensor;
  /** RMSNorm scale; absent once fused. */
  norm?: WeightTensor;
  /** [in, out]; absent = identity residual. */
  shortcut?: WeightTensor;
}

/** The weights of one MLP half: `out = h @ shortcut + down(silu(gate(n)) * up(n))`, n = norm(h). */
export interface MlpWeights {
  gate: WeightTensor;
  up: WeightTensor;
  down: WeightTensor;
  norm?: WeightTensor;
  shortcut?: WeightTensor;
}

function need(model: LoadedModel, name: string): WeightTensor {
  const t = model.weights.get(name);
  if (!t) throw new Error(`missing weight ${name}`);
  return t;
}

/** Layer `l`'s attention-half weights from a model. */
export function attentionWeights(model: LoadedModel, l: number): AttentionWeights {
  return {
    q: need(model, W.q(l)),
    k: need(model, W.k(l)),
    v: need(model, W.v(l)),
    o: need(model, W.o(l)),
    norm: model.weights.get(W.attnNorm(l)),
    shortcut: model.weights.get(W.attnShortcut(l)),
  };
}

/** Layer `l`'s MLP-half weights from a model. */
export function mlpWeights(model: LoadedModel, l: number): MlpWeights {
  return {
    gate: need(model, W.gate(l)),
    up: need(model, W.up(l)),
    down: need(model, W.down(l)),
    norm: model.weights.get(W.mlpNorm(l)),
    shortcut: model.weights.get(W.mlpShortcut(l)),
  };
}

/**
 * A graph of ONE half layer, no KV cache, for calibration (slicer/): input `hidden`
 * [batch, sequence, in] plus `position_ids` and `attention_bias` as in the full graph; output
 * `out` [batch, sequence, out]. Runs in float32, the model dtype (PROTOCOL.md §5).
 * @param normDivisor the ORIGINAL hidden_size d.
 */
export function buildHalfLayerGraph(config: LlamaConfig, normDivisor: number, half: { attention: AttentionWeights } | { mlp: MlpWeights }): BuiltModel {
  const e = new LlamaEmitter(new OnnxGraph('half-layer'), config, normDivisor, 'float32');
  const inWidth = 'attention' in half ? half.attention.q.shape[1] : half.mlp.gate.shape[1];
  const x = e.g.input('hidden', 'float32', ['batch', 'sequence', inWidth]);
  const out = 'attention' in half ? e.attentionHalf(x, 0, half.attention, {}) : e.mlpHalf(x, 0, half.mlp);
  const outWidth = 'attention' in half ? half.attention.o.shape[0] : half.mlp.down.shape[0];
  e.g.op('Identity', [out], {}, { output: 'out' });
  e.g.output('out', 'float32', ['batch', 'sequence', outWidth]);
  return e.g.build();
}

/** Emits the nodes shared by the full graph and the half-layer graphs. */
class LlamaEmitter {
  readonly act: ElemType;
  readonly positionIds: string;
  private readonly bias: string;
  private grouped?: string;
  private past?: string;
  private rope?: { cos: string; sin: string };

  constructor(
    readonly g: OnnxGraph,
    private readonly config: LlamaConfig,
    private readonly normDivisor: number,
    dtype: 'float32' | 'float16',
    private readonly attentionKernel: AttentionKernel = DEFAULT_ATTENTION_KERNEL,
  ) {
    this.act = dtype;
    this.positionIds = g.input('position_ids', 'int64', ['batch', 'sequence']);
    let bias = g.input('attention_bias', 'float32', ['batch', 'sequence', 'total_sequence']);
    bias = g.op('Unsqueeze', [bias, g.int64([1])]); // [B, 1, S, T], broadcast over heads
    if (dtype === 'float16') bias = g.op('Cast', [bias], { to: 10 });
    this.bias = bias;
  }

  /** RoPE tables [max_position, head_dim / 2] (HF: inv_freq = theta^(-2i/hd)), emitted on first use. */
  private ropeTables(): { cos: string; sin: string } {
    if (this.rope) return this.rope;
    const maxPos = this.config.max_position_embeddings;
    const hd = this.config.head_dim;
    const half = hd / 2;
    const cos = new Float32Array(maxPos * half);
    const sin = new Float32Array(maxPos * half);
    for (let p = 0; p < maxPos; p++) {
      for (let i = 0; i < half; i++) {
        const angle = p * Math.pow(this.config.rope_theta, (-2 * i) / hd);
        cos[p * half + i] = Math.cos(angle);
        sin[p * half + i] = Math.sin(angle);
      }
    }
    this.rope = { cos: this.weight('rope.cos', cos, [maxPos, half]), sin: this.weight('rope.sin', sin, [maxPos, half]) };
    return this.rope;
  }

  weight(name: string, data: Float32Array, dims: number[]): string {
    return this.act === 'float16' ? this.g.initializer(name, 'float16', dims, toFloat16Array(data)) : this.g.initializer(name, 'float32', dims, data);
  }

  /** x @ W^T for the concatenation (along out) of weights stored [out, in], optionally named `output`. */
  linear(x: string, name: string, ws: WeightTensor[], output?: string): string {
    const inn = ws[0].shape[1];
    const out = ws.reduce((s, w) => s + w.shape[0], 0);
    return this.g.op('MatMul', [x, this.weight(name, transposeConcat(ws, inn, out), [inn, out])], {}, output ? { output } : {});
  }

  /** RMSNorm over a residual of `width` columns that divides by the original hidden size. */
  rmsNorm(x: string, width: number, w: WeightTensor | undefined, name: string): string {
    const d = this.normDivisor;
    const k = Math.sqrt(d / width);
    const scale = new Float32Array(width);
    for (let i = 0; i < width; i++) scale[i] = k * (w ? w.data[i] : 1);
    return this.g.op('RMSNormalization', [x, this.weight(name, scale, [width])], {
      axis: -1,
      epsilon: { float: (this.config.rms_norm_eps * d) / width },
      stash_type: 1,
    });
  }

  /** [B, S, heads * hd] -> [B, heads, S, hd], optionally named `output`. */
  private toHeads(t: string, heads: number, output?: string): string {
    const g = this.g;
    return g.op('Transpose', [g.op('Reshape', [t, g.int64([0, 0, heads, this.config.head_dim])])], { perm: [0, 2, 1, 3] }, output ? { output } : {});
  }

  /** `x @ shortcut + o(attention(norm(x)))` with the optional KV cache wiring. */
  attentionHalf(x: string, l: number, w: AttentionWeights, cache: { pastK?: string; pastV?: string; presentK?: string; presentV?: string; stepK?: string; stepV?: string }): string {
    const g = this.g;
    const H = this.config.num_attention_heads;
    const KV = this.config.num_key_value_heads;
    const hd = this.config.head_dim;
    const prefix = W.layer(l);
    const n1 = this.rmsNorm(x, w.q.shape[1], w.norm, `${prefix}.attn_norm_scale`);
    // The primitives kernel takes queries pre-scaled by 1/sqrt(hd) (RoPE is linear, so the
    // scale commutes with it); the opset-23 operator applies its `scale` attribute itself.
    const wq = this.attentionKernel === 'primitives' ? scaled(w.q, 1 / Math.sqrt(hd)) : w.q;
    const qkv = this.linear(n1, `${prefix}.self_attn.qkv_proj.weight_t`, [wq, w.k, w.v]);
    const [q, k, v] = g.node('Split', [qkv, g.int64([H * hd, KV * hd, KV * hd])], { axis: -1 }, { outputCount: 3 });
    const rope = this.ropeTables();
    const qh = g.op('RotaryEmbedding', [this.toHeads(q, H), rope.cos, rope.sin, this.positionIds], { interleaved: 0 });
    // This step's keys and values are graph outputs (step_key_values.*) as they are computed.
    const kh = g.op('RotaryEmbedding', [this.toHeads(k, KV), rope.cos, rope.sin, this.positionIds], { interleaved: 0 }, cache.stepK ? { output: cache.stepK } : {});
    const vh = this.toHeads(v, KV, cache.stepV);
    const attn = this.attentionKernel === 'primitives' ? this.attentionFromPrimitives(qh, kh, vh, cache) : this.attentionOp(qh, kh, vh, cache);
    const merged = g.op('Reshape', [g.op('Transpose', [attn], { perm: [0, 2, 1, 3] }), g.int64([0, 0, H * hd])]);
    const attnOut = this.linear(merged, `${prefix}.self_attn.o_proj.weight_t`, [w.o]);
    const residual = w.shortcut ? g.op('MatMul', [x, this.weight(`${prefix}.attn_shortcut_Q`, w.shortcut.data, w.shortcut.shape)]) : x;
    return g.op('Add', [residual, attnOut]);
  }

  /** ONNX opset-23 `Attention` (GQA, additive mask, past/present KV). Returns [B, H, S, hd]. */
  private attentionOp(qh: string, kh: string, vh: string, cache: { pastK?: string; pastV?: string; presentK?: string; presentV?: string }): string {
    const inputs = [qh, kh, vh, this.bias];
    if (cache.pastK && cache.pastV) inputs.push(cache.pastK, cache.pastV);
    const outputs = [this.g.fresh('attn')];
    // The operator needs present outputs whenever it has a past (internal names if not exported).
    if (cache.pastK && cache.pastV) outputs.push(cache.presentK ?? this.g.fresh('present_key'), cache.presentV ?? this.g.fresh('present_value'));
    return this.g.node('Attention', inputs, { scale: { float: 1 / Math.sqrt(this.config.head_dim) } }, { outputs })[0];
  }

  /**
   * The same attention from MatMul/Softmax, shaped for decode. Query heads are grouped per KV
   * head as rows of one matrix, q4 [B, KV, G*S, hd] (G = H / KV; head h reads KV head
   * floor(h / G), as Hugging Face's repeat_kv), so each (batch, KV head) is ONE small GEMM
   * against its keys instead of G broadcast ones. The past keys come in TRANSPOSED,
   * [B, KV, hd, P] (see {@link keyCacheLayout}), so scoring them needs no transpose of the
   * cache; past and new keys are scored separately and only the score rows are concatenated,
   * so the cache is never copied. The 1/sqrt(hd) scale is folded into the query weights
   * ({@link attentionHalf}). Returns [B, H, S, hd].
   */
  private attentionFromPrimitives(qh: string, kh: string, vh: string, cache: { pastK?: string; pastV?: string; presentK?: string; presentV?: string }): string {
    const g = this.g;
    const H = this.config.num_attention_heads;
    const KV = this.config.num_key_value_heads;
    const hd = this.config.head_dim;
    const q4 = g.op('Reshape', [qh, g.int64([0, KV, -1, hd])]); // [B, KV, G*S, hd], row g*S + s
    const kNewT = g.op('Transpose', [kh], { perm: [0, 1, 3, 2] }); // [B, KV, hd, S]
    const scoresNew = g.op('MatMul', [q4, kNewT]); // [B, KV, G*S, S]
    let out: string;
    if (cache.pastK && cache.pastV) {
      if (cache.presentK && cache.presentV) {
        g.op('Concat', [cache.pastK, kNewT], { axis: 3 }, { output: cache.presentK });
        g.op('Concat', [cache.pastV, vh], { axis: 2 }, { output: cache.presentV });
      }
      const scores = g.op('Concat', [g.op('MatMul', [q4, cache.pastK]), scoresNew], { axis: -1 }); // [B, KV, G*S, T]
      const probs = g.op('Softmax', [g.op('Add', [scores, this.groupedBias()])], { axis: -1 });
      const past = this.pastLength(cache.pastK);
      const pPast = g.op('Slice', [probs, g.int64([0]), past, g.int64([-1])]);
      const pNew = g.op('Slice', [probs, past, g.int64([Number.MAX_SAFE_INTEGER]), g.int64([-1])]);
      out = g.op('Add', [g.op('MatMul', [pPast, cache.pastV]), g.op('MatMul', [pNew, vh])]);
    } else {
      const probs = g.op('Softmax', [g.op('Add', [scoresNew, this.groupedBias()])], { axis: -1 });
      out = g.op('MatMul', [probs, vh]);
    }
    return g.op('Reshape', [out, g.int64([0, H, -1, hd])]); // [B, KV, G*S, hd] is [B, H, S, hd] in memory
  }

  /**
   * The number of past positions P as a 1-element int64 tensor, read once from the first
   * layer's past keys ([B, KV, hd, P]) and shared by every layer.
   */
  private pastLength(pastK: string): string {
    this.past ??= this.g.op('Shape', [pastK], { start: 3, end: 4 });
    return this.past;
  }

  /** attention_bias repeated for the G query heads of a group: [B, 1, G*S, T] (row g*S + s = bias[b, s]); emitted once. */
  private groupedBias(): string {
    if (this.grouped) return this.grouped;
    const G = this.config.num_attention_heads / this.config.num_key_value_heads;
    this.grouped = this.g.op('Tile', [this.bias, this.g.int64([1, 1, G, 1])]);
    return this.grouped;
  }

  /** `h @ shortcut + down(silu(gate(norm(h))) * up(norm(h)))`. */
  mlpHalf(h: string, l: number, w: MlpWeights): string {
    const g = this.g;
    const prefix = W.layer(l);
    const n2 = this.rmsNorm(h, w.gate.shape[1], w.norm, `${prefix}.mlp_norm_scale`);
    const I = w.gate.shape[0];
    const gu = this.linear(n2, `${prefix}.mlp.gate_up_proj.weight_t`, [w.gate, w.up]);
    const [gate, up] = g.node('Split', [gu, g.int64([I, I])], { axis: -1 }, { outputCount: 2 });
    const act = g.op('Mul', [g.op('Mul', [gate, g.op('Sigmoid', [gate])]), up]);
    const mlpOut = this.linear(act, `${prefix}.mlp.down_proj.weight_t`, [w.down]);
    const residual = w.shortcut ? g.op('MatMul', [h, this.weight(`${prefix}.mlp_shortcut_Q`, w.shortcut.data, w.shortcut.shape)]) : h;
    return g.op('Add', [residual, mlpOut]);
  }
}

/** `w` times a scalar (a new tensor). */
function scaled(w: WeightTensor, factor: number): WeightTensor {
  return { ...w, data: w.data.map((v) => v * factor) };
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
