import assert from 'node:assert/strict';
import { test } from 'node:test';
import { IncrementalDetokenizer } from '../../engine/detokenizer.js';
import { FakeTokenizer } from './fakes.js';

const tok = new FakeTokenizer();

test('streamed text equals decode(prompt + generated) minus decode(prompt), spacing included', () => {
  const prompt = tok.encode('Once upon');
  const generated = tok.encode('a time, there was', { addSpecialTokens: false });
  const detok = new IncrementalDetokenizer(tok, prompt);
  const deltas = generated.map((id) => detok.push(id));
  deltas.push(detok.flush());
  const expected = tok.decode([...prompt, ...generated]).slice(tok.decode(prompt).length);
  assert.equal(deltas.join(''), expected);
  assert.equal(expected, ' a time, there was');
  assert.equal(detok.emittedChars, expected.length);
});

test('a character split over byte-fallback tokens is held back until complete', () => {
  const prompt = tok.encode('a');
  const snowman = tok.encode('☃x', { addSpecialTokens: false }); // ' ' piece? no: ' ', 3 bytes, 'x'
  const detok = new IncrementalDetokenizer(tok, prompt);
  const deltas = snowman.map((id) => detok.push(id));
  assert.ok(deltas.every((d) => !d.includes('\uFFFD')), `no replacement char: ${JSON.stringify(deltas)}`);
  assert.equal(deltas.join(''), ' ☃x');
  // The first two bytes of the 3-byte character produce nothing.
  const firstByte = snowman.findIndex((id) => id >= 3 + 0xe0 && id < 3 + 0xf0);
  assert.equal(deltas[firstByte], '');
  assert.equal(deltas[firstByte + 1], '');
  assert.equal(deltas[firstByte + 2], '☃');
});

test('flush emits an incomplete trailing character as U+FFFD; peek does not advance', () => {
  const prompt = tok.encode('a');
  const bytes = [...new TextEncoder().encode('€')].map((b) => 3 + b);
  const detok = new IncrementalDetokenizer(tok, prompt);
  assert.equal(detok.push(bytes[0]), '');
  assert.equal(detok.peek(bytes[1]), '', 'still incomplete: nothing new but U+FFFD replaced');
  assert.equal(detok.flush(), '\uFFFD');
  assert.equal(detok.flush(), '');
  const d2 = new IncrementalDetokenizer(tok, prompt);
  assert.equal(d2.peek(FakeTokenizer.piece(' time')), ' time');
  assert.equal(d2.push(FakeTokenizer.piece(' time')), ' time');
});

test('a stream from the start drops BOS and the leading dummy-prefix space', () => {
  const ids = tok.encode('Once upon a time');
  const detok = new IncrementalDetokenizer(tok);
  assert.equal(ids.map((id) => detok.push(id)).join(''), 'Once upon a time');
});

test('with the real stories260K tokenizer, byte-fallback characters stream whole', async () => {
  const { loadModel } = await import('../../models/load.js');
  const path = await import('node:path');
  const model = await loadModel(path.resolve(__dirname, '..', '..', '..', 'models', 'stories260K'));
  const real = model.tokenizer;
  const prompt = real.encode('Once upon a time');
  const continuation = ' the café served crème brûlée ☃ 😀 and tea';
  const ids = real.encode('Once upon a time' + continuation).slice(prompt.length);
  assert.ok(ids.some((id) => id >= 3 && id <= 258), 'the text uses byte-fallback tokens');
  const detok = new IncrementalDetokenizer(real, prompt);
  const deltas = ids.map((id) => detok.push(id));
  deltas.push(detok.flush());
  assert.ok(deltas.every((d) => !d.includes('\uFFFD')), JSON.stringify(deltas));
  assert.equal(deltas.join(''), continuation);
  assert.ok(deltas.filter((d) => d === '').length >= 4, 'bytes of multi-byte characters were held back');
});
