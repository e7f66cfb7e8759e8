/** Tokenizers: llama2.c vocabularies, Hugging Face tokenizer.json, token streams. */
export { HfTokenizer, type HfTokenizerOptions } from './hf-tokenizer.js';
export {
  LLAMA2C_BOS_ID, LLAMA2C_EOS_ID, LLAMA2C_UNK_ID, SPECIAL_TOKENS,
  llama2cVocabToTokenizerJson, parseLlama2cVocab, readLlama2cVocab,
  type Llama2cPiece, type Llama2cVocab,
} from './llama2c-vocab.js';
export {
  CHAT_TEMPLATE_FILE, TOKENIZER_CONFIG_FILE, TOKENIZER_FILE, llamaTokenizerConfig, loadHfTokenizer, loadLlama2cTokenizer, readJsonFile,
} from './load.js';
export { STORY_SEPARATOR, buildTokenStream, cutWindows, splitStories, type TokenStream } from './stream.js';
