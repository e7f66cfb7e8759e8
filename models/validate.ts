/**
 * Validation of Hugging Face Llama model directories: `config.json` (zod schema with the
 * defaults of `transformers`' LlamaConfig) and the presence and shape of every weight, for
 * dense models and for SliceGPT-sliced ones (SLICEGPT.md sections 2-5; Ashkboos et al. 2024,
 * arXiv 2401.15024, sections 3.2-3.4).
 */
import { z } from 'zod';
import { ModelLoadError, W, type LlamaConfig, type SlicingInfo, type TextTokenizer, type WeightMap } from './types.js';

/** The only architecture SliceServe runs. */
export const SUPPORTED_ARCHITECTURES = ['LlamaForCausalLM'] as const;

const positiveInt = z.number().int().positive();
const nonNegativeInt = z.number().int().nonnegative();

const slicingSchema = z.object({
  sparsity: z.number().min(0).lt(1),
  original_hidden_size: positiveInt,
  sliced_hidden_size: positiveInt,
  round_interval: positiveInt,
  slice_head: z.boolean(),
  calibration: z.object({
    file: z.string(),
    sha256: z.string(),
    windows: nonNegativeInt,
    seq_len: positiveInt,
    tokens: nonNegativeInt,
  }).loose(),
  source_model_sha256: z.string(),
  created: z.string(),
}).loose();

/** config.json as `transformers` reads it for LlamaForCausalLM (fields SliceServe uses). */
const configSchema = z.object({
  architectures: z.array(z.string()).min(1),
  model_type: z.string().default('llama'),
  hidden_size: positiveInt,
  intermediate_size: positiveInt,
  num_hidden_layers: positiveInt,
  num_attention_heads: positiveInt,
  num_key_value_heads: positiveInt.nullish(),
  head_dim: positiveInt.nullish(),
  vocab_size: positiveInt,
  max_position_embeddings: positiveInt.default(2048),
  rms_norm_eps: z.number().positive().default(1e-6),
  rope_theta: z.number().positive().default(10000),
  tie_word_embeddings: z.boolean().default(false),
  bos_token_id: nonNegativeInt.nullish(),
  eos_token_id: z.union([nonNegativeInt, z.array(nonNegativeInt).min(1)]).nullish(),
  hidden_act: z.string().optional(),
  attention_bias: z.boolean().optional(),
  mlp_bias: z.boolean().optional(),
  rope_scaling: z.unknown().optional(),
  sliceserve: slicingSchema.optional(),
}).loose();

/**
 * Parses and checks a Llama `config.json`, filling the defaults of `transformers`:
 * num_key_value_heads = num_attention_heads, head_dim = hidden_size / num_attention_heads,
 * tie_word_embeddings false, rope_theta 10000, rms_norm_eps 1e-6, max_position_embeddings
 * 2048, bos 1, eos 2 (a list of EOS ids keeps its first). An optional `sliceserve` object
 * (types.ts SlicingInfo) is kept as it is.
 * @param file the config's path, named in errors.
 * @throws ModelLoadError naming `file`: an architecture other than LlamaForCausalLM ("unknown
 *   architecture X; supported: LlamaForCausalLM"), a missing or ill-typed field, features
 *   SliceServe does not implement (rope_scaling, attention/MLP biases, hidden_act other than
 *   silu), or inconsistent sizes.
 */
export function parseLlamaConfig(json: unknown, file: string): LlamaConfig {
  const architectures = (json as { architectures?: unknown } | null)?.architectures;
  if (Array.isArray(architectures) && !architectures.some((a) => (SUPPORTED_ARCHITECTURES as readonly unknown[]).includes(a))) {
    throw new ModelLoadError(file, `unknown architecture ${architectures.join(', ')}; supported: ${SUPPORTED_ARCHITECTURES.join(', ')}`);
  }
  const parsed = configSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const where = issue.path.length > 0 ? issue.path.join('.') : '(top level)';
    throw new ModelLoadError(file, `invalid config: ${where}: ${issue.message}`);
  }
  const c = parsed.data;
  const fail = (problem: string) => new ModelLoadError(file, problem);
  if (c.hidden_act !== undefined && c.hidden_act !== 'silu') throw fail(`hidden_act ${c.hidden_act} is not supported (Llama uses silu)`);
  if (c.attention_bias) throw fail('attention_bias true is not supported');
  if (c.mlp_bias) throw fail('mlp_bias true is not supported');
  if (c.rope_scaling !== undefined && c.rope_scaling !== null) throw fail(`rope_scaling ${JSON.stringify(c.rope_scaling)} is not supported`);
  const numKv = c.num_key_value_heads ?? c.num_attention_heads;
  if (c.num_attention_heads % numKv !== 0) {
    throw fail(`num_attention_heads ${c.num_attention_heads} is not a multiple of num_key_value_heads ${numKv}`);
  }
  let headDim = c.head_dim ?? undefined;
  if (headDim === undefined) {
    if (c.hidden_size % c.num_attention_heads !== 0) {
      throw fail(`hidden_size ${c.hidden_size} is not a multiple of num_attention_heads ${c.num_attention_heads} and head_dim is not given`);
    }
    headDim = c.hidden_size / c.num_attention_heads;
  }
  if (headDim % 2 !== 0) throw fail(`head_dim ${headDim} must be even (RoPE rotates pairs)`);
  const config: LlamaConfig = {
    architectures: c.architectures,
    model_type: c.model_type,
    hidden_size: c.hidden_size,
    intermediate_size: c.intermediate_size,
    num_hidden_layers: c.num_hidden_layers,
    num_attention_heads: c.num_attention_heads,
    num_key_value_heads: numKv,
    head_dim: headDim,
    vocab_size: c.vocab_size,
    max_position_embeddings: c.max_position_embeddings,
    rms_norm_eps: c.rms_norm_eps,
    rope_theta: c.rope_theta,
    tie_word_embeddings: c.tie_word_embeddings,
    bos_token_id: c.bos_token_id ?? 1,
    eos_token_id: (Array.isArray(c.eos_token_id) ? c.eos_token_id[0] : c.eos_token_id) ?? 2,
  };
  // A list (Llama 3 style: end of text and end of turn) ends a sequence at any of its ids.
  if (Array.isArray(c.eos_token_id) && new Set(c.eos_token_id).size > 1) config.eos_token_ids = [...new Set(c.eos_token_id)];
  if (c.sliceserve) {
    const s = c.sliceserve as SlicingInfo;
    if (s.original_hidden_size !== c.hidden_size) {
      throw fail(`sliceserve.original_hidden_size ${s.original_hidden_size} differs from hidden_size ${c.hidden_size}`);
    }
    if (s.sliced_hidden_size > c.hidden_size) {
      throw fail(`sliceserve.sliced_hidden_size ${s.sliced_hidden_size} exceeds hidden_size ${c.hidden_size}`);
    }
    if (c.tie_word_embeddings) throw fail('a sliced model (sliceserve present) cannot have tie_word_embeddings true');
    config.sliceserve = s;
  }
  for (const [what, id] of [['bos_token_id', config.bos_token_id], ...(config.eos_token_ids ?? [config.eos_token_id]).map((id) => ['eos_token_id', id] as const)] as const) {
    if (id >= config.vocab_size) throw fail(`${what} ${id} is not below vocab_size ${config.vocab_size}`);
  }
  return config;
}

/**
 * Shape of every weight a model with `config` must have, by Hugging Face name.
 *
 * Dense (H heads, KV key/value heads, hd head_dim, d hidden_size, I intermediate_size, V vocab):
 * embed [V, d]; per layer q [H*hd, d], k/v [KV*hd, d], o [d, H*hd], gate/up [I, d], down [d, I],
 * input/post-attention norms [d]; final norm [d]; lm_head [V, d] unless tied.
 *
 * Sliced (config.sliceserve, d' = sliced_hidden_size): no norm weights (fused, paper Sec.
 * 3.2); embed [V, d']; layer l reads din_l (d' for l = 0, else dout_{l-1}) and writes dout_l
 * (d', except the last layer writes d unless slice_head): q [H*hd, din], k/v [KV*hd, din],
 * o [d', H*hd], attn_shortcut_Q [din, d'], gate/up [I, d'], down [dout, I],
 * mlp_shortcut_Q [d', dout]; lm_head [V, dout_last] (always present, untied).
 */
export function expectedWeightShapes(config: LlamaConfig): Map<string, number[]> {
  const { hidden_size: d, intermediate_size: I, vocab_size: V, num_hidden_layers: L } = config;
  const qDim = config.num_attention_heads * config.head_dim;
  const kvDim = config.num_key_value_heads * config.head_dim;
  const shapes = new Map<string, number[]>();
  const s = config.sliceserve;
  if (!s) {
    shapes.set(W.embed, [V, d]);
    for (let l = 0; l < L; l++) {
      shapes.set(W.q(l), [qDim, d]);
      shapes.set(W.k(l), [kvDim, d]);
      shapes.set(W.v(l), [kvDim, d]);
      shapes.set(W.o(l), [d, qDim]);
      shapes.set(W.gate(l), [I, d]);
      shapes.set(W.up(l), [I, d]);
      shapes.set(W.down(l), [d, I]);
      shapes.set(W.attnNorm(l), [d]);
      shapes.set(W.mlpNorm(l), [d]);
    }
    shapes.set(W.finalNorm, [d]);
    if (!config.tie_word_embeddings) shapes.set(W.lmHead, [V, d]);
    return shapes;
  }
  const ds = s.sliced_hidden_size;
  shapes.set(W.embed, [V, ds]);
  let din = ds;
  for (let l = 0; l < L; l++) {
    const dout = l === L - 1 && !s.slice_head ? d : ds;
    shapes.set(W.q(l), [qDim, din]);
    shapes.set(W.k(l), [kvDim, din]);
    shapes.set(W.v(l), [kvDim, din]);
    shapes.set(W.o(l), [ds, qDim]);
    shapes.set(W.attnShortcut(l), [din, ds]);
    shapes.set(W.gate(l), [I, ds]);
    shapes.set(W.up(l), [I, ds]);
    shapes.set(W.down(l), [dout, I]);
    shapes.set(W.mlpShortcut(l), [ds, dout]);
    din = dout;
  }
  shapes.set(W.lmHead, [V, din]);
  return shapes;
}

const describe = (shape: readonly number[]) => `[${shape.join(', ')}]`;

/**
 * Checks that `weights` holds exactly the tensors of {@link expectedWeightShapes}, with those
 * shapes and matching data lengths.
 * @param fileOf the file a tensor came from (for the error message).
 * @param configFile the config the shapes follow (named in shape errors).
 * @throws ModelLoadError naming the tensor's file and the tensor: missing, wrong shape (both
 *   shapes given), data length not matching the shape, or a tensor the model does not use.
 */
export function validateWeights(config: LlamaConfig, weights: WeightMap, fileOf: (name: string) => string, configFile = 'config.json'): void {
  const expected = expectedWeightShapes(config);
  const kind = config.sliceserve ? `sliced model (sliced_hidden_size ${config.sliceserve.sliced_hidden_size})` : 'model';
  for (const [name, shape] of expected) {
    const t = weights.get(name);
    if (!t) throw new ModelLoadError(fileOf(name), `missing tensor ${name} (expected shape ${describe(shape)})`);
    if (t.shape.length !== shape.length || t.shape.some((n, i) => n !== shape[i])) {
      throw new ModelLoadError(fileOf(name), `tensor ${name} has shape ${describe(t.shape)}, but ${configFile} ` +
        `(hidden_size ${config.hidden_size}, ${config.num_attention_heads}/${config.num_key_value_heads} heads of ${config.head_dim}, ` +
        `intermediate_size ${config.intermediate_size}, vocab_size ${config.vocab_size}) implies ${describe(shape)} for this ${kind}`);
    }
    const count = shape.reduce((a, b) => a * b, 1);
    if (t.data.length !== count) {
      throw new ModelLoadError(fileOf(name), `tensor ${name} has ${t.data.length} values for shape ${describe(shape)}`);
    }
  }
  for (const name of weights.keys()) {
    if (!expected.has(name)) {
      throw new ModelLoadError(fileOf(name), `unexpected tensor ${name}` +
        (name === W.lmHead ? ' (tie_word_embeddings is true)' : ` (not part of a ${config.sliceserve ? 'sliced' : 'dense'} Llama with ${config.num_hidden_layers} layers)`));
    }
  }
}

/**
 * Checks that the tokenizer fits the embedding: every id it can produce must be below
 * `config.vocab_size` (a smaller tokenizer is fine; models often pad the embedding).
 * @throws ModelLoadError naming the tokenizer file, the config file and both sizes.
 */
export function validateTokenizerSize(tokenizer: TextTokenizer, config: LlamaConfig, tokenizerFile: string, configFile: string): void {
  if (tokenizer.vocabSize > config.vocab_size) {
    throw new ModelLoadError(tokenizerFile, `the tokenizer has ${tokenizer.vocabSize} tokens but ${configFile} has vocab_size ${config.vocab_size}`);
  }
}
