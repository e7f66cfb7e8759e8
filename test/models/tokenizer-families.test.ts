/**
 * Each family's real tokenizer files (test/helpers/real-tokenizers.ts) through HfTokenizer,
 * against ids written down from the tokenizers' semantics and checked with Hugging Face
 * `tokenizers` (Rust) under transformers 4.x's class rules: `encode(text)` must equal
 * transformers' `tokenizer(text)["input_ids"]` (add_special_tokens=True), `encode(text,
 * { addSpecialTokens: false })` its add_special_tokens=False, and `decode` its
 * `decode(ids, skip_special_tokens=True)` without clean-up.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import {
  HfTokenizer, buildTokenStream, genericTokenizerConfig, loadHfTokenizer, postProcessorTemplate,
} from '../../models/tokenizer/index.js';
import {
  llama2Tokenizer, lenmlTokenizer, mistralTokenizer, optStyleTokenizer, type TokenizerFiles,
} from '../helpers/real-tokenizers.js';
import { assertLoadError, tempDir } from './helpers.js';

/** An HfTokenizer over `files`, with tokenizer_config.json fields replaced by `configPatch` (undefined deletes). */
function build(files: TokenizerFiles, eosTokenId: number, configPatch: Record<string, unknown> = {}, bosTokenId?: number): HfTokenizer {
  const config = { ...files.config, ...configPatch };
  for (const [k, v] of Object.entries(configPatch)) if (v === undefined) delete config[k];
  return new HfTokenizer(files.json, { bosTokenId, eosTokenId, tokenizerConfig: config, source: 'test tokenizer.json' });
}

/** Texts without special tokens, which every family must give back from decode(encode(x)). */
const ROUND_TRIP_TEXTS = [
  'Hello world', ' Hello', '  two  spaces ', 'Once upon a time, there was a little girl named Lily.',
  'naïve café 😀 日本語', 'line one\nline two\n\n\tindented', "I'm can't we'll", '3.14159 + 2**10',
];

function assertRoundTrips(tok: HfTokenizer, family: string): void {
  for (const text of ROUND_TRIP_TEXTS) {
    assert.equal(tok.decode(tok.encode(text)), text, `${family}: decode(encode(${JSON.stringify(text)}))`);
  }
  assert.equal(tok.decode(tok.encode('')), '', `${family}: empty text`);
}

const qwen25 = build(lenmlTokenizer('qwen2_5'), 151643, {}, 151643);

test('Qwen2.5: no BOS (bos_token null although config.json has bos_token_id), "Hello world" is [9707, 1879]', () => {
  const tok = qwen25;
  assert.equal(tok.tokenizerClass, 'Qwen2Tokenizer');
  assert.equal(tok.bosTokenId, null);
  assert.equal(tok.bosToken, null);
  assert.equal(tok.eosToken, '<|im_end|>');
  assert.deepEqual(tok.specialTokens, { prefix: [], suffix: [] });
  assert.deepEqual(tok.encode('Hello world'), [9707, 1879]);
  assert.deepEqual(tok.encode('Hello world', { addSpecialTokens: false }), [9707, 1879]);
  assert.deepEqual(tok.encode(' Hello'), [21927]); // "ĠHello": the space belongs to the word
  assert.deepEqual(tok.encode('  two  spaces '), [220, 1378, 220, 12621, 220]);
  assert.deepEqual(tok.encode('Once upon a time'), [12522, 5193, 264, 882]);
  assert.deepEqual(tok.encode(''), []);
  // Added tokens written literally are those tokens; unknown "special-looking" text is text.
  assert.deepEqual(tok.encode('<|im_start|>user'), [151644, 872]);
  assert.deepEqual(tok.encode('Hello</s>world'), [9707, 522, 82, 29, 14615]);
  assert.equal(tok.decode([151644, 872]), 'user');
  // The model's embedding has 151936 rows for 151665 tokens: padded ids decode to nothing, as in tokenizers.
  assert.equal(tok.vocabSize, 151665);
  assert.equal(tok.decode([9707, 151700, 151935, 1879]), 'Hello world');
  assert.throws(() => tok.decode([-1]), /not a non-negative integer/);
  assertRoundTrips(tok, 'Qwen2.5');
});

test('Qwen3: the same byte-level BPE and no BOS; add_bos_token is not honoured by Qwen2Tokenizer', () => {
  const files = lenmlTokenizer('qwen3');
  const tok = build(files, 151645, {}, 151643);
  assert.equal(tok.bosTokenId, null);
  assert.deepEqual(tok.encode('Hello world'), [9707, 1879]);
  assert.deepEqual(tok.encode('<|im_start|>user'), [151644, 872]);
  assert.deepEqual(tok.encode('日本語 😀'), [101059, 102819, 90316]);
  assertRoundTrips(tok, 'Qwen3');
  // Qwen2TokenizerFast takes the post-processor from tokenizer.json: flags change nothing.
  assert.deepEqual(build(files, 151645, { add_bos_token: true, bos_token: '<|endoftext|>' }).encode('Hello world'), [9707, 1879]);
});

test('Llama-3.2: <|begin_of_text|> 128000 first, from the tokenizer.json Sequence(ByteLevel, TemplateProcessing)', () => {
  const files = lenmlTokenizer('llama3_2');
  const tok = build(files, 128009, {}, 128000);
  assert.equal(tok.tokenizerClass, 'PreTrainedTokenizerFast');
  assert.equal(tok.bosTokenId, 128000);
  assert.equal(tok.bosToken, '<|begin_of_text|>');
  assert.equal(tok.eosToken, '<|eot_id|>');
  assert.deepEqual(tok.specialTokens, { prefix: [128000], suffix: [] });
  assert.deepEqual(tok.encode('Hello world'), [128000, 9906, 1917]);
  assert.deepEqual(tok.encode('Hello world', { addSpecialTokens: false }), [9906, 1917]);
  assert.deepEqual(tok.encode(' Hello'), [128000, 22691]);
  assert.deepEqual(tok.encode(''), [128000]);
  assert.deepEqual(tok.encode('Once upon a time'), [128000, 12805, 5304, 264, 892]);
  // A literal BOS in the text is a second BOS, as transformers gives.
  assert.deepEqual(tok.encode('<|begin_of_text|>Hi'), [128000, 128000, 13347]);
  assert.equal(tok.decode([128000, 128000, 13347]), 'Hi');
  assertRoundTrips(tok, 'Llama-3.2');
  // PreTrainedTokenizerFast ignores add_bos_token (transformers 4.x): the template decides.
  assert.deepEqual(build(files, 128009, { add_bos_token: false }).encode('Hi'), [128000, 13347]);
});

const llama2 = build(llama2Tokenizer(), 2, {}, 1);

test('token streams (PROTOCOL.md section 3) encode each story as tokenizer(story): no BOS for Qwen, BOS for Llama-2', () => {
  const file = new TextEncoder().encode('Hello world<|endoftext|>\n Once upon a time \n<|endoftext|>');
  assert.deepEqual(Array.from(buildTokenStream(file, qwen25).tokens), [9707, 1879, 12522, 5193, 264, 882]);
  assert.deepEqual(Array.from(buildTokenStream(file, llama2).tokens), [1, 15043, 3186, 1, 9038, 2501, 263, 931]);
});

test('Llama-2 (Meta vocabulary): BOS 1 first, "Hello world" is [1, 15043, 3186], "▁Hello" is 15043', () => {
  const tok = llama2;
  assert.equal(tok.tokenizerClass, 'LlamaTokenizer');
  assert.equal(tok.bosTokenId, 1);
  assert.equal(tok.bosToken, '<s>'); // from an AddedToken object {"content": "<s>", ...}
  assert.equal(tok.eosToken, '</s>');
  assert.deepEqual(tok.encode('Hello world'), [1, 15043, 3186]);
  assert.deepEqual(tok.encode('Hello world', { addSpecialTokens: false }), [15043, 3186]);
  assert.deepEqual(tok.encode('Once upon a time'), [1, 9038, 2501, 263, 931]);
  assert.deepEqual(tok.encode(''), [1]); // no dummy prefix on empty text
  assertRoundTrips(tok, 'Llama-2');
});

test('Llama-2: a leading space and the first word follow tokenizer.json (dummy prefix "▁" + the space), whatever legacy says', () => {
  // tokenizer.json's normalizer prepends "▁" and turns every space into "▁": " Hello" is "▁▁Hello"
  // = "▁" (29871) + "▁Hello" (15043), as SentencePiece and LlamaTokenizerFast give.
  assert.deepEqual(llama2.encode(' Hello'), [1, 29871, 15043]);
  assert.deepEqual(llama2.encode('  two  spaces '), [1, 259, 1023, 29871, 8162, 29871]);
  // Text after a special token gets the dummy prefix too: transformers' LlamaTokenizerFast
  // docstring example, "Hello <s>." -> [1, 15043, 29871, 1, 869] with 869 = "▁.".
  assert.deepEqual(llama2.encode('Hello <s>.'), [1, 15043, 29871, 1, 869]);
  assert.equal(llama2.decode([1, 15043, 29871, 1, 869]), 'Hello  .');
  assert.deepEqual(llama2.encode('Hello</s>world'), [1, 15043, 2, 3186]);
  // The real config says legacy: false; without add_prefix_space that does not reach a fast
  // tokenizer loaded from tokenizer.json, and legacy: true gives the same ids.
  const legacy = build(llama2Tokenizer(), 2, { legacy: true });
  for (const text of [' Hello', 'Hello <s>.', '  two  spaces ']) assert.deepEqual(legacy.encode(text), llama2.encode(text), text);
});

test('Llama-2: add_prefix_space rebuilds the pipeline as LlamaConverter (from_slow) does, for legacy true and false', () => {
  const texts = ['Hello world', ' Hello', '', 'Hello <s>.', '  two  spaces '];
  const cases: [boolean, boolean, number[][], string[]][] = [
    [true, true, [[1, 15043, 3186], [1, 29871, 15043], [1], [1, 15043, 29871, 1, 869], [1, 259, 1023, 29871, 8162, 29871]],
      ['Hello world', ' Hello', '', 'Hello  .', '  two  spaces ']],
    [true, false, [[1, 10994, 3186], [1, 15043], [1], [1, 10994, 29871, 1, 29889], [1, 29871, 1023, 29871, 8162, 29871]],
      ['Hello world', ' Hello', '', 'Hello .', '  two  spaces ']],
    [false, true, [[1, 15043, 3186], [1, 15043], [1], [1, 15043, 29871, 1, 29889], [1, 29871, 1023, 29871, 8162, 29871]],
      ['Hello world', 'Hello', '', 'Hello .', ' two  spaces ']],
    [false, false, [[1, 10994, 3186], [1, 15043], [1], [1, 10994, 29871, 1, 29889], [1, 29871, 1023, 29871, 8162, 29871]],
      ['Hello world', ' Hello', '', 'Hello .', '  two  spaces ']],
  ];
  for (const [legacy, addPrefixSpace, ids, decoded] of cases) {
    const tok = build(llama2Tokenizer(), 2, { legacy, add_prefix_space: addPrefixSpace });
    const what = `legacy ${legacy}, add_prefix_space ${addPrefixSpace}`;
    assert.deepEqual(texts.map((t) => tok.encode(t)), ids, what);
    assert.deepEqual(ids.map((x) => tok.decode(x)), decoded, what);
  }
  // add_prefix_space: null is "not given": tokenizer.json as it is.
  assert.deepEqual(build(llama2Tokenizer(), 2, { add_prefix_space: null }).encode(' Hello'), [1, 29871, 15043]);
});

test('Llama-2: add_bos_token / add_eos_token rebuild the template (LlamaTokenizerFast.update_post_processor)', () => {
  const files = llama2Tokenizer();
  const noBos = build(files, 2, { add_bos_token: false });
  assert.deepEqual(noBos.specialTokens, { prefix: [], suffix: [] });
  assert.deepEqual(noBos.encode('Hello world'), [15043, 3186]);
  assert.equal(noBos.bosTokenId, 1); // the token still exists; encode just does not add it
  assert.deepEqual(build(files, 2, { add_eos_token: true }).encode('Hello world'), [1, 15043, 3186, 2]);
  assert.deepEqual(build(files, 2, { add_bos_token: false, add_eos_token: true }).encode(''), [2]);
  assert.deepEqual(build(files, 2, { add_bos_token: undefined, add_eos_token: undefined }).encode('Hi'), [1, 6324]); // class defaults
  assert.deepEqual(build(files, 2, { add_eos_token: true }).encode('Hi', { addSpecialTokens: false }), [6324]);
  assert.throws(() => build(files, 2, { bos_token: null }), /add_bos_token is true but bos_token is null/);
  assert.throws(() => build(files, 2, { add_eos_token: true, eos_token: '<eos>' }), /eos_token "<eos>" is not a token of tokenizer.json/);
  assert.throws(() => build(files, 2, { add_bos_token: 'yes' }), /add_bos_token must be true, false or null/);
  assert.throws(() => build(files, 2, { bos_token: 7 }), /bos_token must be a string, an AddedToken object/);
  // CodeLlama / Gemma / Cohere classes rebuild too; GPTNeoX with add_bos_token false by default.
  assert.deepEqual(build(files, 2, { tokenizer_class: 'CodeLlamaTokenizerFast', add_bos_token: undefined }).encode('Hi'), [1, 6324]);
  assert.deepEqual(build(files, 2, { tokenizer_class: 'GPTNeoXTokenizer', add_bos_token: undefined }).encode('Hi'), [6324]);
  // PreTrainedTokenizerFast keeps the tokenizer.json template and ignores the flags.
  assert.deepEqual(build(files, 2, { tokenizer_class: 'PreTrainedTokenizerFast', add_bos_token: false }).encode('Hi'), [1, 6324]);
});

test('Mistral-7B: BOS 1 first, "Hello world" is [1, 22557, 1526], legacy dummy prefix', () => {
  const tok = build(mistralTokenizer(), 2, {}, 1);
  assert.equal(tok.tokenizerClass, 'LlamaTokenizer');
  assert.deepEqual(tok.encode('Hello world'), [1, 22557, 1526]);
  assert.deepEqual(tok.encode(' Hello'), [1, 28705, 22557]);
  assert.deepEqual(tok.encode('Hello <s>.'), [1, 22557, 28705, 1, 842]);
  assert.deepEqual(tok.encode('Once upon a time'), [1, 5713, 3714, 264, 727]);
  assert.deepEqual(tok.encode(''), [1]);
  assertRoundTrips(tok, 'Mistral');
});

test('GPT-2 and Phi-2 (CodeGenTokenizer): no special tokens added, although bos_token exists', () => {
  const files = lenmlTokenizer('gpt2');
  const tok = build(files, 50256, {}, 50256);
  assert.equal(tok.bosTokenId, 50256);
  assert.equal(tok.bosToken, '<|endoftext|>');
  assert.deepEqual(tok.specialTokens, { prefix: [], suffix: [] });
  assert.deepEqual(tok.encode('Hello world'), [15496, 995]);
  assert.deepEqual(tok.encode(' Hello'), [18435]);
  assert.deepEqual(tok.encode(''), []);
  assert.deepEqual(tok.encode('<|endoftext|>x'), [50256, 87]);
  assertRoundTrips(tok, 'GPT-2');
  const phi2 = build(files, 50256, { tokenizer_class: 'CodeGenTokenizer', add_prefix_space: false }, 50256);
  assert.deepEqual(phi2.encode('Hello world'), [15496, 995]);
  // CodeGenTokenizerFast / GPT2TokenizerFast force the ByteLevel pre-tokenizer's add_prefix_space to the config's.
  const spaced = build(files, 50256, { tokenizer_class: 'CodeGenTokenizer', add_prefix_space: true });
  assert.deepEqual(spaced.encode('Hello world'), [18435, 995]);
  assert.equal(spaced.decode([18435, 995]), ' Hello world');
});

test('OPT: </s> (id 2) prepended by the GPT2Converter template; vocab.json + merges.txt give the same tokenizer', () => {
  const opt = optStyleTokenizer();
  const expected: [string, number[]][] = [
    ['Hello world', [2, 15496 + 4, 995 + 4]],
    [' Hello', [2, 18435 + 4]],
    ['', [2]],
    ['Hello</s>world', [2, 15500, 2, 6898]],
    ['Hello <s>.', [2, 15500, 1283, 86, 28405]], // "<s>" is not one of OPT's configured special tokens
    ['<pad>x', [2, 1, 91]],
    ['  two  spaces ', [2, 224, 738, 224, 9033, 224]],
  ];
  const fromJson = build(opt, 2, {}, 2);
  assert.equal(fromJson.tokenizerClass, null);
  assert.equal(fromJson.bosToken, '</s>');
  assert.equal(fromJson.bosTokenId, 2);
  assert.deepEqual(fromJson.specialTokens, { prefix: [2], suffix: [] });
  for (const [text, ids] of expected) assert.deepEqual(fromJson.encode(text), ids, text);
  assert.equal(fromJson.decode([2, 15500, 2, 6898]), 'Helloworld');
  assertRoundTrips(fromJson, 'OPT');

  const dir = tempDir('sliceserve-opt-tokenizer-');
  fs.writeFileSync(path.join(dir, 'vocab.json'), JSON.stringify(opt.vocabJson));
  fs.writeFileSync(path.join(dir, 'merges.txt'), opt.mergesTxt);
  fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify(opt.config));
  const fromFiles = loadHfTokenizer(dir, { bosTokenId: 2, eosTokenId: 2 });
  for (const [text, ids] of expected) assert.deepEqual(fromFiles.encode(text), ids, `vocab.json + merges.txt: ${text}`);
  assert.equal(fromFiles.decode([2, 1, 91]), 'x');
  // Without add_bos_token the converter writes a ByteLevel post-processor: nothing added.
  fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify({ ...opt.config, add_bos_token: false }));
  assert.deepEqual(loadHfTokenizer(dir, { bosTokenId: 2, eosTokenId: 2 }).encode('Hello world'), [15500, 999]);
  // Another class's vocab.json + merges.txt (Qwen2 has its own converter) is refused clearly.
  fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify({ tokenizer_class: 'Qwen2Tokenizer' }));
  assertLoadError(() => loadHfTokenizer(dir, { eosTokenId: 2 }), path.join(dir, 'tokenizer.json'), 'converted only for GPT2Tokenizer/CodeGenTokenizer, not Qwen2Tokenizer');
});

test('a saved tokenizer (tokenizer.json + tokenizer_config.json) loads back with the same special-token rules', () => {
  for (const [name, files, eos] of [['qwen', lenmlTokenizer('qwen2_5'), 151643], ['llama2', llama2Tokenizer(), 2]] as const) {
    const tok = build(files, eos, name === 'llama2' ? { add_eos_token: true } : {});
    const dir = tempDir(`sliceserve-${name}-tokenizer-`);
    fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(tok.toJSON()));
    fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify(tok.tokenizerConfig));
    const back = loadHfTokenizer(dir, { eosTokenId: eos });
    for (const text of ['Hello world', '', ' Hello']) assert.deepEqual(back.encode(text), tok.encode(text), `${name}: ${text}`);
    assert.equal(back.bosTokenId, tok.bosTokenId);
  }
});

test('a tokenizer that came without tokenizer_config.json is saved with a generic one that keeps its ids and special tokens', () => {
  for (const [name, files, bos, eos] of [['qwen', lenmlTokenizer('qwen2_5'), 151643, 151643], ['llama3', lenmlTokenizer('llama3_2'), 128000, 128001]] as const) {
    const bare = new HfTokenizer(files.json, { bosTokenId: bos, eosTokenId: eos });
    const config = genericTokenizerConfig(bare);
    assert.equal(config.tokenizer_class, 'PreTrainedTokenizerFast');
    const back = new HfTokenizer(files.json, { bosTokenId: bos, eosTokenId: eos, tokenizerConfig: config });
    for (const text of ['Hello world', '']) assert.deepEqual(back.encode(text), bare.encode(text), `${name}: ${text}`);
    assert.deepEqual([back.bosToken, back.eosToken, back.bosTokenId], [bare.bosToken, bare.eosToken, bare.bosTokenId], name);
  }
  assert.deepEqual(genericTokenizerConfig({ bosToken: null, eosToken: '<|im_end|>' }),
    { tokenizer_class: 'PreTrainedTokenizerFast', bos_token: null, eos_token: '<|im_end|>', clean_up_tokenization_spaces: false });
});

test('without tokenizer_config.json, BOS/EOS come from config.json ids and the tokenizer.json template applies', () => {
  const { json } = llama2Tokenizer();
  const tok = new HfTokenizer(json, { bosTokenId: 1, eosTokenId: 2 });
  assert.equal(tok.tokenizerClass, null);
  assert.equal(tok.bosTokenId, 1);
  assert.equal(tok.bosToken, '<s>');
  assert.equal(tok.eosToken, '</s>');
  assert.deepEqual(tok.encode('Hello world'), [1, 15043, 3186]);
  const noBos = new HfTokenizer(json, { eosTokenId: 2 });
  assert.equal(noBos.bosTokenId, null);
  assert.equal(noBos.bosToken, null);
  assert.throws(() => new HfTokenizer(json, { bosTokenId: 40000, eosTokenId: 2, source: 'x.json' }), /x.json: bos_token_id 40000 is outside/);
});

test('post-processors for one sequence: TemplateProcessing, Roberta/Bert, ByteLevel, Sequence, null; bad ones are refused', () => {
  assert.deepEqual(postProcessorTemplate(null), { prefix: [], suffix: [] });
  assert.deepEqual(postProcessorTemplate({ type: 'ByteLevel', add_prefix_space: true, trim_offsets: false }), { prefix: [], suffix: [] });
  assert.deepEqual(postProcessorTemplate({ type: 'RobertaProcessing', cls: ['<s>', 0], sep: ['</s>', 2], trim_offsets: true }), { prefix: [0], suffix: [2] });
  assert.deepEqual(postProcessorTemplate({ type: 'BertProcessing', cls: ['[CLS]', 101], sep: ['[SEP]', 102] }), { prefix: [101], suffix: [102] });
  const template = {
    type: 'TemplateProcessing',
    single: [{ SpecialToken: { id: '<bos>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: '<multi>', type_id: 0 } }],
    special_tokens: { '<bos>': { id: '<bos>', ids: [5], tokens: ['<bos>'] }, '<multi>': { id: '<multi>', ids: [7, 8], tokens: ['<m1>', '<m2>'] } },
  };
  assert.deepEqual(postProcessorTemplate(template), { prefix: [5], suffix: [7, 8] });
  // Sequence: each processor wraps what the previous one produced.
  assert.deepEqual(postProcessorTemplate({ type: 'Sequence', processors: [{ type: 'ByteLevel' }, template, { type: 'RobertaProcessing', cls: ['c', 1], sep: ['s', 2] }] }),
    { prefix: [1, 5], suffix: [7, 8, 2] });
  assert.throws(() => postProcessorTemplate({ type: 'Madeup' }), /post_processor type "Madeup" is not supported/);
  assert.throws(() => postProcessorTemplate({ ...template, single: [{ SpecialToken: { id: '<bos>', type_id: 0 } }] }), /\$A exactly once \(found 0\)/);
  assert.throws(() => postProcessorTemplate({ ...template, single: [{ Sequence: { id: 'B', type_id: 0 } }] }), /uses sequence "B"/);
  assert.throws(() => postProcessorTemplate({ ...template, special_tokens: {} }), /special token "<bos>" has no ids/);
  // An unsupported post-processor in a tokenizer.json is a load error naming the file.
  const dir = tempDir('sliceserve-bad-post-');
  const { json, config } = lenmlTokenizer('gpt2');
  fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify({ ...json, post_processor: { type: 'Madeup' } }));
  fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify(config));
  assertLoadError(() => loadHfTokenizer(dir, { eosTokenId: 50256 }), path.join(dir, 'tokenizer.json'), 'post_processor type "Madeup" is not supported');
});
