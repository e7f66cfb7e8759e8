/**
 * The interface between the decoder graphs (models/onnx/decoder-graph.ts) and the runtime that
 * feeds them (runtime/): input and output names (the onnxruntime-genai naming convention), the
 * mask value, the KV cache layouts and the attention kernel choice.
 *
 *   inputs   input_ids                   int64   [batch, sequence]
 *            position_ids                int64   [batch, sequence]   (absolute positions)
 *            attention_bias              float32 [batch, sequence, total_sequence]
 *                                        (0 = attend, MASKED = masked; total = past + sequence)
 *            sliding_attention_bias      float32 [batch, sequence, total_sequence]
 *                                        (only when some layer uses a sliding window: the same
 *                                        mask with keys outside the window masked too)
 *            past_key_values.{i}.key     float   [batch, num_key_value_heads, past, head_dim]
 *                                        ([..., head_dim, past] with the 'primitives' kernel:
 *                                        {@link keyCacheLayout})
 *            past_key_values.{i}.value   float   [batch, num_key_value_heads, past, head_dim]
 *   outputs  logits                      float32 [batch, sequence | 1, vocab_size]
 *            greedy_token                int64   [batch, 1] ('last' logits only)
 *            present.{i}.key|value       float   [batch, num_key_value_heads, total_sequence, head_dim]
 *                                        (unless `presentOutputs: false`)
 *            step_key_values.{i}.key|value  float [batch, num_key_value_heads, sequence, head_dim]
 *                                        (this step's entries, after RoPE)
 */

/** Value used in the attention biases for masked positions. Finite so fully-masked pad rows stay NaN-free. */
export const MASKED = -1e9;

/** Name of the sliding-window mask input (see the module comment). */
export const SLIDING_BIAS_INPUT = 'sliding_attention_bias';

/**
 * 'onnx-op': the opset-23 `Attention` operator; 'primitives': MatMul + Softmax with the query
 * heads of a KV group batched into one GEMM and a transposed key cache (see
 * {@link keyCacheLayout}). Both are exact and work for any head size. 'primitives' is the
 * default: on bench-110m at batch 16 with ~100 cached tokens it takes the non-weight work of a
 * decode step from ~20.6 to ~12.8 ms (onnxruntime's CPU `Attention` concatenates the whole
 * past into a present tensor and scores each query head separately). The environment variable
 * SLICESERVE_ATTENTION=onnx-op|primitives chooses it (for comparisons; README "Environment").
 */
export type AttentionKernel = 'onnx-op' | 'primitives';
export const ATTENTION_KERNELS: readonly AttentionKernel[] = ['primitives', 'onnx-op'];

/**
 * The attention kernel named by SLICESERVE_ATTENTION, or 'primitives' when it is unset.
 * @throws Error naming the variable and the valid values for any other value.
 */
export function defaultAttentionKernel(env: NodeJS.ProcessEnv = process.env): AttentionKernel {
  const value = env.SLICESERVE_ATTENTION;
  if (value === undefined || value === '') return 'primitives';
  if (!(ATTENTION_KERNELS as readonly string[]).includes(value)) {
    throw new Error(`SLICESERVE_ATTENTION=${value} is not an attention kernel; use ${ATTENTION_KERNELS.join(' or ')}, or unset it`);
  }
  return value as AttentionKernel;
}

/**
 * Layout of `past_key_values.{i}.key` (and `present.{i}.key`) for an attention kernel:
 * 'standard' [batch, num_key_value_heads, past, head_dim] (onnxruntime-genai), or 'transposed'
 * [batch, num_key_value_heads, head_dim, past] for 'primitives', which multiplies queries by
 * the keys without transposing the cache every step. Values are always standard.
 */
export function keyCacheLayout(kernel: AttentionKernel = defaultAttentionKernel()): 'standard' | 'transposed' {
  return kernel === 'primitives' ? 'transposed' : 'standard';
}
