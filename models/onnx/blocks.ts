/**
 * The shared block emitters every family's graph is made of, each driven by a DecoderConfig
 * field and never by a family name: embeddings (tokens, learned positions), norms (RMS with
 * the SliceGPT divisor, LayerNorm), linear layers with optional biases, rotary embeddings
 * (full or partial, static tables or dynamic NTK), q/k norms, attention (two kernels, full or
 * sliding-window mask), MLPs (gated or plain, four activations), sequential and parallel
 * blocks with SliceGPT shortcut matrices (arXiv 2401.15024 §3.4), the head.
 *
 * Norms over a residual of width w < d (a sliced model) keep dividing by the ORIGINAL
 * hidden_size d: ONNX `RMSNormalization` (opset 23) with scale `sqrt(d / w) * weight` and
 * epsilon `eps * d / w` is exactly `x / sqrt(sum(x^2) / d + eps) * weight` (SLICEGPT.md §3).
 */
import { contextLength, isSlidingLayer, type DecoderConfig, type RotarySpec } from '../config.js';
import { addMatMulNBits } from '../quant/emit.js';
import { isQuantized, stackRows, type QuantizedTensor } from '../quant/model.js';
import { toFloat16Array } from '../safetensors.js';
import type { WeightTensor } from '../types.js';
import { OnnxGraph, type ElemType } from './builder.js';
import { defaultAttentionKernel, SLIDING_BIAS_INPUT, type AttentionKernel } from './contract.js';
import { ropeInverseFrequencies } from './rope.js';
import type { LayerTensors, Linear, Norm } from './tensors.js';

/** The KV cache wiring of one attention call (all optional: calibration graphs have none). */
export interface CacheWiring {
  pastK?: string;
  pastV?: string;
  presentK?: string;
  presentV?: string;
  stepK?: string;
  stepV?: string;
}

/** An attention mask: the [B, 1, S, T] bias broadcast over heads, and (lazily) its grouped form. */
interface MaskInput {
  bias: string;
  grouped?: string;
}

/** Emits the nodes shared by the decoder graph and the calibration graphs. */
export class BlockEmitter {
  readonly act: ElemType;
  readonly positionIds: string;
  private readonly masks: { full: MaskInput; sliding?: MaskInput };
  private past?: string;
  private ropeCache?: { cos: string; sin: string; withPositions: boolean };

  /**
   * Declares `position_ids`, `attention_bias` and, when `slidingMask`, `sliding_attention_bias`.
   * @param normDivisor the ORIGINAL hidden_size d (the norm divisor).
   */
  constructor(
    readonly g: OnnxGraph,
    readonly config: DecoderConfig,
    private readonly normDivisor: number,
    dtype: 'float32' | 'float16',
    readonly attentionKernel: AttentionKernel = defaultAttentionKernel(),
    slidingMask = false,
  ) {
    this.act = dtype;
    this.positionIds = g.input('position_ids', 'int64', ['batch', 'sequence']);
    const mask = (name: string): MaskInput => {
      let bias = g.op('Unsqueeze', [g.input(name, 'float32', ['batch', 'sequence', 'total_sequence']), g.int64([1])]); // [B, 1, S, T]
      if (dtype === 'float16') bias = g.op('Cast', [bias], { to: 10 });
      return { bias };
    };
    this.masks = { full: mask('attention_bias'), ...(slidingMask ? { sliding: mask(SLIDING_BIAS_INPUT) } : {}) };
  }

  /** The graph's float precision (activations, float weights, quantized weights' scales). */
  private get floatType(): 'float32' | 'float16' {
    return this.act === 'float16' ? 'float16' : 'float32';
  }

  /** An initializer in the graph's precision. */
  weight(name: string, data: Float32Array, dims: number[]): string {
    return this.act === 'float16' ? this.g.initializer(name, 'float16', dims, toFloat16Array(data)) : this.g.initializer(name, 'float32', dims, data);
  }

  /** Token embedding, plus learned position embeddings (row position + offset) when the model has them. */
  embed(inputIds: string, embedTokens: WeightTensor, embedPositions: WeightTensor | undefined, names: { tokens: string; positions?: string }): string {
    const g = this.g;
    let x = g.op('Gather', [this.weight(names.tokens, embedTokens.data, embedTokens.shape), inputIds], { axis: 0 });
    if (embedPositions) {
      if (this.config.positions.kind !== 'learned') throw new Error('position embeddings on a model without learned positions');
      const rows = g.op('Add', [this.positionIds, g.int64([this.config.positions.offset], [])]);
      x = g.op('Add', [x, g.op('Gather', [this.weight(names.positions!, embedPositions.data, embedPositions.shape), rows], { axis: 0 })]);
    }
    return x;
  }

  /**
   * `x @ W^T (+ b)` for the concatenation (along out) of linear layers, optionally named
   * `output`. A bias is added when any layer has one (zeros for those without). Quantized
   * weights (models/quant/model.ts) are one `com.microsoft.MatMulNBits` over their stacked rows,
   * the bias its optional input; float weights a MatMul of the transposed concatenation.
   * @throws Error when some of the layers are quantized and some are not.
   */
  linear(x: string, name: string, layers: Linear[], output?: string): string {
    const quantized = layers.filter((l) => isQuantized(l.weight)).length;
    const out = layers.reduce((s, l) => s + l.weight.shape[0], 0);
    const bias = layers.some((l) => l.bias) ? concatBias(layers, out) : undefined;
    if (quantized > 0) {
      if (quantized !== layers.length) throw new Error(`${name}: ${quantized} of ${layers.length} fused weights are quantized; quantize all or none`);
      const parts = layers.map((l) => l.weight as QuantizedTensor);
      return addMatMulNBits(this.g, x, stackRows(parts.map((p) => p.q)), { accuracyLevel: parts[0].accuracyLevel, dtype: this.floatType, bias, name, output });
    }
    const ws = layers.map((l) => l.weight as WeightTensor);
    const inn = ws[0].shape[1];
    const w = this.weight(`${name}.weight_t`, transposeConcat(ws, inn, out), [inn, out]);
    if (!bias) return this.g.op('MatMul', [x, w], {}, output ? { output } : {});
    return this.g.op('Add', [this.g.op('MatMul', [x, w]), this.weight(`${name}.bias`, bias, [out])], {}, output ? { output } : {});
  }

  /**
   * The residual-stream norm over `width` columns: LayerNormalization (weight, bias) when the
   * model's norm is LayerNorm and the norm has its parameters; otherwise RMSNormalization
   * dividing by the original hidden size (weightless after fusion).
   */
  norm(x: string, width: number, n: Norm, name: string): string {
    const eps = this.config.norm_eps;
    if (this.config.norm === 'layer' && n.weight) {
      if (width !== this.normDivisor) throw new Error(`a LayerNorm over ${width} of ${this.normDivisor} columns (sliced models have fused norms)`);
      const bias = n.bias?.data ?? new Float32Array(width);
      return this.g.op('LayerNormalization', [x, this.weight(`${name}.weight`, n.weight.data, [width]), this.weight(`${name}.bias`, bias, [width])], { axis: -1, epsilon: { float: eps }, stash_type: 1 });
    }
    const d = this.normDivisor;
    const k = Math.sqrt(d / width);
    const scale = new Float32Array(width);
    const weight = n.weight?.data;
    for (let i = 0; i < width; i++) scale[i] = k * (weight ? weight[i] : 1);
    return this.g.op('RMSNormalization', [x, this.weight(`${name}_scale`, scale, [width])], {
      axis: -1,
      epsilon: { float: (eps * d) / width },
      stash_type: 1,
    });
  }

  /**
   * A per-head norm over head_dim of [B, heads, S, head_dim] (q_norm / k_norm), its weight and
   * bias multiplied by `factor` (the folded 1/sqrt(head_dim) of the primitives kernel).
   */
  private headNorm(x: string, n: Norm, name: string, factor: number): string {
    const hd = this.config.head_dim;
    const w = new Float32Array(hd);
    const weight = n.weight?.data;
    for (let i = 0; i < hd; i++) w[i] = (weight ? weight[i] : 1) * factor;
    const eps = { float: this.config.norm_eps };
    if (this.config.qk_norm === 'layer') {
      const b = new Float32Array(hd);
      const bias = n.bias?.data;
      if (bias) for (let i = 0; i < hd; i++) b[i] = bias[i] * factor;
      return this.g.op('LayerNormalization', [x, this.weight(`${name}.weight`, w, [hd]), this.weight(`${name}.bias`, b, [hd])], { axis: -1, epsilon: eps, stash_type: 1 });
    }
    return this.g.op('RMSNormalization', [x, this.weight(`${name}.weight`, w, [hd])], { axis: -1, epsilon: eps, stash_type: 1 });
  }

  /** [B, S, heads * hd] -> [B, heads, S, hd], optionally named `output`. */
  private toHeads(t: string, heads: number, output?: string): string {
    const g = this.g;
    return g.op('Transpose', [g.op('Reshape', [t, g.int64([0, 0, heads, this.config.head_dim])])], { perm: [0, 2, 1, 3] }, output ? { output } : {});
  }

  /**
   * cos/sin for RotaryEmbedding, emitted on first use: static tables [max_position, rotary_dim/2]
   * indexed by position_ids (default, linear, llama3), or for dynamic NTK scaling per-row
   * tables [B, S, rotary_dim/2] computed in the graph from each row's largest position
   * (see {@link dynamicRope}).
   */
  private rope(): { cos: string; sin: string; withPositions: boolean } {
    if (this.ropeCache) return this.ropeCache;
    const spec = this.config.positions as RotarySpec;
    if (spec.rope_scaling?.rope_type === 'dynamic') {
      this.ropeCache = this.dynamicRope(spec);
      return this.ropeCache;
    }
    const maxPos = contextLength(this.config);
    const invFreq = ropeInverseFrequencies(spec);
    const half = invFreq.length;
    const cos = new Float32Array(maxPos * half);
    const sin = new Float32Array(maxPos * half);
    for (let p = 0; p < maxPos; p++) {
      for (let i = 0; i < half; i++) {
        const angle = p * invFreq[i];
        cos[p * half + i] = Math.cos(angle);
        sin[p * half + i] = Math.sin(angle);
      }
    }
    this.ropeCache = { cos: this.weight('rope.cos', cos, [maxPos, half]), sin: this.weight('rope.sin', sin, [maxPos, half]), withPositions: true };
    return this.ropeCache;
  }

  /**
   * Dynamic NTK RoPE (transformers `_compute_dynamic_ntk_parameters` with `dynamic_rope_update`):
   * with L = max(position_ids) + 1 of the row and L0 the original context, when L > L0 the base
   * becomes `theta * (factor * L / L0 - (factor - 1)) ^ (dim / (dim - 2))`, else it stays theta;
   * inv_freq_i = base^(-2i / dim). transformers takes the maximum over the whole batch; here it
   * is per row, so that a sequence's output does not depend on its batch (for one sequence the
   * two agree). Returns [B, S, rotary_dim / 2] cos/sin.
   */
  private dynamicRope(spec: RotarySpec): { cos: string; sin: string; withPositions: false } {
    const g = this.g;
    const scaling = spec.rope_scaling!;
    const dim = spec.rotary_dim;
    const original = scaling.original_max_position_embeddings ?? this.config.max_position_embeddings;
    const factor = scaling.factor;
    const pos = g.op('Cast', [this.positionIds], { to: 1 }); // [B, S] float
    const longest = g.op('Add', [g.op('ReduceMax', [pos, g.int64([1])], { keepdims: 1 }), g.float([1], [])]); // [B, 1]
    const L = g.op('Max', [longest, g.float([original], [])]);
    const ratio = g.op('Sub', [g.op('Mul', [L, g.float([factor / original], [])]), g.float([factor - 1], [])]);
    const logBase = g.op('Add', [g.op('Mul', [g.op('Log', [ratio]), g.float([dim / (dim - 2)], [])]), g.float([Math.log(spec.rope_theta)], [])]); // [B, 1]
    const exponents = Float32Array.from({ length: dim / 2 }, (_, i) => (-2 * i) / dim);
    const invFreq = g.op('Exp', [g.op('Mul', [logBase, g.float(Array.from(exponents), [1, dim / 2])])]); // [B, half]
    const angles = g.op('Mul', [g.op('Unsqueeze', [pos, g.int64([2])]), g.op('Unsqueeze', [invFreq, g.int64([1])])]); // [B, S, half]
    let cos = g.op('Cos', [angles]);
    let sin = g.op('Sin', [angles]);
    if (this.act === 'float16') {
      cos = g.op('Cast', [cos], { to: 10 });
      sin = g.op('Cast', [sin], { to: 10 });
    }
    return { cos, sin, withPositions: false };
  }

  /** RoPE on [B, heads, S, hd] (half-split layout on the first rotary_dim dims), optionally named `output`. */
  private rotary(x: string, output?: string): string {
    const spec = this.config.positions as RotarySpec;
    const r = this.rope();
    const attrs: Record<string, number> = { interleaved: 0 };
    if (spec.rotary_dim !== this.config.head_dim) attrs.rotary_embedding_dim = spec.rotary_dim;
    const inputs = r.withPositions ? [x, r.cos, r.sin, this.positionIds] : [x, r.cos, r.sin];
    return this.g.op('RotaryEmbedding', inputs, attrs, output ? { output } : {});
  }

  /** The mask of layer `l` (sliding-window layers use the sliding one). */
  private maskOf(l: number): MaskInput {
    if (isSlidingLayer(this.config, l)) {
      if (!this.masks.sliding) throw new Error(`layer ${l} uses a sliding window but the graph has no ${SLIDING_BIAS_INPUT} input`);
      return this.masks.sliding;
    }
    return this.masks.full;
  }

  /**
   * Multi-head (grouped-KV) self-attention of layer `l` over `n` (the normed residual), with q/k
   * norms and RoPE, then the output projection. Returns [B, S, out].
   */
  attention(n: string, l: number, t: LayerTensors, prefix: string, cache: CacheWiring): string {
    const g = this.g;
    const H = this.config.num_attention_heads;
    const KV = this.config.num_key_value_heads;
    const hd = this.config.head_dim;
    // The primitives kernel takes queries pre-scaled by 1/sqrt(hd) (RoPE is linear, so the scale
    // commutes with it): folded into the q norm when there is one, else into q's weight and bias.
    // The opset-23 operator applies its `scale` attribute itself.
    const scale = this.attentionKernel === 'primitives' ? 1 / Math.sqrt(hd) : 1;
    const q = t.qNorm || scale === 1 ? t.q : scaledLinear(t.q, scale);
    const qkv = this.linear(n, `${prefix}.self_attn.qkv_proj`, [q, t.k, t.v]);
    const [qs, ks, vs] = g.node('Split', [qkv, g.int64([H * hd, KV * hd, KV * hd])], { axis: -1 }, { outputCount: 3 });
    let qh = this.toHeads(qs, H);
    let kh = this.toHeads(ks, KV);
    if (t.qNorm && t.kNorm) {
      qh = this.headNorm(qh, t.qNorm, `${prefix}.self_attn.q_norm`, scale);
      kh = this.headNorm(kh, t.kNorm, `${prefix}.self_attn.k_norm`, 1);
    }
    // This step's keys and values are graph outputs (step_key_values.*) as they are computed.
    if (this.config.positions.kind === 'rotary') {
      qh = this.rotary(qh);
      kh = this.rotary(kh, cache.stepK);
    } else if (cache.stepK) {
      kh = g.op('Identity', [kh], {}, { output: cache.stepK });
    }
    const vh = this.toHeads(vs, KV, cache.stepV);
    const mask = this.maskOf(l);
    const attn = this.attentionKernel === 'primitives' ? this.attentionFromPrimitives(qh, kh, vh, mask, cache) : this.attentionOp(qh, kh, vh, mask, cache);
    const merged = g.op('Reshape', [g.op('Transpose', [attn], { perm: [0, 2, 1, 3] }), g.int64([0, 0, H * hd])]);
    return this.linear(merged, `${prefix}.self_attn.o_proj`, [t.o]);
  }

  /** ONNX opset-23 `Attention` (GQA, additive mask, past/present KV). Returns [B, H, S, hd]. */
  private attentionOp(qh: string, kh: string, vh: string, mask: MaskInput, cache: CacheWiring): string {
    const inputs = [qh, kh, vh, mask.bias];
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
   * [B, KV, hd, P] (contract.ts `keyCacheLayout`), so scoring them needs no transpose of the
   * cache; past and new keys are scored separately and only the score rows are concatenated,
   * so the cache is never copied. The 1/sqrt(hd) scale is folded into the queries
   * ({@link attention}). Returns [B, H, S, hd].
   */
  private attentionFromPrimitives(qh: string, kh: string, vh: string, mask: MaskInput, cache: CacheWiring): string {
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
      const probs = g.op('Softmax', [g.op('Add', [scores, this.groupedMask(mask)])], { axis: -1 });
      const past = this.pastLength(cache.pastK);
      const pPast = g.op('Slice', [probs, g.int64([0]), past, g.int64([-1])]);
      const pNew = g.op('Slice', [probs, past, g.int64([Number.MAX_SAFE_INTEGER]), g.int64([-1])]);
      out = g.op('Add', [g.op('MatMul', [pPast, cache.pastV]), g.op('MatMul', [pNew, vh])]);
    } else {
      const probs = g.op('Softmax', [g.op('Add', [scoresNew, this.groupedMask(mask)])], { axis: -1 });
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

  /** A mask repeated for the G query heads of a group: [B, 1, G*S, T] (row g*S + s = bias[b, s]); emitted once per mask. */
  private groupedMask(mask: MaskInput): string {
    if (mask.grouped) return mask.grouped;
    const G = this.config.num_attention_heads / this.config.num_key_value_heads;
    mask.grouped = this.g.op('Tile', [mask.bias, this.g.int64([1, 1, G, 1])]);
    return mask.grouped;
  }

  /** The MLP over `n` (the normed residual): gated `down(act(gate) * up)` or plain `fc2(act(fc1))`. */
  mlp(n: string, t: LayerTensors, prefix: string): string {
    const g = this.g;
    let hidden: string;
    if (t.gate) {
      const I = t.gate.weight.shape[0];
      const gu = this.linear(n, `${prefix}.mlp.gate_up_proj`, [t.gate, t.up]);
      const [gate, up] = g.node('Split', [gu, g.int64([I, I])], { axis: -1 }, { outputCount: 2 });
      hidden = g.op('Mul', [this.activation(gate), up]);
    } else {
      hidden = this.activation(this.linear(n, `${prefix}.mlp.fc1`, [t.up]));
    }
    return this.linear(hidden, `${prefix}.mlp.down_proj`, [t.down]);
  }

  /** config.hidden_act on `x`: silu as x * sigmoid(x), relu, gelu (erf), gelu_tanh (ONNX Gelu, opset 20). */
  private activation(x: string): string {
    const g = this.g;
    switch (this.config.hidden_act) {
      case 'silu':
        return g.op('Mul', [x, g.op('Sigmoid', [x])]);
      case 'relu':
        return g.op('Relu', [x]);
      case 'gelu':
        return g.op('Gelu', [x]);
      case 'gelu_tanh':
        return g.op('Gelu', [x], { approximate: 'tanh' });
    }
  }

  /** `x @ S` for a shortcut matrix S [in, out] (MatMulNBits over S^T when quantized), or x when there is none. */
  private shortcut(x: string, s: WeightTensor | QuantizedTensor | undefined, name: string): string {
    if (!s) return x;
    if (isQuantized(s)) return addMatMulNBits(this.g, x, s.q, { accuracyLevel: s.accuracyLevel, dtype: this.floatType, name });
    return this.g.op('MatMul', [x, this.weight(name, s.data, s.shape)]);
  }

  /** Sequential attention half: `x @ S_attn + o(attn(norm(x)))`. */
  attentionHalf(x: string, l: number, t: LayerTensors, prefix: string, cache: CacheWiring): string {
    const n = this.norm(x, t.q.weight.shape[1], t.inputNorm, `${prefix}.attn_norm`);
    return this.g.op('Add', [this.shortcut(x, t.attnShortcut, `${prefix}.attn_shortcut_Q`), this.attention(n, l, t, prefix, cache)]);
  }

  /** Sequential MLP half: `h @ S_mlp + mlp(norm(h))`. */
  mlpHalf(h: string, t: LayerTensors, prefix: string): string {
    const n = this.norm(h, t.up.weight.shape[1], t.postAttentionNorm ?? {}, `${prefix}.mlp_norm`);
    return this.g.op('Add', [this.shortcut(h, t.mlpShortcut, `${prefix}.mlp_shortcut_Q`), this.mlp(n, t, prefix)]);
  }

  /** Parallel block: `x @ S + o(attn(n)) + mlp(n)`, n = norm(x). */
  parallelLayer(x: string, l: number, t: LayerTensors, prefix: string, cache: CacheWiring): string {
    const g = this.g;
    const n = this.norm(x, t.q.weight.shape[1], t.inputNorm, `${prefix}.input_norm`);
    const branches = g.op('Add', [this.attention(n, l, t, prefix, cache), this.mlp(n, t, prefix)]);
    return g.op('Add', [this.shortcut(x, t.attnShortcut, `${prefix}.attn_shortcut_Q`), branches]);
  }

  /** A whole layer of the config's block kind. */
  layer(x: string, l: number, t: LayerTensors, prefix: string, cache: CacheWiring): string {
    if (this.config.block === 'parallel') return this.parallelLayer(x, l, t, prefix, cache);
    return this.mlpHalf(this.attentionHalf(x, l, t, prefix, cache), t, prefix);
  }
}

/**
 * A linear layer with weight and bias multiplied by `factor` (new float32 tensors). A quantized
 * weight keeps its codes and has its scales multiplied (the codes of a scaled block are the same).
 */
function scaledLinear(l: Linear, factor: number): Linear {
  const w = l.weight;
  const weight = isQuantized(w) ? { ...w, q: stackRows([w.q], [factor]) } : { shape: w.shape, data: w.data.map((v) => v * factor) };
  return l.bias ? { weight, bias: { shape: l.bias.shape, data: l.bias.data.map((v) => v * factor) } } : { weight };
}

/** The biases of fused layers concatenated along out (zeros for a layer without one). */
function concatBias(layers: readonly Linear[], out: number): Float32Array {
  const bias = new Float32Array(out);
  let at = 0;
  for (const l of layers) {
    if (l.bias) bias.set(l.bias.data, at);
    at += l.weight.shape[0];
  }
  return bias;
}

/** Side of the square tiles {@link transposeConcat} copies (64 x 64 float32: 16 KiB, in L1). */
const TRANSPOSE_TILE = 64;

/**
 * Concatenates weights [out_i, in] along out and transposes to [in, sum(out_i)], tile by tile so
 * that reads and writes stay in cache (1.6x faster than row by row on a [8192, 3072] weight; the
 * transpose was 30 % of building a 1B model's graph).
 */
function transposeConcat(ws: WeightTensor[], inn: number, out: number): Float32Array {
  const t = new Float32Array(inn * out);
  let col = 0;
  for (const w of ws) {
    const [o, i2] = w.shape;
    if (i2 !== inn) throw new Error(`fused projection: input widths differ (${i2} vs ${inn})`);
    const data = w.data; // read once: a lazy tensor produces its values on each read
    for (let r0 = 0; r0 < o; r0 += TRANSPOSE_TILE) {
      const r1 = Math.min(o, r0 + TRANSPOSE_TILE);
      for (let c0 = 0; c0 < inn; c0 += TRANSPOSE_TILE) {
        const c1 = Math.min(inn, c0 + TRANSPOSE_TILE);
        for (let c = c0; c < c1; c++) {
          const dst = c * out + col;
          for (let r = r0; r < r1; r++) t[dst + r] = data[r * inn + c];
        }
      }
    }
    col += o;
  }
  return t;
}
