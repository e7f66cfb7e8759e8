/**
 * Loading tokenizers from files: llama2.c `tok*.bin` (converted to a Hugging Face
 * `tokenizer.json` on the fly) and Hugging Face `tokenizer.json` (+ `tokenizer_config.json`).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ModelLoadError } from '../types.js';
import { HfTokenizer } from './hf-tokenizer.js';
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

/**
 * Loads `<dir>/tokenizer.json` and, if present, `<dir>/tokenizer_config.json` and
 * `<dir>/chat_template.jinja` (read into the config's `chat_template`).
 * @param ids BOS/EOS ids (from config.json).
 * @throws ModelLoadError naming the file when tokenizer.json is missing, not JSON, has no
 *   `model`, or is rejected by `@huggingface/tokenizers`; or when tokenizer_config.json is not JSON.
 */
export function loadHfTokenizer(dir: string, ids: { bosTokenId: number; eosTokenId: number; eosTokenIds?: readonly number[] }): HfTokenizer {
  const file = path.join(dir, TOKENIZER_FILE);
  const json = readJsonFile(file, 'tokenizer file');
  if (typeof json.model !== 'object' || json.model === null) throw new ModelLoadError(file, 'no "model" object: not a tokenizer.json');
  const configFile = path.join(dir, TOKENIZER_CONFIG_FILE);
  const tokenizerConfig = withChatTemplateFile(dir, fs.existsSync(configFile) ? readJsonFile(configFile, 'tokenizer config') : undefined);
  try {
    return new HfTokenizer(json, { ...ids, tokenizerConfig, source: file });
  } catch (err) {
    if (err instanceof ModelLoadError) throw err;
    throw new ModelLoadError(file, `cannot build the tokenizer: ${(err as Error).message}`);
  }
}
