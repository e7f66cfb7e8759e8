/**
 * The `serve` command as a process: startup log, SIGTERM drains in-flight requests (new ones
 * get 503), then exit 0; bad options fail with a one-line message.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { test } from 'node:test';
import { listenError } from '../../cli/commands/serve.js';
import { DENSE, ROOT, errorOf, get, openStream, post, startTestServer } from './helpers.js';

const BIN = path.join(ROOT, 'bin', 'sliceserve.js');

/** Starts `sliceserve serve` and resolves with its URL once the 'ready' log line appears. */
function serve(args: string[]): Promise<{ child: ChildProcess; url: string; lines: any[]; exited: Promise<number | null> }> {
  const child = spawn(process.execPath, [BIN, 'serve', ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: any[] = [];
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return new Promise((resolve, reject) => {
    let url = '';
    let buffer = '';
    child.stdout!.on('data', (chunk) => {
      buffer += String(chunk);
      let nl: number;
      while ((nl = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        if (!line.trim()) continue;
        const entry = JSON.parse(line);
        lines.push(entry);
        if (entry.msg === 'listening') url = entry.url;
        if (entry.msg === 'ready') resolve({ child, url, lines, exited });
      }
    });
    void exited.then((code) => reject(new Error(`serve exited early with ${code}`)));
  });
}

test('SIGTERM: in-flight requests finish, new ones get 503, then exit 0', async () => {
  const { child, url, lines, exited } = await serve(['--dense-only', '--port', '0', '--threads', '1', '--shutdown-timeout', '30']);
  assert.match(url, /^http:\/\/127\.0\.0\.1:\d+$/);
  assert.equal((await get(`${url}/health/ready`, {})).status, 200);
  const res = await fetch(`${url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: DENSE, prompt: 'Once upon a time', max_tokens: 300, ignore_eos: true, stream: true, temperature: 0 }),
  });
  const reader = res.body!.getReader();
  let text = new TextDecoder().decode((await reader.read()).value);
  child.kill('SIGTERM');
  // Wait until the server has noticed the signal, then check it refuses new work.
  await new Promise<void>((resolve) => {
    const check = () => (lines.some((l) => l.msg === 'shutting down') ? resolve() : setTimeout(check, 20));
    check();
  });
  const refused = await post(`${url}/v1/completions`, { model: DENSE, prompt: 'x', max_tokens: 2 }, {});
  assert.equal(refused.status, 503);
  assert.equal(errorOf(refused.body).code, 'shutting_down');
  assert.equal((await get(`${url}/health`, {})).status, 200, 'still alive while draining');
  assert.equal((await get(`${url}/health/ready`, {})).status, 503, 'not ready while draining');
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    text += new TextDecoder().decode(value);
  }
  const events = text.split('\n\n').filter(Boolean);
  assert.equal(events.at(-1), 'data: [DONE]');
  const chunks = events.slice(0, -1).map((e) => JSON.parse(e.slice('data: '.length)));
  assert.equal(chunks.length, 300, 'every token of the in-flight request arrived');
  assert.equal(chunks.at(-1).choices[0].finish_reason, 'length');
  assert.equal(await exited, 0);
  assert.ok(lines.some((l) => l.msg === 'stopped'));
  const logged = lines.find((l) => l.msg === 'request' && l.path === '/v1/completions' && l.status === 200);
  assert.equal(logged.completion_tokens, 300);
  assert.equal(typeof logged.ttft_ms, 'number');
});

test('bad serve options fail with one line naming the problem', () => {
  const run = (args: string[]) => spawnSync(process.execPath, [BIN, 'serve', ...args], { cwd: ROOT, encoding: 'utf8', timeout: 20_000 });
  const missing = run(['--model', '/nonexistent/model', '--dense-only']);
  assert.equal(missing.status, 1);
  assert.equal(missing.stderr.trim().split('\n').length, 1);
  assert.match(missing.stderr, /^sliceserve: model directory \/nonexistent\/model does not exist/);
  const noCal = run(['--calibration', '/nonexistent/cal.txt']);
  assert.equal(noCal.status, 1);
  assert.match(noCal.stderr, /calibration file \/nonexistent\/cal\.txt does not exist/);
  const badPort = run(['--port', 'http']);
  assert.notEqual(badPort.status, 0);
  assert.match(badPort.stderr, /port/);
  const smallKv = run(['--dense-only', '--port', '0', '--kv-cache-tokens', '10']);
  assert.equal(smallKv.status, 1);
  assert.equal(smallKv.stderr.trim(), 'sliceserve: --kv-cache-tokens 10 is below the context length 512 of stories260K: a request of full length could never be admitted; pass 512 or more');
  const contradiction = run(['--dense-only', '--sparsity', '0.5']);
  assert.equal(contradiction.status, 1);
  assert.equal(contradiction.stderr.trim(), 'sliceserve: --dense-only and --sparsity 0.5 contradict each other; drop one of them');
  // A queue of 0 would refuse every request, since each waits until the batch admits it.
  const noQueue = run(['--dense-only', '--max-queue', '0']);
  assert.equal(noQueue.status, 1);
  assert.equal(noQueue.stderr.trim().split('\n').length, 1, noQueue.stderr);
  assert.match(noQueue.stderr, /--max-queue.*expected an integer >= 1, got "0"/);
  const badBody = run(['--dense-only', '--max-body', '1zb']);
  assert.notEqual(badBody.status, 0);
  assert.match(badBody.stderr, /--max-body/);
  assert.match(badBody.stderr, /got "1zb"/);
  assert.match(badBody.stderr, /such as 1mb/);
  // A startup model that cannot be served stops the server with one line naming it and the fix.
  const noWidth = run(['--port', '0', '--sparsity', '0.99']);
  assert.equal(noWidth.status, 1);
  assert.equal(noWidth.stderr.trim().split('\n').length, 1, noWidth.stderr);
  assert.match(noWidth.stderr, /^sliceserve: --sparsity 0\.99 cannot slice stories260K: .*the largest usable sparsity is 0\.875$/m);
  const twins = run(['--port', '0', '--sparsity', '0.25', '--sparsity', '0.2']);
  assert.equal(twins.status, 1);
  assert.equal(twins.stderr.trim(), "sliceserve: --sparsity 0.25 and --sparsity 0.2 both slice stories260K to d' = 48, the same model; keep one of them");
  const help = run(['--help']);
  assert.equal(help.status, 0);
  for (const flag of ['--model', '--sparsity', '--calibration', '--port', '--host', '--device', '--max-batch-size', '--max-queue', '--api-key']) {
    assert.ok(help.stdout.includes(flag), flag);
  }
});

test('a bad PORT or LOG_LEVEL, a port in use: one line naming the flag or variable and the fix', async () => {
  const run = (args: string[], env: Record<string, string> = {}) =>
    spawnSync(process.execPath, [BIN, ...args], { cwd: ROOT, encoding: 'utf8', timeout: 20_000, env: { ...process.env, ...env } });
  const badPort = run(['serve', '--dense-only'], { PORT: 'abc' });
  assert.equal(badPort.status, 1);
  assert.equal(badPort.stderr.trim(), 'sliceserve: env PORT="abc" is not a port (0..65535): fix or unset PORT, or pass --port <n>');
  // Only `serve` reads PORT: other commands and --help are not broken by it.
  assert.equal(run(['--help'], { PORT: 'abc' }).status, 0);
  assert.equal(run(['serve', '--help'], { PORT: 'abc' }).status, 0);
  for (const [args, env] of [[['serve', '--dense-only', '--log-level', 'verbose'], {}], [['serve', '--dense-only'], { LOG_LEVEL: 'verbose' }]] as const) {
    const r = run([...args], env);
    assert.equal(r.status, 1);
    assert.equal(r.stderr.trim(), 'sliceserve: --log-level (or env LOG_LEVEL) "verbose" is not a level: use one of fatal, error, warn, info, debug, trace, silent');
  }
  const blocker = net.createServer();
  await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
  const port = (blocker.address() as net.AddressInfo).port;
  try {
    const inUse = await new Promise<{ status: number | null; stderr: string }>((resolve) => {
      const child = spawn(process.execPath, [BIN, 'serve', '--dense-only', '--port', String(port)], { cwd: ROOT });
      let stderr = '';
      child.stderr.on('data', (d) => (stderr += d));
      child.on('exit', (status) => resolve({ status, stderr }));
    });
    assert.equal(inUse.status, 1);
    assert.match(inUse.stderr.trim(), new RegExp(`^sliceserve: --port ${port}: the port is in use on 127\\.0\\.0\\.1 \\(.*EADDRINUSE.*\\); pass another --port, or 0 for any free one$`));
  } finally {
    blocker.close();
  }
});

test('listen failures name --host or --port and the fix; other errors pass through', () => {
  const err = (code: string, message: string) => Object.assign(new Error(message), { code });
  assert.equal(
    (listenError(err('ENOTFOUND', 'getaddrinfo ENOTFOUND 999.1.1.1'), '999.1.1.1', 8080) as Error).message,
    '--host 999.1.1.1: cannot listen on it (getaddrinfo ENOTFOUND 999.1.1.1); pass an address of this machine, e.g. 127.0.0.1, or 0.0.0.0 for all',
  );
  assert.match((listenError(err('EADDRNOTAVAIL', 'listen EADDRNOTAVAIL'), '10.9.9.9', 8080) as Error).message, /^--host 10\.9\.9\.9: cannot listen/);
  assert.match((listenError(err('EACCES', 'listen EACCES'), '0.0.0.0', 80) as Error).message, /^--port 80: not allowed to listen on it .*below 1024/);
  const other = new Error('model directory missing');
  assert.equal(listenError(other, 'h', 1), other);
});

test('a shutdown timeout that cuts requests ends them cleanly: SSE abort chunk and [DONE], 503, WebSocket done', async () => {
  const t = await startTestServer({ maxBatchSize: 32 });
  // Long requests (4 choices each, so every step is a batch of 12 sequences) that a 0 s
  // shutdown timeout cuts; the JSON one goes first so that the others' first tokens mean it runs.
  const long = { model: DENSE, prompt: 'Once upon a time', max_tokens: 500, n: 4, ignore_eos: true, temperature: 0 };
  const json = post(`${t.url}/v1/completions`, long, {});
  const sse = await fetch(`${t.url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ ...long, stream: true, stream_options: { include_usage: true } }),
  });
  assert.equal(sse.status, 200);
  const reader = sse.body!.getReader();
  const decoder = new TextDecoder();
  let text = decoder.decode((await reader.read()).value, { stream: true });
  const ws = await openStream(t.url, {});
  ws.send({ type: 'completion', id: 'w1', ...long });
  await ws.next((m) => m.id === 'w1' && m.type === 'token');
  const closed = new Promise<{ code: number; messages: number }>((resolve) => ws.ws.once('close', (code) => resolve({ code, messages: ws.messages.length })));

  await t.server.shutdown(0);

  // SSE: the stream ends properly (the reader reaches done, no 'terminated' error).
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    text += decoder.decode(value, { stream: true });
  }
  const events = text.split('\n\n').filter(Boolean);
  assert.equal(events.at(-1), 'data: [DONE]');
  const chunks = events.slice(0, -1).map((e) => JSON.parse(e.slice('data: '.length)));
  const usage = chunks.at(-1);
  assert.deepEqual(usage.choices, []);
  assert.ok(usage.usage.completion_tokens > 0 && usage.usage.completion_tokens < 4 * 500, `usage ${JSON.stringify(usage.usage)}`);
  const finals = chunks.slice(0, -1).filter((c) => c.choices[0].finish_reason !== null);
  assert.deepEqual(finals.map((c) => c.choices[0].index).sort(), [0, 1, 2, 3], 'one final chunk per choice');
  for (const c of finals) assert.deepEqual(c.choices[0], { index: c.choices[0].index, text: '', logprobs: null, finish_reason: 'abort' });
  assert.equal(chunks.length - 1 - 4, usage.usage.completion_tokens, 'every token sent before the cut arrived');

  // Non-streaming: an OpenAI-shaped 503.
  const cut = await json;
  assert.equal(cut.status, 503);
  const e = errorOf(cut.body);
  assert.equal(e.code, 'shutting_down');
  assert.equal(e.message, 'The server shut down before this request finished; retry it.');

  // WebSocket: `done` with 'abort' before the close with 1001.
  const { code, messages } = await closed;
  assert.equal(code, 1001);
  const done = ws.messages.find((m) => m.id === 'w1' && m.type === 'done');
  assert.ok(done && ws.messages.indexOf(done) < messages, 'done arrived before the close');
  assert.equal(done.finish_reason, 'abort');
  assert.deepEqual(done.finish_reasons, ['abort', 'abort', 'abort', 'abort']);
  assert.ok(done.usage.completion_tokens > 0 && done.usage.completion_tokens < 4 * 500);

  const outcomes = t.logs.filter((l) => l.request_id !== undefined).map((l) => l.outcome);
  assert.deepEqual(outcomes, ['aborted', 'aborted', 'aborted']);
});
