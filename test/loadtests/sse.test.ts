import assert from 'node:assert/strict';
import { test } from 'node:test';
import { sseEvents, type SseEvent } from '../../loadtests/sse.js';

async function* chunks(parts: Uint8Array[]): AsyncGenerator<Uint8Array> {
  for (const p of parts) yield p;
}

async function collect(parts: Uint8Array[]): Promise<SseEvent[]> {
  const out: SseEvent[] = [];
  for await (const e of sseEvents(chunks(parts))) out.push(e);
  return out;
}

function splitEvery(bytes: Uint8Array, n: number): Uint8Array[] {
  const parts: Uint8Array[] = [];
  for (let i = 0; i < bytes.length; i += n) parts.push(bytes.subarray(i, i + n));
  return parts;
}

const STREAM =
  ': keep-alive comment\n\n' +
  'data: {"choices":[{"text":" Größe"}]}\n\n' +
  'data: {"choices":[{"text":" 日本"}]}\r\n\r\n' +
  'event: ping\ndata: x\n\n' +
  'data: line1\ndata: line2\n\n' +
  'data: [DONE]\n\n';

const EXPECTED: SseEvent[] = [
  { data: '{"choices":[{"text":" Größe"}]}' },
  { data: '{"choices":[{"text":" 日本"}]}' },
  { data: 'x', event: 'ping' },
  { data: 'line1\nline2' },
  { data: '[DONE]' },
];

test('events arrive whole whatever the read boundaries (every split size, inside UTF-8 characters and CRLF)', async () => {
  const bytes = new TextEncoder().encode(STREAM);
  for (const n of [1, 2, 3, 5, 7, 13, 64, bytes.length]) {
    assert.deepEqual(await collect(splitEvery(bytes, n)), EXPECTED, `split every ${n} bytes`);
  }
});

test('an unterminated last event is dropped; an empty stream gives nothing', async () => {
  const bytes = new TextEncoder().encode('data: a\n\ndata: b');
  assert.deepEqual(await collect([bytes]), [{ data: 'a' }]);
  assert.deepEqual(await collect([]), []);
});

test('an error from the byte stream propagates', async () => {
  async function* broken(): AsyncGenerator<Uint8Array> {
    yield new TextEncoder().encode('data: a\n\n');
    throw new Error('socket hang up');
  }
  const seen: string[] = [];
  await assert.rejects(async () => {
    for await (const e of sseEvents(broken())) seen.push(e.data);
  }, /socket hang up/);
  assert.deepEqual(seen, ['a']);
});
