/**
 * Engine-level request and output types, and the messages exchanged between the main thread
 * (HTTP/WebSocket front end) and a model worker (engine/worker.ts).
 *
 * The shape follows vLLM's request life: the front end validates an OpenAI-style request and
 * turns it into an {@link EngineRequest}; the worker's input processor tokenizes it, the
 * scheduler batches its sequences, the output processor turns sampled tokens into text deltas
 * ({@link SequenceOutput}), which the front end streams back.
 *
 * Every timestamp is epoch milliseconds with sub-millisecond precision
 * (`performance.timeOrigin + performance.now()`), comparable across threads.
 */
import type { SlicingInfo } from '../models/types.js';
import type { SamplingParams } from './sampler.js';

/** Sampling parameters of one sequence (engine/sampler.ts). */
export type EngineSamplingParams = SamplingParams;

/**
 * One prompt as the client gave it: text or token ids (used as is). Text is encoded with the
 * tokenizer's special tokens (BOS) unless `addSpecialTokens` is false: a prompt rendered from a
 * chat template already holds them, and transformers / vLLM encode it without adding any.
 */
export type PromptInput = { text: string; addSpecialTokens?: boolean } | { tokens: number[] };

/** A validated completion request, as sent to a model worker. */
export interface EngineRequest {
  /** Unique per worker (the front end uses `cmpl-...`). */
  requestId: string;
  /** One or more prompts; each yields `n` choices (choice index = promptIndex * n + i). */
  prompts: PromptInput[];
  /** Choices per prompt (>= 1). */
  n: number;
  /**
   * Tokens to generate per choice (>= 0); prompt + maxTokens must fit the context. null: the
   * rest of the context (context length - prompt length), vLLM's default for chat requests.
   */
  maxTokens: number | null;
  /** EOS and stop_token_ids are masked until this many tokens were generated. */
  minTokens: number;
  /** Stop strings: generation stops before the first occurrence; the string is not returned. */
  stop: string[];
  /** Token ids that end the sequence (finish_reason "stop"); their text is not returned. */
  stopTokenIds: number[];
  /** Keep generating after EOS (vLLM extra). */
  ignoreEos: boolean;
  /** null: no logprobs; k >= 0: the sampled token's logprob plus the k most likely alternatives. */
  logprobs: number | null;
  /** Prepend the prompt to the returned text (and, with logprobs, score the prompt tokens). */
  echo: boolean;
  sampling: EngineSamplingParams;
  /** When the front end received the request (epoch ms). */
  arrivalTime: number;
}

/** An {@link EngineRequest} whose `maxTokens` is resolved for one prompt (what a sequence runs). */
export type ResolvedEngineRequest = Omit<EngineRequest, 'maxTokens'> & { maxTokens: number };

/** A token alternative in `top_logprobs`. */
export interface TokenAlternative {
  tokenId: number;
  /** The token's text in context (what it would add after the preceding tokens). */
  token: string;
  logprob: number;
}

/** One scored token (generated, or a prompt token when echo + logprobs). */
export interface TokenEntry {
  tokenId: number;
  /** The token's text in context (see {@link TokenAlternative.token}). */
  token: string;
  /** log p(token | preceding tokens) under temperature 1 processed logits; null for the first prompt token. */
  logprob: number | null;
  /** The k most likely alternatives (k = request.logprobs); null for the first prompt token or without logprobs. */
  top: TokenAlternative[] | null;
  /** Character offset of the token's text in the choice's full text (echoed prompt included). */
  textOffset: number;
}

/** What one sequence produced in one engine step. */
export interface SequenceOutput {
  requestId: string;
  /** Choice index within the request. */
  index: number;
  /** Text released by this step (after UTF-8 and stop-string hold-back); may be ''. */
  text: string;
  /** The token generated in this step (absent for an echo-only or a flush output). */
  token?: TokenEntry;
  /** Echoed prompt (first output of the sequence when request.echo). */
  echo?: { text: string; tokens: TokenEntry[] | null };
  /** Set on the sequence's last output. */
  finishReason?: FinishReason;
  /** Number of generated tokens so far (counts EOS / stop tokens). */
  completionTokens: number;
}

/** Why a choice ended: stop string / EOS / stop token id, or the max_tokens/context limit. */
export type FinishReason = 'stop' | 'length';

/** Scheduler occupancy, reported after each step. */
export interface EngineStats {
  /** Requests with at least one sequence in the running batch. */
  runningRequests: number;
  /** Requests none of whose sequences was admitted yet. */
  waitingRequests: number;
  runningSequences: number;
  waitingSequences: number;
  /** Tokens held in KV caches of running sequences. */
  kvUsedTokens: number;
  /** Tokens reserved (prompt + max_tokens) by running sequences. */
  kvReservedTokens: number;
  /** KV budget in tokens (admission limit). */
  kvCapacityTokens: number;
}

/** A request-level error detected in the worker (bad prompt, too long, ...). */
export interface EngineErrorInfo {
  status: number;
  message: string;
  type: string;
  param: string | null;
  code: string | null;
}

/** One kind of weight's quantization, as /v1/models shows it. */
export interface QuantizedKindInfo {
  bits: number;
  block_size: number;
  symmetric: boolean;
}

/**
 * How a served model's weights are quantized (models/quant/; docs/quantization.md): the
 * preset, what each kind of weight got (`null`: kept in float), the MatMulNBits accuracy_level,
 * the residual rotation applied first, and the bytes of the weights a decode step reads.
 */
export interface QuantizationInfo {
  /** The `--quantize` preset: int8 or int4. */
  method: 'int8' | 'int4';
  format: 'onnxruntime MatMulNBits';
  /** q, k, v, o, gate, up, down. */
  linear: QuantizedKindInfo;
  head: QuantizedKindInfo | null;
  shortcuts: QuantizedKindInfo | null;
  /** Always null: the embedding is gathered in float. */
  embedding: null;
  accuracy_level: number;
  /** 'random-orthogonal' when a sliced model's residual basis was randomly rotated before quantizing, else null. */
  rotation: 'random-orthogonal' | null;
  /** Bytes of the quantized tensors (codes, scales, zero points), what their matmuls read per decode step. */
  quantized_bytes: number;
}

/** Weight precision of a served model: its float dtype, or its quantization preset. */
export type WeightPrecision = 'float32' | 'float16' | 'int8' | 'int4';

/** Description of a served model, reported by its worker once ready. */
export interface ModelInfo {
  id: string;
  /** The dense float model it derives from (its id as loaded; equal to `id` for a dense float model). */
  root: string;
  /** Weight precision (the graph dtype for float weights). */
  precision: WeightPrecision;
  /** Null for float weights. */
  quantization: QuantizationInfo | null;
  /** Context length (models/config.ts `contextLength`). */
  maxContext: number;
  vocabSize: number;
  device: string;
  /** Residual width actually used (sliced width for a sliced model). */
  hiddenSize: number;
  /** Original residual width d. */
  originalHiddenSize: number;
  /** Number of weight parameters (sum of tensor sizes). */
  parameters: number;
  numLayers: number;
  slicing: SlicingInfo | null;
  /**
   * The tokenizer's `tokenizer_config.json` fields that chat templates read (`chat_template`,
   * the special tokens `bos_token`, `eos_token`, ...), as the model ships them (server/chat-template.ts
   * interprets them); `added_tokens_decoder` is left out.
   */
  tokenizerConfig: Record<string, unknown>;
  /**
   * The tokenizer's BOS and EOS strings (TextTokenizer.bosToken / eosToken: tokenizer_config.json
   * with the family's rules and config.json's ids as fallback), which chat templates see as
   * `bos_token` / `eos_token`; null when the tokenizer has none.
   */
  bosToken: string | null;
  eosToken: string | null;
}

/** How a worker obtains its model. */
export interface WorkerModelSpec {
  /** Directory of the dense model (llama2.c or Hugging Face). */
  path: string;
  /** API id override for the dense model. */
  id?: string;
  /** Slice the dense model before serving it (SliceGPT, run inside this worker). */
  slice?: {
    sparsity: number;
    calibrationFile: string;
    calWindows?: number;
    cacheDir?: string;
    /** Held-out text on which the slice's and the dense model's perplexity are recorded. */
    heldOutFile?: string;
    /** Held-out windows (0 = not measured). */
    heldOutWindows?: number;
  };
  /** Quantize the (sliced) model before serving it (slicer/quantize.ts), through the quantized cache. */
  quantize?: {
    preset: 'int8' | 'int4';
    /** Residual rotation first (default 'auto': sliced models). */
    rotation?: 'auto' | 'random' | 'none';
    cacheDir?: string;
  };
}

/** Options of a model worker. */
export interface WorkerOptions {
  model: WorkerModelSpec;
  device?: 'cpu' | 'cuda' | 'webgpu' | 'auto';
  threads?: number;
  /** Graph precision (default float32). */
  dtype?: 'float32' | 'float16';
  maxBatchSize: number;
  /** KV budget in tokens; default maxBatchSize * maxContext. */
  kvCacheTokens?: number;
  /** Positions one prefill step computes at most (chunked prefill, engine/scheduler.ts); default no limit. */
  maxPrefillTokens?: number;
}

/** Main thread -> worker. */
export type ToWorkerMessage =
  | { type: 'submit'; request: EngineRequest }
  | { type: 'abort'; requestId: string }
  | { type: 'shutdown' }
  /** Tokenize `text` (vLLM's POST /tokenize); answered by a `tokenizer` message with the same id. */
  | { type: 'tokenize'; id: number; text: string; addSpecialTokens: boolean }
  /** Decode token ids (vLLM's POST /detokenize); answered by a `tokenizer` message with the same id. */
  | { type: 'detokenize'; id: number; tokens: number[] }
  /**
   * Leave at once, abandoning everything (handled whenever the worker's event loop is free,
   * i.e. never in the middle of an onnxruntime run: terminating a worker thread while a
   * native run is in progress aborts the whole process).
   */
  | { type: 'exit' };

/** Worker -> main thread. */
export type FromWorkerMessage =
  | { type: 'progress'; phase: string; fraction: number }
  | { type: 'ready'; model: ModelInfo }
  | { type: 'fatal'; message: string }
  | { type: 'accepted'; requestId: string; promptTokens: number[] }
  | { type: 'rejected'; requestId: string; error: EngineErrorInfo }
  | { type: 'step'; step: StepReport }
  | { type: 'stats'; stats: EngineStats }
  | { type: 'log'; level: 'info' | 'warn'; msg: string; data?: object }
  | { type: 'tokenizer'; id: number; result?: TokenizerResult; error?: EngineErrorInfo };

/** Answer of a `tokenize` (tokens and their vocabulary strings) or `detokenize` (text) message. */
export interface TokenizerResult {
  tokens?: number[];
  /** Vocabulary spelling of each token (transformers' `convert_ids_to_tokens`). */
  tokenStrs?: (string | null)[];
  text?: string;
}

/** What one engine step did. */
export interface StepReport {
  phase: 'prefill' | 'decode';
  /** Sequences in the session.step call. */
  batchSize: number;
  /** Tokens fed to the model (prompt tokens for prefill, one per sequence for decode). */
  tokens: number;
  /** Duration of the forward pass (ms). */
  forwardMs: number;
  /** Requests whose first sequence was admitted in this step, with the admission time. */
  admitted: { requestId: string; time: number }[];
  outputs: SequenceOutput[];
  /** Requests whose forward pass threw; they were removed. */
  failed: { requestId: string; message: string }[];
  stats: EngineStats;
}
