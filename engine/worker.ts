/**
 * Model worker (worker_thread entry): owns one served model, its onnxruntime session, the
 * scheduler loop and the samplers, so that the blocking `session.run()` never stalls the
 * HTTP event loop. A sliced variant is sliced here too (SliceGPT, slicer/index.ts) before it
 * starts serving, so slicing never blocks the main thread or the other models' workers.
 *
 * Startup messages: `progress`* then `ready` (or `fatal`). Then, per request: `accepted` or
 * `rejected`, and a `step` message after every forward pass carrying all sequences' outputs.
 * The loop yields to the event loop between forward passes, which is when new requests join
 * and cancellations take effect.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { loadModel } from '../models/load.js';
import { countModelParameters } from '../models/parameters.js';
import { blockQuantJson, quantizedModelBytes } from '../models/quant/index.js';
import type { LoadedModel } from '../models/types.js';
import { HfTokenizer } from '../models/tokenizer/index.js';
import { DecoderSession } from '../runtime/decoder-session.js';
import { sliceModel } from '../slicer/index.js';
import { quantizeModelWithReport } from '../slicer/quantize.js';
import { EngineRequestError } from './input.js';
import type { EngineErrorInfo, FromWorkerMessage, ModelInfo, QuantizationInfo, ToWorkerMessage, TokenizerResult, WorkerOptions } from './protocol.js';
import { Sampler } from './sampler.js';
import { Scheduler } from './scheduler.js';

function post(msg: FromWorkerMessage): void {
  parentPort?.postMessage(msg);
}

/** Loads the model (slicing and quantizing it if asked) and opens its session. */
async function prepare(options: WorkerOptions): Promise<{ model: LoadedModel; session: DecoderSession; root: string }> {
  post({ type: 'progress', phase: 'load', fraction: 0 });
  let model = await loadModel(options.model.path, options.model.id ? { id: options.model.id } : undefined);
  const root = model.id;
  const { slice, quantize } = options.model;
  // Slicing reports the first 80 % of the progress when quantizing follows, else all of it.
  const share = slice ? (quantize ? 0.8 : 1) : 0;
  if (slice) {
    model = await sliceModel(
      model,
      {
        sparsity: slice.sparsity,
        calibrationFile: slice.calibrationFile,
        calWindows: slice.calWindows,
        cacheDir: slice.cacheDir,
        heldOutFile: slice.heldOutFile,
        heldOutWindows: slice.heldOutWindows,
        warn: (msg) => post({ type: 'log', level: 'warn', msg }),
        onWarning: (msg) => post({ type: 'log', level: 'warn', msg }),
      },
      (p) => post({ type: 'progress', phase: p.phase, fraction: p.fraction * share }),
    );
  }
  if (quantize) {
    // The float model is consumed tensor by tensor: no second float32 copy.
    model = (await quantizeModelWithReport(model, { preset: quantize.preset, rotation: quantize.rotation, cacheDir: quantize.cacheDir, onWarning: (msg) => post({ type: 'log', level: 'warn', msg }) }, (p) =>
      post({ type: 'progress', phase: p.phase, fraction: share + p.fraction * (1 - share) }),
    )).model;
  }
  const session = await DecoderSession.create(model, {
    device: options.device,
    threads: options.threads,
    dtype: options.dtype,
    logger: {
      info: (msg: string) => post({ type: 'log', level: 'info', msg }),
      warn: (msg: string) => post({ type: 'log', level: 'warn', msg }),
    },
  });
  return { model, session, root };
}

/** /v1/models' view of a model's quantization, or null for float weights. */
function quantizationInfo(model: LoadedModel): QuantizationInfo | null {
  const q = model.quantization;
  if (!q) return null;
  return {
    method: q.preset,
    format: 'onnxruntime MatMulNBits',
    linear: blockQuantJson(q.options.linear)!,
    head: blockQuantJson(q.options.head),
    shortcuts: blockQuantJson(q.options.shortcuts),
    embedding: null,
    accuracy_level: q.options.accuracyLevel,
    rotation: q.rotation ? 'random-orthogonal' : null,
    quantized_bytes: quantizedModelBytes(model),
  };
}

/** What the front end shows about a model (/v1/models). */
function describe(model: LoadedModel, session: DecoderSession, root: string, dtype: 'float32' | 'float16'): ModelInfo {
  const parameters = countModelParameters(model);
  return {
    id: model.id,
    root,
    precision: model.quantization?.preset ?? dtype,
    quantization: quantizationInfo(model),
    maxContext: session.maxContext,
    vocabSize: session.vocabSize,
    device: session.device,
    hiddenSize: model.config.sliceserve?.sliced_hidden_size ?? model.config.hidden_size,
    originalHiddenSize: model.config.hidden_size,
    parameters,
    numLayers: model.config.num_hidden_layers,
    slicing: model.config.sliceserve ?? null,
    tokenizerConfig: chatTemplateFields(model),
    bosToken: model.tokenizer.bosToken,
    eosToken: model.tokenizer.eosToken,
  };
}

/** The tokenizer_config.json fields a chat template reads (all but the large added_tokens_decoder). */
function chatTemplateFields(model: LoadedModel): Record<string, unknown> {
  if (!(model.tokenizer instanceof HfTokenizer)) return {};
  const { added_tokens_decoder: _decoder, ...fields } = model.tokenizer.tokenizerConfig;
  return fields;
}

/**
 * vLLM's /tokenize and /detokenize inside the worker, which owns the tokenizer. Token ids
 * outside the model's vocabulary (config vocab_size) are a 400; detokenized text keeps special tokens (vLLM decodes
 * without skip_special_tokens).
 */
function tokenizerRequest(model: LoadedModel, msg: Extract<ToWorkerMessage, { type: 'tokenize' | 'detokenize' }>): { result?: TokenizerResult; error?: EngineErrorInfo } {
  const tok = model.tokenizer;
  try {
    if (msg.type === 'tokenize') {
      const tokens = tok.encode(msg.text, { addSpecialTokens: msg.addSpecialTokens });
      const tokenStrs = tokens.map((id) => (tok instanceof HfTokenizer ? (tok.idToToken(id) ?? null) : null));
      return { result: { tokens, tokenStrs } };
    }
    // The model's vocabulary (its embedding rows), as for token prompts: ids the model can emit
    // beyond the tokenizer's (padded embeddings) decode to nothing, ids beyond it are refused.
    const vocab = model.config.vocab_size;
    const bad = msg.tokens.find((id) => !Number.isInteger(id) || id < 0 || id >= vocab);
    if (bad !== undefined) throw new RangeError(`token id ${bad} is outside the vocabulary (0..${vocab - 1})`);
    const text = tok instanceof HfTokenizer ? tok.decode(msg.tokens, { skipSpecialTokens: false }) : tok.decode(msg.tokens);
    return { result: { text } };
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    const status = err instanceof RangeError ? 400 : 500;
    return { error: { status, message: status === 400 ? `tokens: ${message}` : message, type: status === 400 ? 'invalid_request_error' : 'server_error', param: status === 400 ? 'tokens' : null, code: null } };
  }
}

// Registered first, so that it also works while the model is still loading or slicing.
parentPort?.on('message', (msg: ToWorkerMessage) => {
  if (msg.type === 'exit') process.exit(1);
});

async function main(): Promise<void> {
  const options = workerData as WorkerOptions;
  let prepared: { model: LoadedModel; session: DecoderSession; root: string };
  try {
    prepared = await prepare(options);
  } catch (err) {
    post({ type: 'fatal', message: err instanceof Error ? err.message : String(err) });
    return;
  }
  const { model, session, root } = prepared;
  const scheduler = new Scheduler(session, model.tokenizer, (p) => new Sampler(p), {
    maxBatchSize: options.maxBatchSize,
    kvCacheTokens: options.kvCacheTokens,
    maxPrefillTokens: options.maxPrefillTokens,
  });
  let stopping = false;
  let wake: (() => void) | null = null;
  const notify = () => {
    const w = wake;
    wake = null;
    w?.();
  };

  parentPort?.on('message', (msg: ToWorkerMessage) => {
    switch (msg.type) {
      case 'submit':
        try {
          const promptTokens = scheduler.add(msg.request);
          post({ type: 'accepted', requestId: msg.request.requestId, promptTokens });
        } catch (err) {
          const error =
            err instanceof EngineRequestError
              ? err.toInfo()
              : { status: 500, message: err instanceof Error ? err.message : String(err), type: 'server_error', param: null, code: null };
          post({ type: 'rejected', requestId: msg.request.requestId, error });
        }
        break;
      case 'abort':
        if (scheduler.abort(msg.requestId)) post({ type: 'stats', stats: scheduler.stats() });
        break;
      case 'shutdown':
        stopping = true;
        break;
      case 'tokenize':
      case 'detokenize':
        post({ type: 'tokenizer', id: msg.id, ...tokenizerRequest(model, msg) });
        break;
      case 'exit':
        break; // handled by the listener above
    }
    notify();
  });

  post({ type: 'ready', model: describe(model, session, root, options.dtype ?? 'float32') });
  while (!stopping) {
    if (!scheduler.hasWork()) {
      await new Promise<void>((resolve) => (wake = resolve));
      continue;
    }
    const report = await scheduler.step();
    if (report) post({ type: 'step', step: report });
    // Let queued messages (new requests, cancellations) in before the next forward pass.
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
  await session.release();
  parentPort?.close();
}

void main();
