/**
 * A {@link TextTokenizer} backed by `@huggingface/tokenizers` (a pure-JS port of Hugging Face
 * `tokenizers`), built from a `tokenizer.json` object and, optionally, `tokenizer_config.json`.
 *
 * Long inputs: a BPE tokenizer without a pre-tokenizer (the SentencePiece style of Llama 1/2
 * and of llama2.c vocabularies) sees the whole normalized text as ONE word, and the library
 * then slows down noticeably (RUNTIME-NOTES: tokenizers). The encoder here therefore cuts the
 * normalized text into segments at boundaries that no merge can cross, and runs BPE on the
 * segments. This is exact: a merge `(L, R)` applied across a boundary would join the
 * character before it (the last of L) with the one after it (the first of R); if no merge has
 * that junction, no merge ever spans the boundary, so BPE on each side evolves independently
 * and gives the same tokens as BPE on the whole text.
 */
import { Tokenizer } from '@huggingface/tokenizers';
import type { EncodeOptions, TextTokenizer } from '../types.js';

/** Options of {@link HfTokenizer}. */
export interface HfTokenizerOptions {
  /** BOS id (from config.json `bos_token_id`). */
  bosTokenId: number;
  /** EOS id (from config.json `eos_token_id`). */
  eosTokenId: number;
  /** Every id that ends a sequence, `eosTokenId` first (default `[eosTokenId]`). */
  eosTokenIds?: readonly number[];
  /** Contents of `tokenizer_config.json`, if any (kept and written back on save). */
  tokenizerConfig?: Record<string, unknown>;
  /** Name of the tokenizer's source, for error messages. */
  source?: string;
}

interface BpeModelJson {
  type?: string;
  dropout?: number | null;
  end_of_word_suffix?: string | null;
  continuing_subword_suffix?: string | null;
  ignore_merges?: boolean;
  merges?: (string | [string, string])[];
}

/** Text <-> ids through a Hugging Face `tokenizer.json`. */
export class HfTokenizer implements TextTokenizer {
  readonly vocabSize: number;
  readonly bosTokenId: number;
  readonly eosTokenId: number;
  readonly eosTokenIds: readonly number[];
  /** Contents of `tokenizer_config.json` ({} when there was none). */
  readonly tokenizerConfig: Record<string, unknown>;
  private readonly tokenizer: Tokenizer;
  private readonly json: Record<string, unknown>;
  private readonly specialIds: Set<number>;
  /** Added-token strings that the library splits the input on before the model sees it. */
  private readonly addedContents: string[];
  /** Junction bigrams of all merges (null: segmenting is not applicable). */
  private readonly junctions: Set<string> | null;

  /**
   * @param json a parsed `tokenizer.json` (not modified; kept for {@link toJSON}).
   * @throws Error if the library rejects the JSON, or if BOS/EOS are outside the vocabulary.
   */
  constructor(json: Record<string, unknown>, options: HfTokenizerOptions) {
    this.json = json;
    this.tokenizerConfig = options.tokenizerConfig ?? {};
    const libraryJson = { added_tokens: [], ...json };
    this.tokenizer = new Tokenizer(libraryJson, { ...this.tokenizerConfig, clean_up_tokenization_spaces: false });
    const model = this.tokenizer.model!;
    this.vocabSize = model.vocab.length;
    const added = [...this.tokenizer.get_added_tokens_decoder().values()];
    this.specialIds = new Set(added.filter((t) => t.special).map((t) => t.id));
    this.addedContents = added.map((t) => t.content).filter((c) => c.length > 0);
    const source = options.source ?? 'tokenizer';
    const eosIds = [options.eosTokenId, ...(options.eosTokenIds ?? []).filter((id) => id !== options.eosTokenId)];
    for (const [what, id] of [['bos', options.bosTokenId], ...eosIds.map((id) => ['eos', id] as const)] as const) {
      if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
        throw new Error(`${source}: ${what}_token_id ${id} is outside the tokenizer's vocabulary (0..${this.vocabSize - 1})`);
      }
    }
    this.bosTokenId = options.bosTokenId;
    this.eosTokenId = options.eosTokenId;
    this.eosTokenIds = eosIds;
    this.junctions = this.segmentable() ? mergeJunctions(json.model as BpeModelJson) : null;
  }

  /** Whether the text may be cut at merge-free boundaries (see the module comment). */
  private segmentable(): boolean {
    const model = this.json.model as BpeModelJson;
    const config = this.tokenizerConfig;
    return model.type === 'BPE' && (this.json.pre_tokenizer ?? null) === null &&
      (model.dropout ?? null) === null && !model.end_of_word_suffix && !model.continuing_subword_suffix &&
      !model.ignore_merges && config.remove_space !== true && config.do_lowercase_and_remove_accent !== true;
  }

  /**
   * Token ids of `text`: the tokenizer's normalizer and model, with BOS prepended unless
   * `addBos` is false. No EOS is appended. Added tokens written literally in `text` (e.g.
   * `</s>`) are encoded as those tokens, as Hugging Face tokenizers do.
   */
  encode(text: string, options: EncodeOptions = {}): number[] {
    const ids = this.encodeBody(text);
    return options.addBos === false ? ids : [this.bosTokenId, ...ids];
  }

  private encodeBody(text: string): number[] {
    if (text.length === 0) return [];
    if (this.junctions === null || this.addedContents.some((c) => text.includes(c))) {
      return this.tokenizer.encode(text, { add_special_tokens: false }).ids;
    }
    const normalized = this.tokenizer.normalizer ? this.tokenizer.normalizer.normalize(text) : text;
    if (normalized.length === 0) return [];
    if (this.addedContents.some((c) => normalized.includes(c))) {
      return this.tokenizer.encode(text, { add_special_tokens: false }).ids;
    }
    const tokens = this.tokenizer.model!.encode(segmentAtSafeBoundaries(normalized, this.junctions));
    const unk = this.tokenizer.model!.unk_token_id;
    return tokens.map((t: string) => {
      const id = this.tokenizer.token_to_id(t) ?? unk;
      if (id === undefined) throw new Error(`tokenizer produced token ${JSON.stringify(t)} that has no id and there is no unk_token`);
      return id;
    });
  }

  /**
   * Text of `ids`. Special tokens (BOS, EOS, UNK and other special added tokens) are dropped
   * unless `options.skipSpecialTokens` is false; byte-fallback tokens are fused into UTF-8
   * (invalid sequences become U+FFFD); spaces are not cleaned up, so `decode(encode(text))`
   * gives `text` back. Returns '' for an empty list.
   * @throws RangeError for an id that is not an integer in [0, vocabSize).
   */
  decode(ids: readonly number[], options: { skipSpecialTokens?: boolean } = {}): string {
    const skip = options.skipSpecialTokens !== false;
    const kept: number[] = [];
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
        throw new RangeError(`token id ${id} is outside the vocabulary (0..${this.vocabSize - 1})`);
      }
      if (!skip || !this.specialIds.has(id)) kept.push(id);
    }
    if (kept.length === 0) return '';
    return this.tokenizer.decode(kept, { skip_special_tokens: false, clean_up_tokenization_spaces: false });
  }

  /** The string of token `id` as the vocabulary spells it (undefined outside the vocabulary). */
  idToToken(id: number): string | undefined {
    return this.tokenizer.id_to_token(id);
  }

  /** The id of vocabulary string `token`, if any. */
  tokenToId(token: string): number | undefined {
    return this.tokenizer.token_to_id(token);
  }

  /** The `tokenizer.json` object this tokenizer was built from. */
  toJSON(): object {
    return this.json;
  }
}

/** Keys `last code point of L` + `first code point of R` of every BPE merge `(L, R)`. */
function mergeJunctions(model: BpeModelJson): Set<string> {
  const junctions = new Set<string>();
  for (const merge of model.merges ?? []) {
    // Same parsing as the library: "a b" (legacy) or ["a", "b"].
    const [left, right] = typeof merge === 'string' ? merge.split(' ', 2) : merge;
    if (!left || !right) continue;
    const leftChars = Array.from(left);
    junctions.add(leftChars[leftChars.length - 1]! + String.fromCodePoint(right.codePointAt(0)!));
  }
  return junctions;
}

/** Cuts `text` between every two code points whose pair is not a merge junction. */
function segmentAtSafeBoundaries(text: string, junctions: ReadonlySet<string>): string[] {
  const segments: string[] = [];
  let start = 0;
  let previous = '';
  let i = 0;
  while (i < text.length) {
    const code = text.codePointAt(i)!;
    const width = code > 0xffff ? 2 : 1;
    const char = text.slice(i, i + width);
    if (i > 0 && !junctions.has(previous + char)) {
      segments.push(text.slice(start, i));
      start = i;
    }
    previous = char;
    i += width;
  }
  segments.push(text.slice(start));
  return segments;
}
