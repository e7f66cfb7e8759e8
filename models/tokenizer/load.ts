/**
 * Loading tokenizers from files: llama2.c `tok*.bin` (converted to a Hugging Face
 * `tokenizer.json` on the fly) and Hugging Face `tokenizer.json` (+ `tokenizer_config.json`).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ModelLoadError, type TextTokenizer } from '../types.js';
import { gpt2TokenizerJson } from './gpt2-files.js';
import { HfTokenizer } from './hf-tokenizer.js';
import { baseTokenizerClass } from './transformers-rules.js';
import {
  LLAMA2C_BOS_ID, LLAMA2C_EOS_ID, SPECIAL_TOKENS, llama2cVocabToTokenizerJson, readLlama2cVocab,
} from './llama2c-vocab.js';

export const TOKENIZER_FILE = 'tokenizer.json';
export const TOKENIZER_CONFIG_FILE = 'tokenizer_config.json';
/** A chat template saved beside the tokenizer (transformers >= 4.43 writes it there). */
export const CHAT_TEMPLATE_FILE = 'chat_template.jinja';

/**
 * The tokenizer config with `<dir>/chat_template.jinja`, when there is one, as its
 * `chat_template` (the file wins over the config's own entry, as transformers loads it).
 */
function withChatTemplateFile(dir: string, config: Record<string, unknown> | undefined): Record<string, unknown> | undefined {
  const file = path.join(dir, CHAT_TEMPLATE_FILE);
  if (!fs.existsSync(file)) return config;
  return { ...(config ?? {}), chat_template: fs.readFileSync(file, 'utf8') };
}

/**
 * Loads a llama2.c tokenizer file as an {@link HfTokenizer} (BOS 1, EOS 2); see
 * {@link llama2cVocabToTokenizerJson} for the conversion. A `chat_template.jinja` next to the
 * file becomes the config's `chat_template`.
 * @param vocabSize the checkpoint's vocab_size, to check the file against.
 * @throws ModelLoadError naming `file` (missing, truncated, size mismatch, invalid pieces).
 */
export function loadLlama2cTokenizer(file: string, vocabSize?: number): HfTokenizer {
  const vocab = readLlama2cVocab(file, vocabSize);
  const json = llama2cVocabToTokenizerJson(vocab, file);
  return new HfTokenizer(json, {
    bosTokenId: LLAMA2C_BOS_ID,
    eosTokenId: LLAMA2C_EOS_ID,
    eosTokenIds: [LLAMA2C_EOS_ID, LLAMA2C_BOS_ID],
    tokenizerConfig: withChatTemplateFile(path.dirname(file), llamaTokenizerConfig()),
    source: file,
  });
}

/**
 * A `tokenizer_config.json` for a Llama-style tokenizer whose `tokenizer.json` is complete:
 * `PreTrainedTokenizerFast` reads everything from `tokenizer.json`, and BOS is added by its
 * post-processor.
 */
export function llamaTokenizerConfig(modelMaxLength?: number): Record<string, unknown> {
  return {
    tokenizer_class: 'PreTrainedTokenizerFast',
    bos_token: SPECIAL_TOKENS[LLAMA2C_BOS_ID],
    eos_token: SPECIAL_TOKENS[LLAMA2C_EOS_ID],
    unk_token: SPECIAL_TOKENS[0],
    add_bos_token: true,
    add_eos_token: false,
    clean_up_tokenization_spaces: false,
    ...(modelMaxLength === undefined ? {} : { model_max_length: modelMaxLength }),
  };
}

/**
 * The `tokenizer_config.json` written for a tokenizer that came without one: the generic
 * `PreTrainedTokenizerFast` class (so the special tokens that `tokenizer(text)` adds are those of
 * tokenizer.json's post-processor, as they were) and the tokenizer's BOS/EOS strings.
 */
export function genericTokenizerConfig(tokenizer: Pick<TextTokenizer, 'bosToken' | 'eosToken'>): Record<string, unknown> {
  return {
    tokenizer_class: 'PreTrainedTokenizerFast',
    bos_token: tokenizer.bosToken,
    eos_token: tokenizer.eosToken,
    clean_up_tokenization_spaces: false,
  };
}

/**
 * Reads a JSON object from `file`.
 * @param what how to call the file when it is missing (e.g. 'config file').
 * @throws ModelLoadError naming `file`: missing, unreadable, not JSON, or not an object.
 */
export function readJsonFile(file: string, what: string): Record<string, unknown> {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ModelLoadError(file, code === 'ENOENT' ? `${what} not found` : `cannot read: ${(err as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new ModelLoadError(file, `not valid JSON (${(err as Error).message})`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new ModelLoadError(file, 'not a JSON object');
  return json as Record<string, unknown>;
}

/** The slow-tokenizer files of a GPT-2-style directory without tokenizer.json. */
export const VOCAB_FILE = 'vocab.json';
export const MERGES_FILE = 'merges.txt';

/** tokenizer_class values whose vocab.json + merges.txt transformers converts with GPT2Converter. */
const GPT2_CONVERTER_CLASSES = new Set(['GPT2Tokenizer', 'CodeGenTokenizer']);

/**
 * Loads `<dir>/tokenizer.json` and, if present, `<dir>/tokenizer_config.json` and
 * `<dir>/chat_template.jinja` (read into the config's `chat_template`). A directory
 * without tokenizer.json but with `vocab.json` + `merges.txt` (OPT's) gets the tokenizer.json
 * that transformers converts them to (see gpt2-files.ts), for a GPT-2-style tokenizer_config.json
 * (`tokenizer_class` GPT2Tokenizer, CodeGenTokenizer, or none as in OPT's).
 * @param ids config.json's BOS/EOS ids (see {@link HfTokenizerOptions}).
 * @throws ModelLoadError naming the file when tokenizer.json is missing (and no convertible
 *   vocab.json + merges.txt), not JSON, has no `model`, or is rejected (by `@huggingface/tokenizers`
 *   or by the special-token rules); or when tokenizer_config.json is not JSON.
 */
export function loadHfTokenizer(dir: string, ids: { bosTokenId?: number | null; eosTokenId: number; eosTokenIds?: readonly number[] }): HfTokenizer {
  const file = path.join(dir, TOKENIZER_FILE);
  const configFile = path.join(dir, TOKENIZER_CONFIG_FILE);
  const tokenizerConfig = withChatTemplateFile(dir, fs.existsSync(configFile) ? readJsonFile(configFile, 'tokenizer config') : undefined);
  let json: Record<string, unknown>;
  let source = file;
  if (!fs.existsSync(file) && fs.existsSync(path.join(dir, VOCAB_FILE)) && fs.existsSync(path.join(dir, MERGES_FILE))) {
    json = convertGpt2Files(dir, tokenizerConfig ?? {});
    source = path.join(dir, VOCAB_FILE);
  } else {
    json = readJsonFile(file, 'tokenizer file');
    if (typeof json.model !== 'object' || json.model === null) throw new ModelLoadError(file, 'no "model" object: not a tokenizer.json');
  }
  try {
    return new HfTokenizer(json, { ...ids, tokenizerConfig, source });
  } catch (err) {
    if (err instanceof ModelLoadError) throw err;
    const message = (err as Error).message;
    const problem = message.startsWith(`${source}: `) ? message.slice(source.length + 2) : message;
    throw new ModelLoadError(source, `cannot build the tokenizer: ${problem}`);
  }
}

function convertGpt2Files(dir: string, tokenizerConfig: Record<string, unknown>): Record<string, unknown> {
  const vocabFile = path.join(dir, VOCAB_FILE);
  const cls = baseTokenizerClass(tokenizerConfig);
  if (cls !== null && !GPT2_CONVERTER_CLASSES.has(cls)) {
    throw new ModelLoadError(path.join(dir, TOKENIZER_FILE),
      `tokenizer file not found (${VOCAB_FILE} + ${MERGES_FILE} are converted only for GPT2Tokenizer/CodeGenTokenizer, not ${cls}: save the tokenizer with transformers' save_pretrained to get a tokenizer.json)`);
  }
  const vocab = readJsonFile(vocabFile, 'vocab file');
  let merges: string;
  try {
    merges = fs.readFileSync(path.join(dir, MERGES_FILE), 'utf8');
  } catch (err) {
    throw new ModelLoadError(path.join(dir, MERGES_FILE), `cannot read: ${(err as Error).message}`);
  }
  try {
    return gpt2TokenizerJson(vocab, merges, tokenizerConfig);
  } catch (err) {
    throw new ModelLoadError(vocabFile, `cannot convert ${VOCAB_FILE} + ${MERGES_FILE}: ${(err as Error).message}`);
  }
}
