import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Command, CommanderError } from 'commander';
import { addBenchOptions, defaultRequests, parsePeer, resolveBenchOptions } from '../../loadtests/options.js';

function parse(argv: string[]) {
  const cmd = addBenchOptions(new Command()).exitOverride().configureOutput({ writeErr: () => undefined });
  cmd.parse(argv, { from: 'user' });
  return resolveBenchOptions(cmd.opts(), argv);
}

test('defaults match the peer request shape; --quick shortens the sweep', () => {
  const full = parse([]);
  assert.deepEqual(
    [full.promptTokens, full.outputTokens, full.temperature, full.sparsities, full.concurrency, full.rounds, full.calWindows, full.url, full.model, full.preset],
    [66, 64, 0, [0.25, 0.5], [1, 2, 4, 8, 16], 4, 8, null, null, 'bench-110m'],
  );
  const quick = parse(['--quick']);
  assert.deepEqual([quick.concurrency, quick.rounds, quick.calWindows, quick.maxTimeS, quick.requests], [[1, 4, 16], 1, 4, 200, null]);
  assert.deepEqual([1, 4, 16].map((c) => defaultRequests(c, true)), [2, 4, 16]);
  assert.deepEqual([1, 4, 16].map((c) => defaultRequests(c, false)), [8, 16, 64]);
  assert.equal(quick.command, 'npm run bench -- --quick');
  assert.deepEqual([full.hugePages, parse(['--no-huge-pages']).hugePages], [true, false]);
  const custom = parse(['--sparsities', '0.3', '--concurrency', '2,8,2', '--duration', '20', '--url', 'http://127.0.0.1:9/v1/']);
  assert.deepEqual([custom.sparsities, custom.concurrency, custom.durationS, custom.requests, custom.url], [[0.3], [2, 8], 20, null, 'http://127.0.0.1:9']);
});

test('bad values are rejected with a message that names the option', () => {
  for (const argv of [['--sparsities', '0.25,1.5'], ['--concurrency', '0'], ['--requests', 'x'], ['--prompt-tokens', '0']]) {
    assert.throws(() => parse(argv), (err: unknown) => err instanceof CommanderError && /sparsities|concurrency|--requests|--prompt-tokens/.test(err.message), argv.join(' '));
  }
  assert.throws(() => parse(['--requests', '4', '--duration', '10']), /--requests or --duration, not both/);
});

test('--peer NAME=URL is repeatable; URLs lose a trailing / or /v1', () => {
  assert.deepEqual(parse([]).peers, []);
  const two = parse(['--peer', 'llamacpp-q8_0=http://127.0.0.1:8081', '--peer', 'vllm.t2=https://localhost:9000/v1/']);
  assert.deepEqual(two.peers, [
    { name: 'llamacpp-q8_0', url: 'http://127.0.0.1:8081' },
    { name: 'vllm.t2', url: 'https://localhost:9000' },
  ]);
  assert.deepEqual(parsePeer('a=http://h:1/base/v1'), [{ name: 'a', url: 'http://h:1/base' }], 'a path prefix is kept');
  assert.equal(two.command, 'npm run bench -- --peer llamacpp-q8_0=http://127.0.0.1:8081 --peer vllm.t2=https://localhost:9000/v1/');
});

test('bad --peer values are one-line errors naming the option', () => {
  const cases: Array<[string[], RegExp]> = [
    [['--peer', 'http://127.0.0.1:8081'], /--peer takes NAME=URL/],
    [['--peer', '=http://127.0.0.1:8081'], /--peer takes NAME=URL/],
    [['--peer', 'a b=http://127.0.0.1:8081'], /--peer takes NAME=URL/],
    [['--peer', 'x='], /--peer takes NAME=URL/],
    [['--peer', 'x=127.0.0.1:8081'], /--peer x: the URL must start with http/],
    [['--peer', 'x=ftp://h:1'], /--peer x: the URL must start with http/],
    [['--peer', 'x=http://'], /--peer x: "http:\/\/" is not a URL/],
    [['--peer', 'x=http://h:1/?q=1'], /without query/],
    [['--peer', 'x=http://h:1', '--peer', 'x=http://h:2'], /--peer x is given twice/],
  ];
  for (const [argv, reason] of cases) {
    assert.throws(() => parse(argv), (err: unknown) => err instanceof CommanderError && reason.test(err.message) && !err.message.includes('\n'), argv.join(' '));
  }
});
