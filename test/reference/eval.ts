/**
 * The measurement protocol on top of the reference forward (forward.ts), written from
 * PROTOCOL.md (the project reference) §3-4 and transformers' greedy `generate`, not from
 * SliceServe's runtime/perplexity.ts or engine/generate.ts:
 * - token stream: split the file's bytes on `<|endoftext|>`, strip ASCII whitespace from both
 *   ends of each piece, drop empty pieces, encode each story with the tokenizer's special
 *   tokens (tokenizer.json's own post-processor, as `PreTrainedTokenizerFast(tokenizer_file=)`
 *   does), concatenate;
 * - windows: `stream[i*S : (i+1)*S]`, i < count, each fed alone at positions 0..S-1;
 * - perplexity: `exp(mean over windows and t < S-1 of logsumexp(logits[t]) - logits[t][w[t+1]])`
 *   in float64 over the full vocabulary;
 * - greedy: prefill the prompt, then one token at a time through the KV cache (what
 *   `generate(do_sample=False)` runs), argmax with the lowest id on ties, stopping at an
 *   end-of-sequence id unless told not to.
 * The tokenizer is `@huggingface/tokenizers` on tokenizer.json (tokenization is not what the
 * reference checks; the windows' sha256 makes a tokenization difference visible).
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import type { ReferenceModel } from './forward.js';
import { logSumExp } from './math.js';

const SEPARATOR = Buffer.from('<|endoftext|>', 'utf8');
const isSpace = (b: number) => b === 0x20 || (b >= 0x09 && b <= 0x0d);

/** Stories of a file (PROTOCOL.md §3 steps 1-2). @throws on invalid UTF-8. */
export function splitStories(bytes: Buffer): string[] {
  const decoder = new TextDecoder('utf-8', { fatal: true });
  const out: string[] = [];
  for (let start = 0; start <= bytes.length; ) {
    let end = bytes.indexOf(SEPARATOR, start);
    if (end < 0) end = bytes.length;
    let a = start;
    let b = end;
    while (a < b && isSpace(bytes[a]!)) a++;
    while (b > a && isSpace(bytes[b - 1]!)) b--;
    if (b > a) out.push(decoder.decode(bytes.subarray(a, b)));
    start = end + SEPARATOR.length;
  }
  return out;
}

/** tokenizer.json (+ tokenizer_config.json) of a model directory. */
export function loadTokenizer(dir: string): Tokenizer {
  const file = path.join(dir, 'tokenizer.json');
  if (!fs.existsSync(file)) throw new Error(`${dir} has no tokenizer.json`);
  const configFile = path.join(dir, 'tokenizer_config.json');
  const config = fs.existsSync(configFile) ? JSON.parse(fs.readFileSync(configFile, 'utf8')) : {};
  return new Tokenizer(JSON.parse(fs.readFileSync(file, 'utf8')), config);
}

/** `tokenizer(text)["input_ids"]`: the text with the post-processor's special tokens. */
export function encode(tokenizer: Tokenizer, text: string): number[] {
  return tokenizer.encode(text, { add_special_tokens: true }).ids;
}

/**
 * The evaluation windows (PROTOCOL.md §3).
 * @throws RangeError when the stream is shorter than count * seqLen tokens.
 */
export function protocolWindows(bytes: Buffer, tokenizer: Tokenizer, seqLen: number, count: number): { windows: number[][]; streamTokens: number; sha256: string } {
  const stream: number[] = [];
  for (const story of splitStories(bytes)) {
    for (const id of encode(tokenizer, story)) stream.push(id);
    if (stream.length >= seqLen * count) break;
  }
  if (stream.length < seqLen * count) throw new RangeError(`the token stream has ${stream.length} tokens; ${count} windows of ${seqLen} need ${seqLen * count}`);
  const windows = Array.from({ length: count }, (_, i) => stream.slice(i * seqLen, (i + 1) * seqLen));
  const sha256 = createHash('sha256').update(Int32Array.from(windows.flat())).digest('hex');
  return { windows, streamTokens: stream.length, sha256 };
}

export interface ReferencePerplexity {
  perplexity: number;
  meanNll: number;
  /** Predicted tokens: windows * (seqLen - 1). */
  tokens: number;
}

/**
 * Perplexity of equal-length windows (PROTOCOL.md §4).
 * @param batch windows per forward call (they share each weight read).
 * @param onProgress (windows done, total).
 */
export function referencePerplexity(model: ReferenceModel, windows: readonly number[][], batch = 4, onProgress?: (done: number, total: number) => void): ReferencePerplexity {
  let total = 0;
  let count = 0;
  for (let start = 0; start < windows.length; start += batch) {
    const part = windows.slice(start, start + batch);
    model.forward(part.map((tokens) => ({ tokens, cache: model.newCache() })), (b, t, logits) => {
      const w = part[b]!;
      if (t + 1 >= w.length) return;
      total += logSumExp(logits) - logits[w[t + 1]!]!;
      count += 1;
    });
    onProgress?.(Math.min(start + batch, windows.length), windows.length);
  }
  const meanNll = total / count;
  return { perplexity: Math.exp(meanNll), meanNll, tokens: count };
}

/** The lowest index of the largest entry (torch.argmax's choice on ties). */
export function argmax(x: Float64Array): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i]! > x[best]!) best = i;
  return best;
}

/**
 * Greedy continuation of `prompt` through the KV cache.
 * @param eos ids that end the continuation (not included in it); empty: never stop early.
 * @returns the generated ids and why generation stopped.
 */
export function referenceGreedy(model: ReferenceModel, prompt: readonly number[], maxTokens: number, eos: readonly number[] = []): { tokens: number[]; finishReason: 'stop' | 'length' } {
  if (prompt.length === 0) throw new RangeError('the prompt has no tokens');
  const cache = model.newCache();
  let last: Float64Array | null = null;
  const step = (tokens: readonly number[]) => model.forward([{ tokens, cache }], (_b, t, logits) => {
    if (t === tokens.length - 1) last = logits;
  });
  step(prompt);
  const out: number[] = [];
  while (out.length < maxTokens) {
    const next = argmax(last!);
    if (eos.includes(next)) return { tokens: out, finishReason: 'stop' };
    out.push(next);
    if (out.length < maxTokens) step([next]);
  }
  return { tokens: out, finishReason: 'length' };
}

/**
 * End-of-sequence ids as `generate` sees them: config.json's `eos_token_id` (one id or a list)
 * and generation_config.json's.
 */
export function endOfSequenceIds(dir: string): number[] {
  const ids = (v: unknown): number[] => (Array.isArray(v) ? v : v === undefined || v === null ? [] : [v]).filter((x): x is number => Number.isInteger(x));
  const read = (name: string) => (fs.existsSync(path.join(dir, name)) ? (JSON.parse(fs.readFileSync(path.join(dir, name), 'utf8')) as Record<string, unknown>) : {});
  return [...new Set([...ids(read('config.json').eos_token_id), ...ids(read('generation_config.json').eos_token_id)])];
}
