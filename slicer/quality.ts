/**
 * The quality cost of a slice, recorded with it: the perplexity of the sliced model and of the
 * dense model on the same held-out sample (PROTOCOL.md §3-4: the file's token stream, cut into
 * non-overlapping windows, runtime/perplexity.ts), a text that must differ from the calibration
 * text the slice was computed from (perplexity on the calibration text would flatter the slice).
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { buildTokenStream, cutWindows } from '../models/tokenizer/index.js';
import { contextLength, type SliceQuality } from '../models/config.js';
import type { LoadedModel } from '../models/types.js';
import { DecoderSession } from '../runtime/decoder-session.js';
import { perplexity } from '../runtime/perplexity.js';

/** Where and how much to evaluate. */
export interface HeldOutOptions {
  /** Text file of stories separated by `<|endoftext|>` (not the calibration file). */
  file: string;
  /** Windows to evaluate (> 0). */
  windows: number;
  /** Tokens per window. */
  seqLen: number;
  /** sha256 of the calibration text, which the held-out file must not be. */
  calibrationSha256: string;
  /** onnxruntime intra-op threads (default: all cores). */
  threads?: number;
}

/**
 * Perplexity of `sliced` and `dense` on the first `windows` windows of `file` (each window
 * `seqLen` tokens of the file's token stream; perplexity = exp of the mean negative log-likelihood
 * of the windows x (seqLen - 1) next tokens, runtime/perplexity.ts; SliceGPT §4 reports WikiText-2
 * perplexity of dense and sliced models the same way).
 * @throws RangeError when the file is the calibration text, is too short for the windows, or the
 *   windows are longer than the context; Error when it cannot be read
 */
export async function heldOutQuality(dense: LoadedModel, sliced: LoadedModel, options: HeldOutOptions): Promise<SliceQuality> {
  let bytes: Buffer;
  try {
    bytes = fs.readFileSync(options.file);
  } catch (err) {
    throw new Error(`cannot read the held-out file ${options.file}: ${(err as NodeJS.ErrnoException).code ?? err}`);
  }
  const sha256 = createHash('sha256').update(bytes).digest('hex');
  if (sha256 === options.calibrationSha256) {
    throw new RangeError(`the held-out file ${options.file} is the calibration text: a slice is judged on text it was not calibrated on; pass another file`);
  }
  const context = contextLength(dense.config);
  if (options.seqLen > context) throw new RangeError(`held-out windows of ${options.seqLen} tokens exceed the context length ${context}`);
  const stream = buildTokenStream(bytes, dense.tokenizer);
  const windows = cutWindows(Array.from(stream.tokens), options.seqLen, options.windows, `the held-out file ${options.file}`);
  const score = async (model: LoadedModel) => {
    const session = await DecoderSession.create(model, { logits: 'all', threads: options.threads });
    try {
      // One window per forward pass: the logits of a pass are windows x seqLen x vocab floats
      // (256 x 128k x 4 B = 128 MB for a Llama 3 vocabulary), next to the weights of both models.
      return (await perplexity(session, windows, 1)).perplexity;
    } finally {
      await session.release();
    }
  };
  return {
    file: path.basename(options.file),
    sha256,
    windows: windows.length,
    seq_len: options.seqLen,
    tokens: windows.length * (options.seqLen - 1),
    perplexity: await score(sliced),
    dense_perplexity: await score(dense),
  };
}
