/**
 * Token streams of story files (PROTOCOL.md section 3): the construction shared by the
 * evaluation set (TinyStories validation) and the calibration set (TinyStories train).
 */
import type { TextTokenizer } from '../types.js';

/** The separator between stories, matched as exact bytes. */
export const STORY_SEPARATOR = '<|endoftext|>';

/** A concatenation of encoded stories. */
export interface TokenStream {
  /** All token ids, story after story, each story encoded with the tokenizer's special tokens (BOS for llama2.c). */
  tokens: Int32Array;
  /** Number of stories encoded. */
  storyCount: number;
}

/** ASCII whitespace as Python's `bytes.strip()` sees it: space, \t, \n, \r, \v, \f. */
function isAsciiWhitespace(byte: number): boolean {
  return byte === 0x20 || (byte >= 0x09 && byte <= 0x0d);
}

/**
 * Splits a story file into stories (PROTOCOL.md section 3, steps 1-2): split the bytes on
 * `<|endoftext|>`, strip ASCII whitespace from both ends of each piece, drop empty pieces.
 * @throws Error if a story is not valid UTF-8.
 */
export function splitStories(fileBytes: Uint8Array): string[] {
  const buf = Buffer.from(fileBytes.buffer, fileBytes.byteOffset, fileBytes.byteLength);
  const separator = Buffer.from(STORY_SEPARATOR, 'utf8');
  const decoder = new TextDecoder('utf-8', { fatal: true });
  const stories: string[] = [];
  let start = 0;
  while (start <= buf.length) {
    let end = buf.indexOf(separator, start);
    if (end < 0) end = buf.length;
    let a = start;
    let b = end;
    while (a < b && isAsciiWhitespace(buf[a]!)) a++;
    while (b > a && isAsciiWhitespace(buf[b - 1]!)) b--;
    if (b > a) stories.push(decoder.decode(buf.subarray(a, b)));
    start = end + separator.length;
  }
  return stories;
}

/**
 * Builds the token stream of a story file (PROTOCOL.md section 3): stories from
 * {@link splitStories}, each encoded as transformers' `tokenizer(story)` does (special tokens
 * included: for a llama2.c vocabulary that is BOS and no EOS, as section 3 says; a tokenizer
 * without BOS, e.g. Qwen's, adds none), concatenated in file order.
 * For stories260K: validation sample -> 390,336 tokens / 1,000 stories; train sample ->
 * 1,031,693 tokens / 2,316 stories.
 */
export function buildTokenStream(fileBytes: Uint8Array, tokenizer: TextTokenizer): TokenStream {
  const stories = splitStories(fileBytes);
  const parts = stories.map((s) => tokenizer.encode(s));
  const tokens = new Int32Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const p of parts) {
    tokens.set(p, offset);
    offset += p.length;
  }
  return { tokens, storyCount: stories.length };
}

/**
 * Cuts `stream[i*seqLen : (i+1)*seqLen]` for i = 0..count-1 (PROTOCOL.md §3).
 * @throws RangeError when the stream holds fewer than count * seqLen tokens (the message gives both).
 */
export function cutWindows(stream: readonly number[], seqLen: number, count: number, what = 'the token stream'): number[][] {
  if (!Number.isInteger(seqLen) || seqLen < 2) throw new RangeError(`seq-len must be an integer >= 2, got ${seqLen}`);
  if (!Number.isInteger(count) || count < 1) throw new RangeError(`windows must be an integer >= 1, got ${count}`);
  if (stream.length < seqLen * count) {
    throw new RangeError(`${what} has ${stream.length} tokens; ${count} windows of ${seqLen} need ${seqLen * count}`);
  }
  return Array.from({ length: count }, (_, i) => stream.slice(i * seqLen, (i + 1) * seqLen));
}
