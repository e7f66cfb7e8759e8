/** Tokenizers: llama2.c vocabularies, Hugging Face tokenizer.json, token streams. */
export { HfTokenizer, type HfTokenizerOptions } from './hf-tokenizer.js';
export {
  LLAMA2C_BOS_ID, LLAMA2C_EOS_ID, LLAMA2C_UNK_ID, SPECIAL_TOKENS,
  llama2cVocabToTokenizerJson, parseLlama2cVocab, readLlama2cVocab,
  type Llama2cPiece, type Llama2cVocab,
} from './llama2c-vocab.js';
export { gpt2TokenizerJson } from './gpt2-files.js';
export { NO_SPECIAL_TOKENS, postProcessorTemplate, type SpecialTokenTemplate } from './post-processor.js';
export {
  POST_PROCESSOR_FROM_FLAGS, applyTransformersRules, baseTokenizerClass, tokenContent, type TransformersTokenizer,
} from './transformers-rules.js';
export {
  CHAT_TEMPLATE_FILE, MERGES_FILE, TOKENIZER_CONFIG_FILE, TOKENIZER_FILE, VOCAB_FILE, genericTokenizerConfig, llamaTokenizerConfig, loadHfTokenizer, loadLlama2cTokenizer,
  readJsonFile,
} from './load.js';
export { STORY_SEPARATOR, buildTokenStream, cutWindows, splitStories, type TokenStream } from './stream.js';
