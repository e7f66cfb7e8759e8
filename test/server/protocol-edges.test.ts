/**
 * Errors outside express in the OpenAI shape (issue 15): Node's HTTP parser errors
 * (`clientError`), a missing Host, CONNECT, refused WebSocket handshakes, and WebSocket closes
 * (protocol errors, shutdown) with a JSON reason.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, test } from 'node:test';
import WebSocket from 'ws';
import { clientErrorFor } from '../../server/errors.js';
import { MAX_CLOSE_REASON_BYTES, closeReason } from '../../server/ws.js';
import { DENSE, startTestServer, type TestServer } from './helpers.js';

let t: TestServer;
let port: number;
before(async () => {
  t = await startTestServer();
  port = t.server.port;
});
after(() => t.server.shutdown(1000));

function raw(bytes: string): Promise<{ status: number; headers: string; body: any }> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1', () => s.write(Buffer.from(bytes, 'latin1')));
    const chunks: Buffer[] = [];
    s.on('data', (c) => chunks.push(c));
    s.on('error', () => undefined);
    s.on('close', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      const m = /^HTTP\/1\.1 (\d{3})[^\r\n]*\r\n([\s\S]*?)\r\n\r\n([\s\S]*)$/.exec(text);
      if (!m) return reject(new Error(`no HTTP answer: ${JSON.stringify(text.slice(0, 100))}`));
      resolve({ status: Number(m[1]), headers: m[2], body: JSON.parse(m[3]) });
    });
  });
}

function assertShape(body: any, code: string): void {
  assert.deepEqual(Object.keys(body), ['error']);
  assert.deepEqual(Object.keys(body.error).sort(), ['code', 'message', 'param', 'type']);
  assert.equal(body.error.code, code);
  assert.equal(body.error.type, 'invalid_request_error');
}

test('HTTP parser errors are answered in the OpenAI shape', async () => {
  const bad = await raw('GET /he\x01alth HTTP/1.1\r\nHost: x\r\n\r\n');
  assert.equal(bad.status, 400);
  assertShape(bad.body, 'malformed_http');
  assert.match(bad.body.error.message, /^Malformed HTTP request: .*\(HPE_INVALID_URL\)\.$/);
  const header = await raw(`GET /health HTTP/1.1\r\nHost: x\r\nX-A: ${'a'.repeat(80_000)}\r\n\r\n`);
  assert.equal(header.status, 431);
  assertShape(header.body, 'headers_too_large');
  const folded = await raw('GET /health HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n');
  assert.equal(folded.status, 400);
  assertShape(folded.body, 'malformed_http');
  assert.match(folded.headers, /Content-Type: application\/json/);
});

test('a missing Host and CONNECT get OpenAI errors, not an empty answer or a dropped socket', async () => {
  const noHost = await raw('GET /v1/models HTTP/1.1\r\n\r\n');
  assert.equal(noHost.status, 400);
  assertShape(noHost.body, 'missing_host');
  const http10 = await raw('GET /health HTTP/1.0\r\n\r\n');
  assert.equal(http10.status, 200, 'HTTP/1.0 needs no Host');
  const connect = await raw('CONNECT 127.0.0.1:1 HTTP/1.1\r\nHost: 127.0.0.1:1\r\n\r\n');
  assert.equal(connect.status, 405);
  assertShape(connect.body, 'method_not_allowed');
});

test('clientErrorFor maps the parser codes', () => {
  assert.equal(clientErrorFor(Object.assign(new Error('x'), { code: 'HPE_HEADER_OVERFLOW' })).status, 431);
  assert.equal(clientErrorFor(Object.assign(new Error('x'), { code: 'ERR_HTTP_REQUEST_TIMEOUT' })).status, 408);
  assert.equal(clientErrorFor(Object.assign(new Error('x'), { code: 'HPE_CHUNK_EXTENSIONS_OVERFLOW' })).status, 413);
  assert.equal(clientErrorFor(Object.assign(new Error('Parse Error'), { code: 'HPE_INVALID_METHOD', reason: 'Invalid method encountered' })).body().error.message, 'Malformed HTTP request: Invalid method encountered (HPE_INVALID_METHOD).');
});

test('a refused WebSocket handshake answers JSON', async () => {
  const r = await raw(`GET /v1/stream HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 12\r\n\r\n`);
  assert.equal(r.status, 400);
  assertShape(r.body, 'invalid_handshake');
  assert.match(r.headers, /Sec-WebSocket-Version: 13, 8/);
});

test('every close reason is a JSON OpenAI error that fits a close frame', () => {
  for (const code of [1001, 1002, 1007, 1009, 1011, 4000]) {
    const reason = closeReason(code);
    assert.ok(Buffer.byteLength(reason) <= MAX_CLOSE_REASON_BYTES, `${code}: ${Buffer.byteLength(reason)} bytes`);
    const body = JSON.parse(reason);
    assert.deepEqual(Object.keys(body.error).sort(), ['code', 'message', 'param', 'type']);
  }
});

function session(send: (ws: WebSocket) => void): Promise<{ messages: any[]; code: number; reason: string }> {
  return new Promise((resolve) => {
    const ws = new WebSocket(`${t.url.replace('http', 'ws')}/v1/stream`);
    const messages: any[] = [];
    ws.on('open', () => send(ws));
    ws.on('message', (m) => messages.push(JSON.parse(m.toString())));
    ws.on('error', () => undefined);
    ws.on('close', (code, reason) => resolve({ messages, code, reason: reason.toString() }));
  });
}

/** A masked client frame. */
function frame(first: number, payload: Buffer): Buffer {
  const mask = [9, 8, 7, 6];
  return Buffer.concat([Buffer.from([first, 0x80 | payload.length, ...mask]), Buffer.from(payload.map((b, i) => b ^ mask[i % 4]))]);
}

for (const [what, first, payload, code, errorCode] of [
  ['an RSV1 frame without permessage-deflate', 0xc1, Buffer.from('{}'), 1002, 'protocol_error'],
  ['invalid UTF-8 in a text frame', 0x81, Buffer.from([0x7b, 0xff, 0x7d]), 1007, 'invalid_utf8'],
] as const) {
  test(`WebSocket: ${what} gets an error message, then close ${code} with a JSON reason`, async () => {
    const r = await session((ws) => (ws as unknown as { _socket: net.Socket })._socket.write(frame(first, payload)));
    assert.equal(r.code, code);
    const reason = JSON.parse(r.reason);
    assert.equal(reason.error.code, errorCode);
    assert.equal(r.messages.length, 1);
    assert.equal(r.messages[0].type, 'error');
    assert.equal(r.messages[0].error.code, errorCode);
    assert.equal(r.messages[0].error.status, 400);
  });
}

test('WebSocket: a message over 1 MiB closes 1009 with a JSON reason', async () => {
  const r = await session((ws) => ws.send('x'.repeat(1024 * 1024 + 1)));
  assert.equal(r.code, 1009);
  assert.equal(JSON.parse(r.reason).error.code, 'message_too_big');
});

test('WebSocket: the shutdown closes 1001 with a JSON reason', async () => {
  const s = await startTestServer();
  const closed = new Promise<{ code: number; reason: string }>((resolve) => {
    const ws = new WebSocket(`${s.url.replace('http', 'ws')}/v1/stream`);
    ws.on('open', () => ws.send(JSON.stringify({ type: 'completion', id: 'a', model: DENSE, prompt: 'Once', max_tokens: 1 })));
    ws.on('message', () => void s.server.shutdown(100));
    ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() }));
  });
  const { code, reason } = await closed;
  assert.equal(code, 1001);
  assert.deepEqual(JSON.parse(reason).error, { message: 'The server is shutting down.', type: 'service_unavailable', param: null, code: 'shutting_down' });
});

test('WebSocket: 2,000 messages in one write are all answered, in order, and the socket serves on', async () => {
  // More than the drain's pause threshold (256 unhandled messages): the socket is paused and
  // resumed while they are handled (server/message-drain.ts).
  const ws = new WebSocket(`${t.url.replace('http', 'ws')}/v1/stream`);
  const answers: any[] = [];
  const done = new Promise<void>((resolve, reject) => {
    ws.on('message', (m) => {
      const msg = JSON.parse(m.toString());
      answers.push(msg);
      if (msg.type === 'done' && msg.id === 'last') resolve();
    });
    ws.on('error', reject);
  });
  await new Promise<void>((resolve) => ws.on('open', () => resolve()));
  const n = 2000;
  const frames = Array.from({ length: n }, (_, i) => {
    const payload = Buffer.from(JSON.stringify({ type: 'cancel', id: `c${i}` }));
    assert.ok(payload.length < 126);
    return frame(0x81, payload);
  });
  (ws as unknown as { _socket: net.Socket })._socket.write(Buffer.concat(frames));
  ws.send(JSON.stringify({ type: 'completion', id: 'last', model: DENSE, prompt: 'Once', max_tokens: 2 }));
  await done;
  ws.close();
  const errors = answers.filter((a) => a.type === 'error');
  assert.equal(errors.length, n);
  assert.deepEqual(errors.map((a) => a.id), Array.from({ length: n }, (_, i) => `c${i}`));
  assert.ok(errors.every((a) => a.error.code === 'unknown_id' && a.error.status === 400));
  assert.equal(answers.at(-1).finish_reason, 'length');
});
