/**
 * Expected speedup of a SliceGPT-sliced decoder over its dense model, from shapes alone.
 *
 * Per generated token, a layer multiplies the residual-stream activation by q, k, v
 * (d -> heads*head_dim, kv_heads*head_dim), o (heads*head_dim -> d), the MLP input(s) (gate
 * and up for gated MLPs, up / fc1 alone otherwise: d -> f) and its output (down / fc2: f -> d);
 * the head maps d -> vocab. SliceGPT (Ashkboos et al. 2024, section 3.4;
 * ../shared/reference/SLICEGPT.md section 5) shrinks every residual width d to d' and adds
 * shortcut matrices on the residual connections: two per sequential layer (attention: d' x d',
 * MLP: d' x d'_next), one per parallel layer (d' x d'_next, TransformerCompression's
 * rotate_and_slice_parallel). Without `slice_head` (the default) the last layer writes the full
 * width d, so its output projection(s) and last shortcut are as wide and the head reads d.
 *
 * A matmul of an [in, out] weight costs 2*in*out FLOPs per token and reads in*out weights.
 * Attention scores (q k^T, softmax * v) grow with the context and touch no weight: they are
 * not counted (at 66 + 64 tokens they are < 1 % of bench-110m's matmul FLOPs).
 */

/** The widths the count needs (Hugging Face config names, plus the sliced residual width). */
export interface MatmulShape {
  /** Dense residual width d. */
  hidden_size: number;
  /** Residual width after slicing, d'; equal to hidden_size (or absent) for a dense model. */
  sliced_hidden_size?: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  num_key_value_heads: number;
  /** Defaults to hidden_size / num_attention_heads. */
  head_dim?: number;
  vocab_size: number;
  /** Whether the head's input was sliced too (SliceGPT's `--slice-head`; default false). */
  slice_head?: boolean;
  /** Gated MLP (gate_proj, up_proj, down_proj; default true) or a plain one (fc1, fc2). */
  gated_mlp?: boolean;
  /** Sequential (default) or parallel attention + MLP (DecoderConfig.block). */
  block?: 'sequential' | 'parallel';
  /** Rows of a learned position embedding (a lookup, no matmul; parameter counts only). */
  position_embeddings?: number;
}

/** Weights read per token, by group. All counts are numbers of weights (not bytes). */
export interface MatmulWeights {
  attention: number;
  mlp: number;
  shortcuts: number;
  head: number;
  total: number;
}

/** One weight matrix a token is multiplied by: `N` outputs, `K` inputs, and its group. */
export interface MatmulMatrix {
  group: 'attention' | 'mlp' | 'shortcuts' | 'head';
  N: number;
  K: number;
}

/**
 * Every weight matrix of a decode step, as [N = out, K = in] (q, k, v, o, gate, up, down per
 * layer, the two shortcuts of a sliced layer, the head), the shapes MatMulNBits quantizes.
 *
 * @throws RangeError when a width is not a positive integer or d' > d.
 */
export function matmulMatrices(shape: MatmulShape): MatmulMatrix[] {
  const d = shape.hidden_size;
  const s = shape.sliced_hidden_size ?? d;
  const f = shape.intermediate_size;
  const L = shape.num_hidden_layers;
  const hd = shape.head_dim ?? d / shape.num_attention_heads;
  const vocab = shape.vocab_size;
  for (const [name, v] of Object.entries({ hidden_size: d, sliced_hidden_size: s, intermediate_size: f, num_hidden_layers: L, head_dim: hd, vocab_size: vocab })) {
    if (!Number.isInteger(v) || v <= 0) throw new RangeError(`${name} must be a positive integer, got ${v}`);
  }
  if (s > d) throw new RangeError(`sliced_hidden_size ${s} is larger than hidden_size ${d}`);
  const sliced = s < d;
  const qDim = shape.num_attention_heads * hd;
  const kvDim = shape.num_key_value_heads * hd;
  const out: MatmulMatrix[] = [];
  const mlpInputs = shape.gated_mlp === false ? 1 : 2;
  const parallel = shape.block === 'parallel';
  for (let l = 0; l < L; l++) {
    const w = sliced && l === L - 1 && !shape.slice_head ? d : s; // width this layer writes
    // A parallel block's attention output goes straight to the residual stream (width w).
    out.push({ group: 'attention', N: qDim, K: s }, { group: 'attention', N: kvDim, K: s }, { group: 'attention', N: kvDim, K: s }, { group: 'attention', N: parallel ? w : s, K: qDim });
    for (let i = 0; i < mlpInputs; i++) out.push({ group: 'mlp', N: f, K: s });
    out.push({ group: 'mlp', N: w, K: f });
    // Shortcuts S [in, out] are multiplied as x @ S: N = out, K = in. A parallel layer has one.
    if (sliced) out.push(...(parallel ? [] : [{ group: 'shortcuts' as const, N: s, K: s }]), { group: 'shortcuts', N: w, K: s });
  }
  out.push({ group: 'head', N: vocab, K: sliced && shape.slice_head ? s : d });
  return out;
}

/**
 * Number of weights each generated token multiplies by, per group. A sliced model
 * (sliced_hidden_size < hidden_size) has shortcut matrices; a dense one has none.
 *
 * @throws RangeError when a width is not a positive integer or d' > d.
 */
export function matmulWeightsPerToken(shape: MatmulShape): MatmulWeights {
  const w: MatmulWeights = { attention: 0, mlp: 0, shortcuts: 0, head: 0, total: 0 };
  for (const m of matmulMatrices(shape)) {
    w[m.group] += m.N * m.K;
    w.total += m.N * m.K;
  }
  return w;
}

/** Block-wise quantization of one kind of weight (as /v1/models' `quantization` shows it). */
export interface BlockSpec {
  bits: number;
  block_size: number;
  symmetric: boolean;
}

/** What a quantized model stores per group: linears (attention and MLP), head, shortcuts; null = float32. */
export interface MatmulQuantization {
  linear: BlockSpec;
  head: BlockSpec | null;
  shortcuts: BlockSpec | null;
}

/**
 * Bytes of an [N, K] weight in onnxruntime's MatMulNBits layout: per row ceil(K / block)
 * blocks of block * bits / 8 code bytes, one scale each, and (asymmetric) the zero points packed
 * at `bits` per block (models/quant/layout.ts).
 * @param scaleBytes 4 (float32 scales) or 2 (float16).
 */
export function matMulNBitsBytes(N: number, K: number, q: BlockSpec, scaleBytes = 4): number {
  const blocks = Math.ceil(K / q.block_size);
  return N * (blocks * ((q.block_size * q.bits) / 8) + blocks * scaleBytes + (q.symmetric ? 0 : Math.ceil((blocks * q.bits) / 8)));
}

/**
 * Weight bytes one decode step reads: every matmul weight (float32, or in its MatMulNBits
 * layout when `quant` quantizes its group) plus one float32 embedding row.
 */
export function weightBytesPerToken(shape: MatmulShape, quant: MatmulQuantization | null): number {
  let bytes = 4 * (shape.sliced_hidden_size ?? shape.hidden_size);
  for (const m of matmulMatrices(shape)) {
    const q = !quant ? null : m.group === 'head' ? quant.head : m.group === 'shortcuts' ? quant.shortcuts : quant.linear;
    bytes += q ? matMulNBitsBytes(m.N, m.K, q) : 4 * m.N * m.K;
  }
  return bytes;
}

/** Matmul FLOPs per generated token: 2 per multiplied weight (one multiply, one add). */
export function matmulFlopsPerToken(shape: MatmulShape): number {
  return 2 * matmulWeightsPerToken(shape).total;
}

/**
 * Theoretical speedup of a sliced model: dense matmul FLOPs per token / sliced matmul FLOPs
 * per token (both from {@link matmulFlopsPerToken}).
 */
export function theoreticalSpeedup(dense: MatmulShape, slicedHiddenSize: number, sliceHead = false): number {
  return matmulFlopsPerToken({ ...dense, sliced_hidden_size: dense.hidden_size }) / matmulFlopsPerToken({ ...dense, sliced_hidden_size: slicedHiddenSize, slice_head: sliceHead });
}

/**
 * Parameters of a whole model of this shape: matmul weights + embeddings (vocab x d', learned
 * positions x d') + norm weights ((2L + 1) x their width, L + 1 for parallel blocks; a sliced
 * model's fused norms may store none). Biases are not counted. Used to tell from a reported
 * parameter count whether the head was sliced.
 */
export function parameterCount(shape: MatmulShape, withNorms: boolean): number {
  const d = shape.hidden_size;
  const s = shape.sliced_hidden_size ?? d;
  const perLayer = shape.block === 'parallel' ? 1 : 2;
  const norms = withNorms ? perLayer * shape.num_hidden_layers * s + (s < d && !shape.slice_head ? d : s) : 0;
  return matmulWeightsPerToken(shape).total + (shape.vocab_size + (shape.position_embeddings ?? 0)) * s + norms;
}

/**
 * Whether a sliced model's head was sliced, inferred from its reported parameter count
 * (as `/v1/models` gives it): the candidate whose {@link parameterCount} (with or without
 * norm weights) is closest wins; false when `parameters` is unknown.
 */
export function inferSliceHead(dense: MatmulShape, slicedHiddenSize: number, parameters: number | undefined): boolean {
  if (parameters === undefined || !Number.isFinite(parameters)) return false;
  const distance = (sliceHead: boolean): number =>
    Math.min(
      ...[true, false].map((norms) => Math.abs(parameterCount({ ...dense, sliced_hidden_size: slicedHiddenSize, slice_head: sliceHead }, norms) - parameters)),
    );
  return distance(true) < distance(false);
}

/**
 * Upper bound on batch-1 decode speed when every weight is read from memory once per token.
 *
 * @param weightBytesPerToken bytes of weights read per token (f32: 4 x {@link matmulWeightsPerToken}.total).
 * @param readBytesPerSecond measured read bandwidth.
 * @returns tokens per second.
 */
export function bandwidthBoundTokensPerSecond(weightBytesPerToken: number, readBytesPerSecond: number): number {
  return readBytesPerSecond / weightBytesPerToken;
}
