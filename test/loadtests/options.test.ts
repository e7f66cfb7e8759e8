import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Command, CommanderError } from 'commander';
import { addBenchOptions, defaultRequests, resolveBenchOptions } from '../../loadtests/options.js';

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
