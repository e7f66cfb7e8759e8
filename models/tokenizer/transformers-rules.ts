/**
 * What transformers' fast tokenizer classes change in a `tokenizer.json` when
 * `AutoTokenizer.from_pretrained(dir)` loads it, keyed by `tokenizer_config.json`'s
 * `tokenizer_class` (a trailing `Fast` is ignored: `LlamaTokenizer` loads `LlamaTokenizerFast`).
 * The semantics are those of transformers 4.x (as of 4.40-4.57), which TGI also reproduces in
 * its router; see `rebuildsPostProcessor` for where transformers 5 differs.
 *
 * 1. Post-processor rebuilt from flags. `LlamaTokenizerFast`, `CodeLlamaTokenizerFast`,
 *    `GemmaTokenizerFast`, `CohereTokenizerFast` and `GPTNeoXTokenizerFast` call
 *    `update_post_processor()` in `__init__`: the `tokenizer.json` post-processor is replaced by
 *    `[bos_token if add_bos_token] $A [eos_token if add_eos_token]`, with the class defaults
 *    below when `tokenizer_config.json` does not set the flags. Every other class (notably
 *    `PreTrainedTokenizerFast` of Llama-3, `Qwen2TokenizerFast`, `GPT2TokenizerFast` of OPT,
 *    `CodeGenTokenizerFast` of Phi-2) takes the post-processor from `tokenizer.json` and
 *    ignores `add_bos_token` / `add_eos_token` (CodeGenTokenizerFast even refuses
 *    `add_bos_token: true`; SliceServe ignores it there as the other classes do).
 * 2. ByteLevel `add_prefix_space` (GPT2TokenizerFast, CodeGenTokenizerFast, GPTNeoXTokenizerFast):
 *    when the `tokenizer.json` pre-tokenizer is a top-level `ByteLevel` whose `add_prefix_space`
 *    differs from `tokenizer_config.json`'s (default false), the config's value wins.
 * 3. Llama `add_prefix_space` (LlamaTokenizerFast): a non-null value makes transformers rebuild
 *    the tokenizer from the SentencePiece model (`from_slow=True`) with `LlamaConverter`:
 *    legacy (default): normalizer `[Prepend("▁") if add_prefix_space] + Replace(" ", "▁")`, no
 *    pre-tokenizer; `legacy: false`: no normalizer, `Metaspace(prepend_scheme = add_prefix_space
 *    ? "first" : "never", split=false)`; decoder `Replace("▁", " "), ByteFallback, Fuse` plus
 *    `Strip(1 leading space)` when add_prefix_space. The vocabulary and merges are those of
 *    `tokenizer.json` (the same pieces as the SentencePiece model they were converted from).
 *    Without `add_prefix_space`, `legacy` has no effect on a `tokenizer.json`: its normalizer
 *    and pre-tokenizer already say how a leading space and the first word are treated.
 * Sources: transformers src/transformers/models/{llama,code_llama,gemma,cohere,gpt_neox,gpt2,
 * codegen}/tokenization_*_fast.py and convert_slow_tokenizer.py (LlamaConverter,
 * GPT2Converter); text-generation-inference router/src/main.rs `create_post_processor`.
 */
import { NO_SPECIAL_TOKENS, postProcessorTemplate, type SpecialTokenTemplate } from './post-processor.js';

/** Classes whose fast tokenizer rebuilds the post-processor, with their (add_bos_token, add_eos_token) defaults. */
export const POST_PROCESSOR_FROM_FLAGS: Readonly<Record<string, { addBos: boolean; addEos: boolean }>> = Object.freeze({
  LlamaTokenizer: { addBos: true, addEos: false },
  CodeLlamaTokenizer: { addBos: true, addEos: false },
  GemmaTokenizer: { addBos: true, addEos: false },
  CohereTokenizer: { addBos: true, addEos: false },
  GPTNeoXTokenizer: { addBos: false, addEos: false },
});

/** Classes whose fast tokenizer forces the ByteLevel pre-tokenizer's add_prefix_space to the config's. */
const BYTE_LEVEL_PREFIX_SPACE_CLASSES = new Set(['GPT2Tokenizer', 'CodeGenTokenizer', 'GPTNeoXTokenizer']);

/** A tokenizer.json as a transformers fast tokenizer runs it. */
export interface TransformersTokenizer {
  /** `tokenizer_class` without `Fast`, or null when tokenizer_config.json gives none. */
  tokenizerClass: string | null;
  /** The tokenizer.json to run: the input object itself when no rule changed it, else a changed copy. */
  json: Record<string, unknown>;
  /** What `tokenizer(text)` (add_special_tokens=True) puts around the text's ids. */
  template: SpecialTokenTemplate;
  /** tokenizer_config.json's `bos_token` / `eos_token` contents (null: absent or null). */
  bosToken: string | null;
  eosToken: string | null;
}

/**
 * The content of a special-token entry of tokenizer_config.json: a string, or an AddedToken
 * object `{"content": ..., "__type": "AddedToken", ...}`; null for null or absent.
 * @throws Error for any other shape.
 */
export function tokenContent(value: unknown, what: string): string | null {
  if (value === null || value === undefined) return null;
  if (typeof value === 'string') return value;
  if (typeof value === 'object' && !Array.isArray(value) && typeof (value as { content?: unknown }).content === 'string') {
    return (value as { content: string }).content;
  }
  throw new Error(`tokenizer_config.json ${what} must be a string, an AddedToken object with "content", or null; got ${JSON.stringify(value)}`);
}

/**
 * `tokenizer_class` without the `Fast` suffix (`LlamaTokenizerFast` -> `LlamaTokenizer`), except
 * `PreTrainedTokenizerFast`, the generic class, which is kept; null when absent.
 */
export function baseTokenizerClass(config: Record<string, unknown>): string | null {
  const c = config.tokenizer_class;
  if (typeof c !== 'string' || c.length === 0) return null;
  return c.endsWith('Fast') && c !== 'PreTrainedTokenizerFast' ? c.slice(0, -'Fast'.length) : c;
}

/**
 * Whether transformers 4.x rebuilds the post-processor of this class from add_bos_token /
 * add_eos_token. transformers 5 no longer does when a tokenizer.json is present (it drops
 * those keys and trusts the tokenizer.json post-processor); the two agree whenever the file
 * and the flags agree, as in every released checkpoint of the supported families, and differ
 * for a config whose flags were changed after its tokenizer.json was written (say
 * `add_bos_token: false` over a `<s> $A` template): there SliceServe follows 4.x, as TGI does.
 */
export function rebuildsPostProcessor(tokenizerClass: string | null): boolean {
  return tokenizerClass !== null && Object.prototype.hasOwnProperty.call(POST_PROCESSOR_FROM_FLAGS, tokenizerClass);
}

/**
 * Applies the rules of the module comment.
 * @param json a parsed tokenizer.json (not modified).
 * @param config a parsed tokenizer_config.json ({} when there is none).
 * @param tokenToId the id of a token string in the tokenizer (vocabulary or added tokens).
 * @throws Error for malformed flags or special tokens, a flag that asks for a missing special
 *   token (transformers raises `add_bos_token = True but bos_token = None`), a special token
 *   that is not in the vocabulary, or an unsupported post-processor.
 */
export function applyTransformersRules(
  json: Record<string, unknown>,
  config: Record<string, unknown>,
  tokenToId: (token: string) => number | undefined,
): TransformersTokenizer {
  const tokenizerClass = baseTokenizerClass(config);
  const bosToken = tokenContent(config.bos_token, 'bos_token');
  const eosToken = tokenContent(config.eos_token, 'eos_token');
  let out = json;

  if (tokenizerClass !== null && BYTE_LEVEL_PREFIX_SPACE_CLASSES.has(tokenizerClass)) {
    const want = flag(config, 'add_prefix_space') ?? false;
    const pre = json.pre_tokenizer as Record<string, unknown> | null | undefined;
    if (pre && pre.type === 'ByteLevel' && 'add_prefix_space' in pre && pre.add_prefix_space !== want) {
      out = { ...out, pre_tokenizer: { ...pre, add_prefix_space: want } };
    }
  }
  if (tokenizerClass === 'LlamaTokenizer') {
    const addPrefixSpace = flag(config, 'add_prefix_space');
    if (addPrefixSpace !== null) out = { ...out, ...llamaFromSlow(addPrefixSpace, flag(config, 'legacy') ?? true) };
  }

  let template: SpecialTokenTemplate;
  if (rebuildsPostProcessor(tokenizerClass)) {
    const defaults = POST_PROCESSOR_FROM_FLAGS[tokenizerClass!]!;
    const addBos = flag(config, 'add_bos_token') ?? defaults.addBos;
    const addEos = flag(config, 'add_eos_token') ?? defaults.addEos;
    const idOf = (token: string | null, what: 'bos' | 'eos'): number[] => {
      if (token === null) throw new Error(`tokenizer_config.json: add_${what}_token is true but ${what}_token is null`);
      const id = tokenToId(token);
      if (id === undefined) throw new Error(`tokenizer_config.json: ${what}_token ${JSON.stringify(token)} is not a token of tokenizer.json`);
      return [id];
    };
    template = { prefix: addBos ? idOf(bosToken, 'bos') : [], suffix: addEos ? idOf(eosToken, 'eos') : [] };
  } else {
    template = postProcessorTemplate(json.post_processor);
  }
  if (template.prefix.length === 0 && template.suffix.length === 0) template = NO_SPECIAL_TOKENS;
  return { tokenizerClass, json: out, template, bosToken, eosToken };
}

/** A boolean flag of tokenizer_config.json (null when absent or null). @throws Error for a non-boolean. */
function flag(config: Record<string, unknown>, key: string): boolean | null {
  const v = config[key];
  if (v === undefined || v === null) return null;
  if (typeof v !== 'boolean') throw new Error(`tokenizer_config.json ${key} must be true, false or null; got ${JSON.stringify(v)}`);
  return v;
}

/** normalizer, pre_tokenizer and decoder of transformers' LlamaConverter (rule 3 of the module comment). */
function llamaFromSlow(addPrefixSpace: boolean, legacy: boolean): Record<string, unknown> {
  const normalizer = legacy
    ? {
      type: 'Sequence',
      normalizers: [
        ...(addPrefixSpace ? [{ type: 'Prepend', prepend: '▁' }] : []),
        { type: 'Replace', pattern: { String: ' ' }, content: '▁' },
      ],
    }
    : null;
  const preTokenizer = legacy
    ? null
    : { type: 'Metaspace', replacement: '▁', prepend_scheme: addPrefixSpace ? 'first' : 'never', split: false };
  const decoder = {
    type: 'Sequence',
    decoders: [
      { type: 'Replace', pattern: { String: '▁' }, content: ' ' },
      { type: 'ByteFallback' },
      { type: 'Fuse' },
      ...(addPrefixSpace ? [{ type: 'Strip', content: ' ', start: 1, stop: 0 }] : []),
    ],
  };
  return { normalizer, pre_tokenizer: preTokenizer, decoder };
}
