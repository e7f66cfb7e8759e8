import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { Tokenizer } from '@huggingface/tokenizers';
import {
  HfTokenizer, buildTokenStream, loadHfTokenizer, loadLlama2cTokenizer, parseLlama2cVocab, readLlama2cVocab, splitStories,
} from '../../models/tokenizer/index.js';
import { Llama2cReferenceEncoder } from './llama2c-encode.js';
import { TOK512, TRAIN_FILE, VALID_FILE, WIKITEXT_FILE, assertLoadError, tempDir } from './helpers.js';

const tokenizer = loadLlama2cTokenizer(TOK512, 512);
const reference = new Llama2cReferenceEncoder(readLlama2cVocab(TOK512, 512));
const validStories = splitStories(fs.readFileSync(VALID_FILE));
let referenceIds: number[][] | null = null;
/** llama2.c ids of every validation story (computed once). */
function validReferenceIds(): number[][] {
  referenceIds ??= validStories.map((s) => reference.encode(s));
  return referenceIds;
}

/** Index of the first difference between two id lists (-1 when equal); cheaper than deepEqual on 800k ids. */
function firstDifference(a: ArrayLike<number>, b: ArrayLike<number>): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}

/** The WikiText-2 test text as PROTOCOL.md section 4 builds it. */
function wikitextText(): string {
  const lines = fs.readFileSync(WIKITEXT_FILE, 'utf8').split('\n');
  lines.pop(); // the file ends with '\n'
  return lines.map((line) => (line === ' ' ? '' : `${line}\n`)).join('\n\n');
}

test('tok512: "Once upon a time" is [1, 403, 407, 261, 378] and decodes back', () => {
  assert.deepEqual(tokenizer.encode('Once upon a time'), [1, 403, 407, 261, 378]);
  assert.deepEqual(tokenizer.encode('Once upon a time', { addSpecialTokens: false }), [403, 407, 261, 378]);
  assert.equal(tokenizer.decode([1, 403, 407, 261, 378]), 'Once upon a time');
  assert.equal(tokenizer.decode([1, 403, 407, 261, 378, 2]), 'Once upon a time');
  assert.deepEqual(tokenizer.encode(''), [1]);
  assert.equal(tokenizer.decode([]), '');
  assert.equal(tokenizer.decode([1, 2]), '');
  assert.equal(tokenizer.vocabSize, 512);
  assert.equal(tokenizer.bosTokenId, 1);
  assert.equal(tokenizer.eosTokenId, 2);
  assert.equal(tokenizer.decode([512]), ''); // beyond the tokenizer (a padded embedding row): no text, as in tokenizers
  assert.throws(() => tokenizer.decode([-1]), RangeError);
});

test('the reference llama2.c encoder gives the documented ids', () => {
  assert.deepEqual(reference.encode('Once upon a time'), [1, 403, 407, 261, 378]);
  assert.deepEqual(reference.encode(''), [1]);
  assert.deepEqual(reference.encode('a', true, true), [1, 261, 2]); // dummy prefix merged: " a"
  assert.deepEqual(reference.encode('\u{1F436}', false), [410, 0xf0 + 3, 0x9f + 3, 0x90 + 3, 0xb6 + 3]);
});

test('identical ids to llama2.c encode on every validation story (1,000 stories)', () => {
  assert.equal(validStories.length, 1000);
  let mismatches = 0;
  let first = -1;
  const expectedIds = validReferenceIds();
  for (let i = 0; i < validStories.length; i++) {
    if (firstDifference(expectedIds[i]!, tokenizer.encode(validStories[i]!)) !== -1) {
      mismatches += 1;
      if (first < 0) first = i;
    }
  }
  assert.equal(mismatches, 0, `${mismatches} stories differ, the first is #${first}`);
});

test('identical ids to llama2.c encode on edge-case strings (byte fallback, spaces, newlines)', () => {
  const texts = [
    'a', ' ', '  leading spaces', 'trailing spaces   ', 'multiple    spaces', 'tabs\tand\nnewlines\n\n',
    'Lily\'s "quoted" words, and... punctuation!?', 'naïve café — “curly” quotes… ’s', 'emoji 🐶🐱 and 中文 text',
    'combining e\u0301 and \u00a0 no-break space', '<0x41> written literally', '12345 67890', '\r\n windows line\r\n',
    'ZZZ QQQ xyz', 'once', 'Once upon a time there was a little girl named Lily.',
  ];
  for (const text of texts) {
    assert.deepEqual(tokenizer.encode(text), reference.encode(text), JSON.stringify(text));
    assert.equal(tokenizer.decode(tokenizer.encode(text)), text, `round trip ${JSON.stringify(text)}`);
  }
  // Byte fallback: a character outside the vocabulary becomes its UTF-8 bytes + 3.
  assert.deepEqual(tokenizer.encode('🐶', { addSpecialTokens: false }).slice(1), [0xf0 + 3, 0x9f + 3, 0x90 + 3, 0xb6 + 3]);
});

test('decode(encode(story)) gives every validation story back', () => {
  const ids = validReferenceIds();
  validStories.forEach((story, i) => assert.equal(tokenizer.decode(ids[i]!), story));
});

test('special tokens written in the text are encoded as specials (Hugging Face behaviour)', () => {
  // llama2.c would spell "</s>" out; Hugging Face tokenizers (and so SliceServe) match added tokens.
  const ids = tokenizer.encode('the end</s>', { addSpecialTokens: false });
  assert.equal(ids[ids.length - 1], 2);
  assert.deepEqual(ids.slice(0, -1), tokenizer.encode('the end', { addSpecialTokens: false }));
});

test('the heap-based reference encoder equals the scanning one on every validation story', () => {
  const ids = validReferenceIds();
  validStories.forEach((story, i) => assert.equal(firstDifference(reference.encodeWithHeap(story), ids[i]!), -1, `story ${i}`));
});

test('WikiText-2 test text encoded as one string: segmented encoding equals llama2.c encode', () => {
  const text = wikitextText();
  assert.equal(text.length, 1294336);
  const ids = tokenizer.encode(text);
  assert.equal(ids.length, 815070);
  assert.equal(firstDifference(ids, reference.encodeWithHeap(text)), -1);
});

test('segmented encoding equals the library encoding the text as one word', () => {
  // The library on the whole string (slow: about 8 us per character), on the first 150k characters.
  const text = wikitextText().slice(0, 150_000);
  const library = new Tokenizer(tokenizer.toJSON(), {});
  const ids = tokenizer.encode(text, { addSpecialTokens: false });
  assert.equal(firstDifference(ids, library.encode(text, { add_special_tokens: false }).ids), -1);
});

test('token streams: validation 390,336 tokens / 1,000 stories, train 1,031,693 / 2,316', () => {
  const valid = buildTokenStream(fs.readFileSync(VALID_FILE), tokenizer);
  assert.equal(valid.storyCount, 1000);
  assert.equal(valid.tokens.length, 390336);
  assert.equal(valid.tokens.filter((id) => id === 1).length, 1000);
  assert.deepEqual(Array.from(valid.tokens.subarray(0, 3)), tokenizer.encode(validStories[0]!).slice(0, 3));
  const train = buildTokenStream(fs.readFileSync(TRAIN_FILE), tokenizer);
  assert.equal(train.storyCount, 2316);
  assert.equal(train.tokens.length, 1031693);
});

test('splitStories strips ASCII whitespace and drops empty pieces', () => {
  const bytes = Buffer.from('<|endoftext|>\n  First story.\r\n<|endoftext|> \t\n<|endoftext|>Second\vstory\f<|endoftext|>\n');
  assert.deepEqual(splitStories(bytes), ['First story.', 'Second\vstory']);
  assert.deepEqual(splitStories(Buffer.from('only one')), ['only one']);
  assert.deepEqual(splitStories(Buffer.from(' \n ')), []);
});

test('a saved tokenizer.json (+ tokenizer_config.json) loads back with the same ids', () => {
  const dir = tempDir();
  fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(tokenizer.toJSON()));
  fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify({ bos_token: '<s>', clean_up_tokenization_spaces: true }));
  const loaded = loadHfTokenizer(dir, { bosTokenId: 1, eosTokenId: 2 });
  assert.equal(loaded.tokenizerConfig.bos_token, '<s>');
  for (const story of validStories.slice(0, 50)) {
    assert.deepEqual(loaded.encode(story), tokenizer.encode(story));
    // clean_up_tokenization_spaces from the config is overridden: decoding stays lossless.
    assert.equal(loaded.decode(loaded.encode(story)), story);
  }
});

test('a SentencePiece-style tokenizer.json with the "▁" convention segments exactly too', () => {
  // The tok512 vocabulary rewritten the way Llama 2's tokenizer.json spells it.
  const json = structuredClone(tokenizer.toJSON()) as Record<string, any>;
  const toMeta = (s: string) => s.replaceAll(' ', '\u2581');
  json.model.vocab = Object.fromEntries(Object.entries(json.model.vocab as Record<string, number>).map(([k, v]) => [toMeta(k), v]));
  json.model.merges = (json.model.merges as [string, string][]).map(([a, b]) => `${toMeta(a)} ${toMeta(b)}`);
  json.normalizer = { type: 'Sequence', normalizers: [{ type: 'Prepend', prepend: '\u2581' }, { type: 'Replace', pattern: { String: ' ' }, content: '\u2581' }] };
  json.decoder = { type: 'Sequence', decoders: [{ type: 'Replace', pattern: { String: '\u2581' }, content: ' ' }, { type: 'ByteFallback' }, { type: 'Fuse' }, { type: 'Strip', content: ' ', start: 1, stop: 0 }] };
  const meta = new HfTokenizer(json, { bosTokenId: 1, eosTokenId: 2 });
  const library = new Tokenizer(json, {});
  for (const story of validStories.slice(0, 100)) {
    const ids = meta.encode(story);
    assert.deepEqual(ids, tokenizer.encode(story));
    assert.deepEqual(ids.slice(1), library.encode(story, { add_special_tokens: false }).ids);
    assert.equal(meta.decode(ids), story);
  }
});

test('bad tokenizer files are rejected with the file name and the problem', () => {
  const dir = tempDir();
  const bytes = fs.readFileSync(TOK512);
  const truncated = path.join(dir, 'tok-truncated.bin');
  fs.writeFileSync(truncated, bytes.subarray(0, bytes.length - 3));
  assertLoadError(() => readLlama2cVocab(truncated, 512), truncated, 'truncated', 'token 511');
  assertLoadError(() => readLlama2cVocab(TOK512, 500), TOK512, 'bytes left after 500 tokens');
  assertLoadError(() => readLlama2cVocab(TOK512, 600), TOK512, 'truncated', 'vocab_size is 600');
  assertLoadError(() => readLlama2cVocab(path.join(dir, 'nope.bin')), path.join(dir, 'nope.bin'), 'not found');
  assertLoadError(() => parseLlama2cVocab(Buffer.from([0, 0, 0, 0]), 'x.bin'), 'x.bin', 'max_token_length 0');

  assertLoadError(() => loadHfTokenizer(dir, { bosTokenId: 1, eosTokenId: 2 }), path.join(dir, 'tokenizer.json'), 'tokenizer file not found');
  fs.writeFileSync(path.join(dir, 'tokenizer.json'), '{"model": ');
  assertLoadError(() => loadHfTokenizer(dir, { bosTokenId: 1, eosTokenId: 2 }), path.join(dir, 'tokenizer.json'), 'not valid JSON');
  fs.writeFileSync(path.join(dir, 'tokenizer.json'), '{"version": "1.0"}');
  assertLoadError(() => loadHfTokenizer(dir, { bosTokenId: 1, eosTokenId: 2 }), path.join(dir, 'tokenizer.json'), 'no "model"');
  fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(tokenizer.toJSON()));
  assertLoadError(() => loadHfTokenizer(dir, { bosTokenId: 1, eosTokenId: 700 }), path.join(dir, 'tokenizer.json'), 'eos_token_id 700');
});
