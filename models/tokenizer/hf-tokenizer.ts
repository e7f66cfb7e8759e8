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
import type { SpecialTokenTemplate } from './post-processor.js';
import { applyTransformersRules } from './transformers-rules.js';

/** Options of {@link HfTokenizer}. */
export interface HfTokenizerOptions {
  /**
   * config.json `bos_token_id`. Used only when tokenizer_config.json has no `bos_token` key
   * (e.g. there is no tokenizer_config.json); null or absent: no such fallback.
   */
  bosTokenId?: number | null;
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

/**
 * Text <-> ids through a Hugging Face `tokenizer.json`, with the special-token rules of the
 * transformers tokenizer class named in `tokenizer_config.json` (see transformers-rules.ts):
 * `encode(text)` gives what transformers' `tokenizer(text)["input_ids"]` gives.
 */
export class HfTokenizer implements TextTokenizer {
  readonly vocabSize: number;
  /**
   * The tokenizer's BOS token id, as transformers' `tokenizer.bos_token_id`: tokenizer_config.json's
   * `bos_token` looked up in the tokenizer; config.json's `bos_token_id` when tokenizer_config.json
   * has no `bos_token` key; null when `bos_token` is null (Qwen2/Qwen3), names no token of
   * the tokenizer, or neither file gives one.
   * Whether `encode` prepends it is a separate fact: see {@link specialTokens}.
   */
  readonly bosTokenId: number | null;
  /** The BOS token's string (e.g. `<s>`, `<|begin_of_text|>`), null when there is none. */
  readonly bosToken: string | null;
  readonly eosTokenId: number;
  /** The tokenizer's EOS token string (tokenizer_config.json `eos_token`, else the string of eosTokenId). */
  readonly eosToken: string | null;
  readonly eosTokenIds: readonly number[];
  /** What `encode(text)` puts around the text's ids (`addSpecialTokens` true). */
  readonly specialTokens: SpecialTokenTemplate;
  /** `tokenizer_class` of tokenizer_config.json without `Fast` (see baseTokenizerClass; null: none given). */
  readonly tokenizerClass: string | null;
  /** Contents of `tokenizer_config.json` ({} when there was none). */
  readonly tokenizerConfig: Record<string, unknown>;
  private readonly tokenizer: Tokenizer;
  /** The tokenizer.json as loaded (what {@link toJSON} gives back). */
  private readonly json: Record<string, unknown>;
  /** The tokenizer.json as run (the class rules applied). */
  private readonly runJson: Record<string, unknown>;
  private readonly specialIds: Set<number>;
  /** Added-token strings that the library splits the input on before the model sees it. */
  private readonly addedContents: string[];
  /** Junction bigrams of all merges (null: segmenting is not applicable). */
  private readonly junctions: Set<string> | null;

  /**
   * @param json a parsed `tokenizer.json` (not modified; kept for {@link toJSON}).
   * @throws Error if the library rejects the JSON; if BOS/EOS ids are outside the vocabulary;
   *   if tokenizer_config.json's special tokens or flags are malformed or name tokens the
   *   tokenizer lacks; or if the post-processor is not supported (message names `source`).
   */
  constructor(json: Record<string, unknown>, options: HfTokenizerOptions) {
    this.json = json;
    this.tokenizerConfig = options.tokenizerConfig ?? {};
    const source = options.source ?? 'tokenizer';
    // The library needs the added tokens declared; the post-processor is applied here (encode),
    // so the library gets none.
    const libraryJson = (j: Record<string, unknown>) => ({ added_tokens: [], ...j, post_processor: null });
    const probe = new Tokenizer(libraryJson(json), { ...this.tokenizerConfig, clean_up_tokenization_spaces: false });
    let rules;
    try {
      rules = applyTransformersRules(json, this.tokenizerConfig, (t) => probe.token_to_id(t));
    } catch (err) {
      throw new Error(`${source}: ${(err as Error).message}`);
    }
    this.runJson = rules.json;
    this.tokenizer = rules.json === json ? probe
      : new Tokenizer(libraryJson(rules.json), { ...this.tokenizerConfig, clean_up_tokenization_spaces: false });
    const model = this.tokenizer.model!;
    this.vocabSize = model.vocab.length;
    const added = [...this.tokenizer.get_added_tokens_decoder().values()];
    this.specialIds = new Set(added.filter((t) => t.special).map((t) => t.id));
    this.addedContents = added.map((t) => t.content).filter((c) => c.length > 0);
    const eosIds = [options.eosTokenId, ...(options.eosTokenIds ?? []).filter((id) => id !== options.eosTokenId)];
    const configBos = options.bosTokenId ?? null;
    const checked: [string, number][] = [...eosIds.map((id) => ['eos_token_id', id] as [string, number]),
      ...rules.template.prefix.map((id) => ['post_processor id', id] as [string, number]),
      ...rules.template.suffix.map((id) => ['post_processor id', id] as [string, number])];
    const hasBosKey = Object.prototype.hasOwnProperty.call(this.tokenizerConfig, 'bos_token');
    if (!hasBosKey && configBos !== null) checked.push(['bos_token_id', configBos]);
    for (const [what, id] of checked) {
      if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
        throw new Error(`${source}: ${what} ${id} is outside the tokenizer's vocabulary (0..${this.vocabSize - 1})`);
      }
    }
    if (hasBosKey) {
      this.bosToken = rules.bosToken;
      this.bosTokenId = rules.bosToken === null ? null : this.tokenizer.token_to_id(rules.bosToken) ?? null;
    } else {
      this.bosTokenId = configBos;
      this.bosToken = configBos === null ? null : this.tokenizer.id_to_token(configBos) ?? null;
    }
    this.eosToken = Object.prototype.hasOwnProperty.call(this.tokenizerConfig, 'eos_token')
      ? rules.eosToken
      : this.tokenizer.id_to_token(options.eosTokenId) ?? null;
    this.eosTokenId = options.eosTokenId;
    this.eosTokenIds = eosIds;
    this.specialTokens = rules.template;
    this.tokenizerClass = rules.tokenizerClass;
    this.junctions = this.segmentable() ? mergeJunctions(this.runJson.model as BpeModelJson) : null;
  }

  /** Whether the text may be cut at merge-free boundaries (see the module comment). */
  private segmentable(): boolean {
    const model = this.runJson.model as BpeModelJson;
    const config = this.tokenizerConfig;
    return model.type === 'BPE' && (this.runJson.pre_tokenizer ?? null) === null &&
      (model.dropout ?? null) === null && !model.end_of_word_suffix && !model.continuing_subword_suffix &&
      !model.ignore_merges && config.remove_space !== true && config.do_lowercase_and_remove_accent !== true;
  }

  /**
   * Token ids of `text`, as transformers' `tokenizer(text)["input_ids"]`: the tokenizer's
   * normalizer, pre-tokenizer and model, then (unless `addSpecialTokens` is false, which is
   * transformers' `add_special_tokens=False`) the special tokens of {@link specialTokens}
   * around them: BOS for Llama-2/3, Mistral and llama2.c, `</s>` for OPT, nothing for Qwen,
   * GPT-2 and Phi-2. Empty text gives just those special tokens. Added tokens written
   * literally in `text` (e.g. `</s>`, `<|im_start|>`) are encoded as those tokens, as Hugging
   * Face tokenizers do.
   */
  encode(text: string, options: EncodeOptions = {}): number[] {
    const ids = this.encodeBody(text);
    if (options.addSpecialTokens === false) return ids;
    const { prefix, suffix } = this.specialTokens;
    return prefix.length === 0 && suffix.length === 0 ? ids : [...prefix, ...ids, ...suffix];
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
   * Ids at or above vocabSize decode to nothing, as in `tokenizers` (and so transformers and
   * vLLM): models pad their embedding beyond the tokenizer (Qwen2.5: 151936 rows for 151665
   * tokens), and a model may generate such an id.
   * @throws RangeError for an id that is not a non-negative integer.
   */
  decode(ids: readonly number[], options: { skipSpecialTokens?: boolean } = {}): string {
    const skip = options.skipSpecialTokens !== false;
    const kept: number[] = [];
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0) throw new RangeError(`token id ${id} is not a non-negative integer`);
      if (id < this.vocabSize && (!skip || !this.specialIds.has(id))) kept.push(id);
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
