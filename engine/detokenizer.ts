/**
 * Incremental detokenization that never emits a broken UTF-8 character.
 *
 * Byte-fallback tokens (SentencePiece `<0xNN>`) can split one character over several tokens;
 * decoding a prefix then ends with U+FFFD. As in vLLM's incremental detokenizer, the text of
 * the new tokens is `decode(window + new) - decode(window)` over a short window of preceding
 * tokens (so that decoders which strip the leading space of the whole string, like the
 * SentencePiece `Strip` step, treat both strings alike), and text whose decoding ends in
 * U+FFFD is held back until the character completes (or the sequence ends: {@link flush}).
 */
import type { TextTokenizer } from '../models/types.js';

/** Tokens of context kept before the first unread token. */
const WINDOW = 6;
const REPLACEMENT = '\uFFFD';

/** The decode part of a tokenizer. */
export type Decoder = Pick<TextTokenizer, 'decode'>;

/** Streams the text of tokens appended after a fixed context (for example the prompt). */
export class IncrementalDetokenizer {
  private readonly ids: number[];
  /** Start of the decode window. */
  private prefixOffset: number;
  /** First token whose text was not emitted yet. */
  private readOffset: number;
  /** Characters (Unicode code points) emitted so far by {@link push} and {@link flush}. */
  private emitted = 0;

  /**
   * @param decoder the model's tokenizer
   * @param context token ids already present before the streamed ones (their text is not
   *   emitted; it only conditions spacing). Empty for a stream that starts at the beginning.
   */
  constructor(
    private readonly decoder: Decoder,
    context: readonly number[] = [],
  ) {
    this.ids = [...context];
    this.readOffset = this.ids.length;
    this.prefixOffset = Math.max(0, this.ids.length - WINDOW);
  }

  /**
   * Characters emitted so far, counted in Unicode code points (the text offset of the next
   * emitted text, as OpenAI's and vLLM's `text_offset`: Python string indices; an emoji is one,
   * not two UTF-16 units).
   */
  get emittedChars(): number {
    return this.emitted;
  }

  /**
   * Appends `tokenId` and returns the text that became final: '' while the last character is
   * incomplete, then the whole character (and any text held with it).
   */
  push(tokenId: number): string {
    this.ids.push(tokenId);
    const prefixText = this.decodeRange(this.prefixOffset, this.readOffset);
    const fullText = this.decodeRange(this.prefixOffset, this.ids.length);
    if (fullText.length <= prefixText.length || fullText.endsWith(REPLACEMENT)) return '';
    const delta = fullText.slice(commonPrefixLength(prefixText, fullText));
    this.prefixOffset = this.readOffset;
    this.readOffset = this.ids.length;
    this.emitted += codePointLength(delta);
    return delta;
  }

  /** Releases held-back text at the end of the sequence (an incomplete character becomes U+FFFD). */
  flush(): string {
    if (this.readOffset === this.ids.length) return '';
    const prefixText = this.decodeRange(this.prefixOffset, this.readOffset);
    const fullText = this.decodeRange(this.prefixOffset, this.ids.length);
    const delta = fullText.slice(commonPrefixLength(prefixText, fullText));
    this.prefixOffset = this.readOffset;
    this.readOffset = this.ids.length;
    this.emitted += codePointLength(delta);
    return delta;
  }

  /**
   * The text `tokenId` would add after the tokens pushed so far, without appending it (used
   * for the token strings of logprobs). A lone byte of a multi-byte character gives U+FFFD.
   */
  peek(tokenId: number): string {
    const before = this.decodeRange(this.prefixOffset, this.ids.length);
    const after = this.decoder.decode([...this.ids.slice(this.prefixOffset), tokenId]);
    return after.slice(commonPrefixLength(before, after));
  }

  private decodeRange(start: number, end: number): string {
    return end > start ? this.decoder.decode(this.ids.slice(start, end)) : '';
  }
}

/** Length of the longest common prefix of two strings (in UTF-16 code units). */
function commonPrefixLength(a: string, b: string): number {
  if (b.startsWith(a)) return a.length;
  let i = 0;
  while (i < a.length && i < b.length && a.charCodeAt(i) === b.charCodeAt(i)) i++;
  return i;
}

/** Unicode code points in `s` (a surrogate pair counts once). */
export function codePointLength(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0xdc00 || c > 0xdfff) n++;
  }
  return n;
}
