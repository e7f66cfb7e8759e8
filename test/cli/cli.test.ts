/**
 * The `sliceserve` CLI as a user runs it (a child process): --help everywhere, the golden
 * completion on stdout, --json output, and one-line errors for bad input.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { largestUsableSparsity, slicedWidth } from '../../slicer/index.js';

const BIN = path.resolve('bin/sliceserve.js');

function run(args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', env: { ...process.env, CI: '1' } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('--help works on the program and on every command', () => {
  const top = run(['--help']);
  assert.equal(top.code, 0);
  const commands = ['generate', 'eval', 'slice', 'convert', 'serve', 'synth', 'bench'];
  for (const c of commands) assert.match(top.stdout, new RegExp(`\\b${c}\\b`), `top-level help lists ${c}`);
  for (const c of commands) {
    const r = run([c, '--help']);
    assert.equal(r.code, 0, `${c} --help`);
    assert.match(r.stdout, new RegExp(`Usage: sliceserve ${c}`));
  }
});

test('generate prints only the completion (golden greedy text)', () => {
  const r = run(['generate', '--model', 'models/stories260K', '--prompt', 'Once upon a time', '--max-tokens', '60', '--temperature', '0']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(
    r.stdout,
    ', there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball. She wanted to play with it, but it was too high.\nLily',
  );
});

test('generate --seed takes any integer, as the API does, and makes sampling reproducible', () => {
  const sample = (seed: string) => run(['generate', '--prompt', 'Once upon a time', '--max-tokens', '12', '--seed', seed]);
  const a = sample('-7');
  assert.equal(a.code, 0, a.stderr);
  assert.ok(a.stdout.length > 0);
  assert.equal(sample('-7').stdout, a.stdout);
  assert.notEqual(sample('7').stdout, a.stdout, 'a different seed, different text');
  assert.notEqual(sample('1.5').code, 0);
});

test('eval --json: the last stdout line is a JSON object with perplexity, tokens, windows', () => {
  const r = run(['eval', '--model', 'models/stories260K', '--windows', '4', '--seq-len', '64', '--json']);
  assert.equal(r.code, 0, r.stderr);
  const last = JSON.parse(r.stdout.trim().split('\n').pop()!);
  assert.equal(last.tokens, 4 * 63);
  assert.equal(last.windows, 4);
  assert.ok(last.perplexity > 1 && last.perplexity < 20, `perplexity ${last.perplexity}`);
});

test('bad input gives a one-line error and a non-zero exit', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sliceserve-cli-'));
  try {
    const file = path.join(tmp, 'a-file');
    fs.writeFileSync(file, 'x');
    const cases: [string[], RegExp][] = [
      [['slice', '--sparsity', '1', '--out', path.join(tmp, 'o')], /--sparsity.*expected a number in \[0, 1\)/],
      [['slice', '--sparsity', '-0.2', '--out', path.join(tmp, 'o')], /expected a number in \[0, 1\)/],
      [['slice', '--sparsity', '0.25', '--out', path.join(file, 'sub')], /--out .*cannot write/],
      [['generate', '--model', path.join(tmp, 'missing'), '--prompt', 'x'], /missing/],
      [['generate', '--prompt', 'x', '--max-tokens', 'ten'], /expected an integer >= 1/],
      [['eval', '--data', path.join(tmp, 'none.txt')], /--data .*none\.txt: no such file/],
      [['generate', '--prompt', 'x', '--device', 'tpu'], /tpu/],
      [['generate', '--prompt', 'x', '--top-p', '0'], /^sliceserve: option '--top-p <p>' argument '0' is invalid\. expected a number in \(0, 1\], got "0" \(run with --help for usage\)$/],
      [['eval', '--seq-len', '100000', '--windows', '1'], /^sliceserve: --seq-len 100000 exceeds the context length 512 of stories260K; pass --seq-len 512 or less$/],
      [
        ['slice', '--sparsity', '0.25', '--cal-seq-len', '1000', '--cal-windows', '2', '--out', path.join(tmp, 'o')],
        /^sliceserve: --cal-seq-len 1000 exceeds the context length 512 of stories260K; pass --cal-seq-len 512 or less$/,
      ],
      [['slice', '--sparsity', '0.25', '--out', file], /^sliceserve: --out .*a-file is a file; --out must be a directory that is empty or does not exist yet$/],
      [['slice', '--sparsity', '0.99', '--out', path.join(tmp, 'o')], /^sliceserve: --sparsity 0\.99 with --round-interval 8 leaves no columns of stories260K's hidden size 64; the largest usable --sparsity is 0\.875$/],
      [['slice', '--sparsity', '0.5', '--round-interval', '128', '--out', path.join(tmp, 'o')], /cannot be sliced with --round-interval 128: lower it$/],
      [['eval', '--data', tmp], /^sliceserve: --data .* is not a file; pass a text file of stories separated by <\|endoftext\|>$/],
      [['generate', '--prompt', 'Once upon a time', '--max-tokens', '100000'], /^sliceserve: --max-tokens 100000: the prompt \(5 tokens\) plus 100000 exceed the context length 512 of stories260K; pass --max-tokens 507 or less$/],
      [['generate', '--prompt', 'x', '--quantize', 'int3'], /^sliceserve: option '--quantize <precision>' argument 'int3' is invalid\. expected none, int8, int4 \(none = float weights\), got "int3" \(run with --help for usage\)$/],
      [['eval', '--quantize', 'int4', '--quant-rotation', 'random'], /^sliceserve: --quant-rotation random needs a sliced model and stories260K is dense; slice it \(--sparsity\) or pass --quant-rotation auto or none$/],
      [['serve', '--quantize', 'int8,fp8', '--port', '0'], /^sliceserve: option '--quantize <list>' argument 'int8,fp8' is invalid\. expected none, int8, int4 \(none = float weights\), got "fp8"/],
      [['generate', '--prompt', 'x', '--seed', '1.5'], /^sliceserve: option '--seed <n>' argument '1\.5' is invalid\. expected an integer, got "1\.5"/],
      [['serve', '--cache-dir', '/dev/null/x', '--port', '0'], /^sliceserve: --cache-dir \/dev\/null\/x is not a writable directory \(cannot create \/dev\/null\/x: .*not a directory.*\); pass --cache-dir <dir>$/],
      [['serve', '--max-batch-prefill-tokens', '1.5', '--port', '0'], /^sliceserve: option '--max-batch-prefill-tokens <n>' argument '1\.5' is invalid\. expected an integer >= 0, got "1\.5"/],
      [['slice', '--sparsity', '0.25', '--quant-rotation', 'yes', '--out', path.join(tmp, 'o')], /argument 'yes' is invalid\. expected auto, random, none, got "yes"/],
    ];
    for (const [args, pattern] of cases) {
      const r = run(args);
      assert.notEqual(r.code, 0, args.join(' '));
      const lines = r.stderr.trim().split('\n');
      assert.equal(lines.length, 1, `one line for ${args.join(' ')}: ${r.stderr}`);
      assert.match(lines[0], pattern);
    }
    // Nothing half-written: a failed slice leaves no output directory.
    assert.equal(fs.existsSync(path.join(tmp, 'o')), false);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});

test('slice writes an artifact that generate and eval accept', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sliceserve-cli-'));
  try {
    const out = path.join(tmp, 'sliced');
    const s = run(['slice', '--sparsity', '0.5', '--cal-windows', '8', '--cal-seq-len', '128', '--out', out]);
    assert.equal(s.code, 0, s.stderr);
    assert.match(s.stdout, /d' = 32/);
    assert.match(s.stdout, /parameters: 260,032 -> 179,200/);
    const config = JSON.parse(fs.readFileSync(path.join(out, 'config.json'), 'utf8'));
    assert.equal(config.sliceserve.sliced_hidden_size, 32);
    assert.equal(config.sliceserve.calibration.windows, 8);
    const g = run(['generate', '--model', out, '--prompt', 'Once upon a time', '--max-tokens', '10', '--temperature', '0']);
    assert.equal(g.code, 0, g.stderr);
    assert.ok(g.stdout.length > 0);
    const again = run(['slice', '--sparsity', '0.5', '--out', out]);
    assert.notEqual(again.code, 0);
    assert.match(again.stderr, /exists and is not empty/);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});

test('slice --quantize int4 writes a quantized artifact; eval and generate load it; --quantize shows in every --help', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sliceserve-cli-'));
  try {
    const out = path.join(tmp, 'sliced-int4');
    const s = run(['slice', '--sparsity', '0.25', '--cal-windows', '8', '--cal-seq-len', '128', '--quantize', 'int4', '--out', out]);
    assert.equal(s.code, 0, s.stderr);
    assert.match(s.stdout, /quantized to int4 after a random residual rotation \(seed 0\): 0\.\d\d MiB of quantized weights/);
    const config = JSON.parse(fs.readFileSync(path.join(out, 'config.json'), 'utf8'));
    assert.equal(config.sliceserve.sliced_hidden_size, 48);
    assert.equal(config.sliceserve_quantization.preset, 'int4');
    const e = run(['eval', '--model', out, '--windows', '2', '--seq-len', '64', '--json']);
    assert.equal(e.code, 0, e.stderr);
    const last = JSON.parse(e.stdout.trim().split('\n').pop()!);
    assert.equal(last.quantize, 'int4');
    assert.equal(last.sparsity, 0.25);
    const g = run(['generate', '--model', out, '--prompt', 'Once upon a time', '--max-tokens', '10', '--temperature', '0']);
    assert.equal(g.code, 0, g.stderr);
    const twice = run(['generate', '--model', out, '--prompt', 'x', '--quantize', 'int8']);
    assert.match(twice.stderr, /^sliceserve: sliced-int4 is already quantized \(int4\); pass its float model, or --quantize none\n$/);
    // A startup model that fails while others load: exit 1 with the first failure (int8 and int4
    // both fail; whichever comes first cancels the rest), after the others' workers are closed (a
    // worker left inside onnxruntime aborted the process with 'terminate called ...' and 134 in
    // about 1 run of 5).
    for (let i = 0; i < 3; i++) {
      const srv = run(['serve', '--port', '0', '--model', out, '--quantize', 'none,int8,int4', '--cache-dir', path.join(tmp, 'cache'), '--held-out-windows', '0']);
      assert.equal(srv.code, 1, srv.stderr);
      assert.match(srv.stderr, /^sliceserve: could not load model .*sliced-int4 with --quantize int[84]: sliced-int4 is already quantized \(int4\); pass its float model, or --quantize none\n$/);
    }
    for (const c of ['serve', 'slice', 'generate', 'eval']) {
      const h = run([c, '--help']).stdout;
      assert.match(h, /--quantize </, `${c} --help lists --quantize`);
      assert.match(h, /--quant-rotation <mode>/, `${c} --help lists --quant-rotation`);
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});

test('largestUsableSparsity: the largest 3-decimal sparsity whose d\' is > 0, and null when none is', () => {
  assert.equal(largestUsableSparsity(64, 8), 0.875);
  assert.equal(largestUsableSparsity(768, 8), 0.989);
  assert.equal(largestUsableSparsity(4096, 128), 0.968);
  assert.equal(largestUsableSparsity(4, 8), null);
  for (const [d, r] of [[64, 8], [768, 8], [4096, 128], [100, 3]]) {
    const s = largestUsableSparsity(d, r)!;
    assert.ok(slicedWidth(s, d, r) >= r, `${d}/${r}`);
    assert.throws(() => slicedWidth(Math.round((s + 0.001) * 1000) / 1000, d, r), RangeError, `${d}/${r}: one step more leaves nothing`);
  }
});
