/**
 * GPT-2-style tokenizer directories without `tokenizer.json` (OPT's, e.g. facebook/opt-125m,
 * ship only `vocab.json` + `merges.txt` + `tokenizer_config.json`): the tokenizer.json that
 * transformers builds for them on load (`GPT2TokenizerFast` converted from the slow
 * `GPT2Tokenizer` by `convert_slow_tokenizer.GPT2Converter`):
 * - model: BPE over vocab.json and merges.txt, no dropout, no unk token, empty
 *   continuing-subword prefix and end-of-word suffix, no unk fusing;
 * - pre-tokenizer: ByteLevel with tokenizer_config.json's `add_prefix_space` (default false);
 *   decoder: ByteLevel;
 * - post-processor: `bos_token $A` when tokenizer_config.json has `add_bos_token: true` (so
 *   OPT prepends `</s>`), else ByteLevel (nothing added);
 * - added tokens: the special tokens named in tokenizer_config.json (bos/eos/unk/pad/...,
 *   `additional_special_tokens`, `added_tokens_decoder`), special, at their vocabulary ids.
 * merges.txt is read as the slow tokenizer reads it: the first line (`#version: ...`) and the
 * text after the last newline are dropped, and each line is split on whitespace.
 * Sources: transformers models/gpt2/tokenization_gpt2.py (GPT2Tokenizer.__init__),
 * convert_slow_tokenizer.py (GPT2Converter).
 */
import { tokenContent } from './transformers-rules.js';

/** tokenizer_config.json keys that name one special token each. */
const SPECIAL_TOKEN_KEYS = ['bos_token', 'eos_token', 'unk_token', 'sep_token', 'pad_token', 'cls_token', 'mask_token'] as const;

/**
 * The tokenizer.json of a vocab.json / merges.txt pair (see the module comment).
 * @param vocab parsed vocab.json (token -> id).
 * @param mergesText merges.txt as text.
 * @param config parsed tokenizer_config.json ({} when absent).
 * @throws Error for a vocab that is not a token -> integer id map, a merges line that is not two
 *   tokens, `add_bos_token: true` without `bos_token`, or a special token with a conflicting id.
 */
export function gpt2TokenizerJson(vocab: Record<string, unknown>, mergesText: string, config: Record<string, unknown>): Record<string, unknown> {
  const ids = new Map<string, number>();
  for (const [token, id] of Object.entries(vocab)) {
    if (!Number.isInteger(id) || (id as number) < 0) throw new Error(`vocab.json: token ${JSON.stringify(token)} has id ${JSON.stringify(id)}, not a non-negative integer`);
    ids.set(token, id as number);
  }
  const lines = mergesText.split('\n').slice(1, -1);
  const merges: [string, string][] = [];
  lines.forEach((line, i) => {
    const parts = line.split(/\s+/).filter((p) => p.length > 0);
    if (parts.length === 0) return;
    if (parts.length !== 2) throw new Error(`merges.txt line ${i + 2}: expected two tokens, got ${JSON.stringify(line)}`);
    merges.push([parts[0]!, parts[1]!]);
  });

  let nextId = Math.max(-1, ...ids.values()) + 1;
  const added = new Map<string, number>();
  const addSpecial = (content: string, id?: number) => {
    if (added.has(content)) return;
    const known = ids.get(content);
    if (id !== undefined && known !== undefined && known !== id) {
      throw new Error(`tokenizer_config.json: added token ${JSON.stringify(content)} has id ${id} but vocab.json gives ${known}`);
    }
    added.set(content, id ?? known ?? nextId++);
  };
  const decoder = config.added_tokens_decoder;
  if (decoder && typeof decoder === 'object') {
    for (const [id, entry] of Object.entries(decoder as Record<string, unknown>)) {
      const content = tokenContent(entry, `added_tokens_decoder.${id}`);
      if (content !== null) addSpecial(content, Number(id));
    }
  }
  for (const key of SPECIAL_TOKEN_KEYS) {
    const content = tokenContent(config[key], key);
    if (content !== null) addSpecial(content);
  }
  for (const [i, entry] of (Array.isArray(config.additional_special_tokens) ? config.additional_special_tokens : []).entries()) {
    const content = tokenContent(entry, `additional_special_tokens[${i}]`);
    if (content !== null) addSpecial(content);
  }

  let postProcessor: Record<string, unknown> = { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true };
  if (config.add_bos_token === true) {
    const bos = tokenContent(config.bos_token, 'bos_token');
    if (bos === null) throw new Error('tokenizer_config.json: add_bos_token is true but bos_token is null');
    const bosId = added.get(bos)!;
    postProcessor = {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { Sequence: { id: 'B', type_id: 1 } }],
      special_tokens: { [bos]: { id: bos, ids: [bosId], tokens: [bos] } },
    };
  }
  const addPrefixSpace = config.add_prefix_space === true;
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [...added].sort((a, b) => a[1] - b[1]).map(([content, id]) => ({
      id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true,
    })),
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: addPrefixSpace, trim_offsets: true, use_regex: true },
    post_processor: postProcessor,
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: '',
      end_of_word_suffix: '',
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab: Object.fromEntries(ids),
      merges,
    },
  };
}
