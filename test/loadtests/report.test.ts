import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, test } from 'node:test';
import { Command } from 'commander';
import type { RequestRecord } from '../../loadtests/client.js';
import { runBench } from '../../loadtests/bench.js';
import { chartSpec } from '../../loadtests/chart.js';
import { matmulWeightsPerToken } from '../../loadtests/flops.js';
import { readReport, writeBenchmarksMd } from '../../loadtests/main.js';
import { renderMarkdown } from '../../loadtests/markdown.js';
import { modelEntries } from '../../loadtests/models.js';
import { addBenchOptions, resolveBenchOptions } from '../../loadtests/options.js';
import type { Progress } from '../../loadtests/progress.js';
import { LLAMA_CPP_PEER, ReportSchema, buildReport, type ReportContext } from '../../loadtests/report.js';
import type { RunResult } from '../../loadtests/runner.js';
import { FAKE_MODELS, startFakeServer, type FakeServer } from './fake-server.js';

const SHAPE = { hidden_size: 64, intermediate_size: 176, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 16, vocab_size: 32000 };

function rec(model: string, concurrency: number, tpot: number, ok = true): RequestRecord {
  return ok
    ? { model, concurrency, start_s: 0, ok, ttft_s: 0.1, tpot_s: tpot, itl_s: [tpot, tpot, tpot], e2e_s: 0.1 + 3 * tpot, output_tokens: 4, prompt_tokens: 10 }
    : { model, concurrency, start_s: 0, ok, error: 'HTTP 500: boom', ttft_s: null, tpot_s: null, itl_s: [], e2e_s: 0.01, output_tokens: 0, prompt_tokens: null };
}

function context(): ReportContext {
  const sel = { root: 'synth', byPrecision: [{ precision: 'none' as const, dense: FAKE_MODELS[0], sliced: [FAKE_MODELS[2]] }] };
  return {
    created: new Date('2026-11-29T12:00:00Z'),
    gitCommit: 'abc',
    model: { dir: 'x', preset: 'tiny', synthetic: true, config: null },
    requestShape: { prompt_tokens: 10, output_tokens: 4, ignore_eos: true, stream: true, temperature: 0, prefix_caching: 'defeated' },
    options: {},
    machine: { cpu_model: 'cpu', cores: 2, memory_bytes: 1, os: 'linux', node: '20', onnxruntime_node: '1.29.0', execution_provider: 'cpu', read_bandwidth_bytes_per_s: 20e9, read_bandwidth_method: 'probe', load_average_start: [0.2, 0.1, 0.1], load_average_end: [3, 1, 1] },
    models: modelEntries(sel, SHAPE),
    notes: ['note'],
  };
}

test('paired speedup: the median of per-round ratios, so one disturbed round does not move it', () => {
  const block = (model: string, round: number, tokens: number, wall_s: number) => ({
    block: { concurrency: 4, level: 0, round, model },
    records: [{ ...rec(model, 4, 0.01), output_tokens: tokens }],
    wall_s,
  });
  const result: RunResult = {
    blocks: [
      block('synth', 0, 100, 1), block('synth-sliced-0.5', 0, 100, 0.8), // 1.25
      block('synth', 1, 100, 1), block('synth-sliced-0.5', 1, 100, 2), // 0.5: this round's sliced block was disturbed
      block('synth', 2, 100, 2), block('synth-sliced-0.5', 2, 100, 1.5), // 1.333
    ],
    skipped: [],
    wall_s: 8.3,
  };
  const [sp] = buildReport(result, context()).speedup;
  assert.deepEqual(sp.round_ratios!.map((r) => Number(r.toFixed(4))), [1.25, 0.5, 1.3333]);
  assert.equal(sp.measured_paired_median, 1.25);
  // pooled: 300 tokens / 4.3 s over 300 / 4 s
  assert.ok(Math.abs(sp.measured! - 4 / 4.3) < 1e-12);
  const md = renderMarkdown(buildReport(result, context()), { title: 't', chartPath: 'c.svg' });
  assert.ok(md.includes('1.25x (0.50-1.33, 3 rounds)'), 'the paired cell shows the median and the range');
});

test('buildReport: throughput, percentiles, speedups and the bandwidth bound from known records', () => {
  const result: RunResult = {
    blocks: [
      { block: { concurrency: 1, level: 0, round: 0, model: 'synth' }, records: [rec('synth', 1, 0.02), rec('synth', 1, 0.04)], wall_s: 2 },
      { block: { concurrency: 1, level: 0, round: 0, model: 'synth-sliced-0.5' }, records: [rec('synth-sliced-0.5', 1, 0.01), rec('synth-sliced-0.5', 1, 0.01, false)], wall_s: 0.5 },
    ],
    skipped: [],
    wall_s: 2.5,
  };
  const report = buildReport(result, context());
  const [dense, sliced] = report.runs;
  assert.deepEqual([dense.model, dense.sparsity, dense.requests, dense.errors, dense.output_tokens], ['synth', 0, 2, 0, 8]);
  assert.equal(dense.output_tokens_per_s, 4); // 8 tokens / 2 s
  assert.equal(dense.requests_per_s, 1);
  assert.ok(Math.abs(dense.tpot_s!.p50 - 0.03) < 1e-12); // median of 0.02, 0.04
  assert.equal(dense.itl_s!.n, 6);
  assert.deepEqual([sliced.requests, sliced.errors, sliced.error_rate, sliced.output_tokens_per_s], [2, 1, 0.5, 8]); // 4 tokens / 0.5 s
  assert.deepEqual(sliced.error_samples, ['HTTP 500: boom']);
  const [sp] = report.speedup;
  const denseW = matmulWeightsPerToken(SHAPE).total;
  const slicedW = matmulWeightsPerToken({ ...SHAPE, sliced_hidden_size: 32 }).total;
  assert.ok(Math.abs(sp.theoretical - denseW / slicedW) < 1e-12);
  assert.equal(sp.measured, 2);
  assert.ok(Math.abs(sp.fraction_of_theoretical! - 2 / sp.theoretical) < 1e-12);
  const [d1] = report.decode_batch1;
  assert.ok(Math.abs(d1.tokens_per_s! - 1 / 0.03) < 1e-9);
  assert.equal(d1.weight_bytes_per_token, 4 * (denseW + 64));
  assert.ok(Math.abs(d1.bandwidth_bound_tokens_per_s! - 20e9 / d1.weight_bytes_per_token) < 1e-6);
  assert.ok(Math.abs(d1.reference_bound_tokens_per_s! - 27.5e9 / d1.weight_bytes_per_token) < 1e-6);
  assert.deepEqual(report.peers, [LLAMA_CPP_PEER]);
  assert.equal(report.truncated, false);
  assert.ok(ReportSchema.safeParse(report).success);
  assert.equal(ReportSchema.safeParse({ ...report, runs: [{ ...dense, ttft_s: { p50: 1 } }] }).success, false, 'a summary without its fields is rejected');
  const md = renderMarkdown(report, { title: 't', chartPath: 'c.svg' });
  assert.doesNotMatch(md, /huge pages|4 KiB pages/, 'nothing is said when the report does not know');
  const withPages = (active: boolean) => renderMarkdown({ ...report, machine: { ...report.machine, huge_pages: { transparent_hugepage: 'madvise', malloc_hugetlb: active ? '1' : null, active } } }, { title: 't', chartPath: 'c.svg' });
  assert.match(withPages(true), /execution provider `cpu`, server weights on transparent huge pages \(`GLIBC_TUNABLES=glibc\.malloc\.hugetlb=1`\)\./);
  assert.match(withPages(false), /server weights on 4 KiB pages \(transparent huge pages: madvise, glibc\.malloc\.hugetlb: unset\)\./);
  assert.ok(ReportSchema.safeParse({ ...report, machine: { ...report.machine, huge_pages: undefined } }).success, 'reports written before huge_pages still parse');
  assert.match(md, /Warning: the machine was busy\*\* \(1-minute load average 0\.2 at the start, 3\.0 at the end, on 2 cores\)/);
  assert.match(md, /sliced 50 % at concurrency 1 reaches >= 90 % of its expected speedup \(\d\.\d\d\dx\): pooled 2\.000x = \d+\.\d %, \*\*met\*\*; paired median of the rounds 2\.000x = \d+\.\d %, \*\*met\*\*/);
  assert.match(md, /No failed request: 1 of 4 failed, \*\*not met\*\*/);
  // A fraction just under the target is not rounded up to it.
  const under = { ...sp, measured: 0.8953 * sp.theoretical, fraction_of_theoretical: 0.8953, measured_paired_median: 0.9004 * sp.theoretical, round_ratios: [0.9004 * sp.theoretical] };
  const mdUnder = renderMarkdown({ ...report, speedup: [under] }, { title: 't', chartPath: 'c.svg' });
  assert.match(mdUnder, /pooled \d\.\d{3}x = 89\.5 %, \*\*not met\*\*; paired median of the rounds \d\.\d{3}x = 90\.0 %, \*\*met\*\*/);
  assert.match(md, /dense does not trail llama\.cpp \(issue 5's figures, not this run\) \(c=1: 4\.0 vs 45\.0 tok\/s\): \*\*not met\*\*/);
  assert.match(md, /\| dense \(`synth`\) \| 1 \| 100\.0 \| 100\.0 \| 100\.0 \| 100\.0 \| 30\.0 \| 30\.0 \| 38\.0 \| 39\.8 \|/);
  const spec = JSON.stringify(chartSpec(report));
  assert.match(spec, /sliced 50 %/);
  assert.match(spec, /llama\.cpp server \(peer\)/);
});

let server: FakeServer;
let tmp: string;
before(async () => {
  server = await startFakeServer({ models: FAKE_MODELS, tokenDelayMs: 1 });
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-report-'));
  fs.mkdirSync(path.join(tmp, 'synth'));
  fs.writeFileSync(path.join(tmp, 'synth', 'config.json'), JSON.stringify({ architectures: ['LlamaForCausalLM'], ...SHAPE, max_position_embeddings: 256, bos_token_id: 1, eos_token_id: 2 }));
});
after(async () => {
  await server.close();
  fs.rmSync(tmp, { recursive: true, force: true });
});

const quiet = (): Progress => ({ log: () => undefined, stop: () => undefined });

test('runBench --url: measures dense and both sliced variants and writes report.json, report.md, chart.svg, latest/', async () => {
  const argv = ['--url', `${server.url}/v1`, '--model', path.join(tmp, 'synth'), '--concurrency', '1,2', '--requests', '2', '--output-tokens', '5', '--prompt-tokens', '12', '--no-bandwidth', '--out', path.join(tmp, 'reports')];
  const cmd = addBenchOptions(new Command()).exitOverride();
  cmd.parse(argv, { from: 'user' });
  const opts = resolveBenchOptions(cmd.opts(), argv);
  assert.equal(opts.url, server.url, 'a trailing /v1 is dropped');
  server.received.length = 0;
  const { dir, report } = await runBench(opts, new AbortController().signal, quiet);
  const onDisk = readReport(path.join(dir, 'report.json'));
  assert.deepEqual(onDisk, report);
  assert.deepEqual(report.models.map((m) => [m.id, m.sparsity, m.hidden_size]), [['synth', 0, 64], ['synth-sliced-0.25', 0.25, 48], ['synth-sliced-0.5', 0.5, 32]]);
  assert.deepEqual(report.runs.map((r) => `${r.concurrency}:${r.model}:${r.requests}:${r.errors}`), [
    '1:synth:2:0', '1:synth-sliced-0.25:2:0', '1:synth-sliced-0.5:2:0', '2:synth:2:0', '2:synth-sliced-0.25:2:0', '2:synth-sliced-0.5:2:0',
  ]);
  assert.ok(report.runs.every((r) => r.output_tokens === 10 && r.output_tokens_per_s > 0 && r.ttft_s && r.tpot_s && r.itl_s && r.e2e_s));
  assert.equal(report.speedup.length, 4);
  assert.ok(report.speedup.every((s) => s.theoretical > 1 && s.measured !== null));
  assert.equal(report.machine.read_bandwidth_bytes_per_s, null);
  assert.ok(report.load_generator_cpu_s! > 0 && report.load_generator_cpu_s! < 60);
  // warm-up: 2 short requests per model (max concurrency), then 2 requests per model per level
  assert.equal(server.received.length, 3 * 2 + 3 * 2 * 2);
  assert.ok(server.received.slice(6).every((r) => r.max_tokens === 5 && (r.prompt as number[]).length === 12));
  const md = fs.readFileSync(path.join(dir, 'report.md'), 'utf8');
  for (const s of ['## Expected vs measured speedup', 'llama.cpp server', '![Throughput, TTFT and TPOT', 'stories260K', 'npm run bench -- --url']) assert.ok(md.includes(s), s);
  const svg = fs.readFileSync(path.join(dir, 'chart.svg'), 'utf8');
  assert.match(svg, /^<svg[^>]*xmlns="http:\/\/www.w3.org\/2000\/svg"/);
  assert.match(svg, /Output throughput/);
  assert.equal(fs.realpathSync(path.join(tmp, 'reports', 'latest')), fs.realpathSync(dir));
  assert.equal(fs.readFileSync(path.join(dir, 'requests.jsonl'), 'utf8').trim().split('\n').length, 12);

  const written = await writeBenchmarksMd(path.join(tmp, 'reports', 'latest', 'report.json'), tmp);
  assert.deepEqual(written.map((f) => path.relative(tmp, f)), ['BENCHMARKS.md', path.join('loadtests', 'benchmarks-chart.svg'), path.join('loadtests', 'benchmarks-report.json')]);
  const benchmarks = fs.readFileSync(path.join(tmp, 'BENCHMARKS.md'), 'utf8');
  assert.match(benchmarks, /^# SliceServe benchmarks/);
  assert.deepEqual(readReport(path.join(tmp, 'loadtests', 'benchmarks-report.json')), report);
  // regenerating from the committed copy gives the same document
  await writeBenchmarksMd(path.join(tmp, 'loadtests', 'benchmarks-report.json'), tmp);
  assert.equal(fs.readFileSync(path.join(tmp, 'BENCHMARKS.md'), 'utf8'), benchmarks);
});

test('readReport rejects a file that is not a report', () => {
  const f = path.join(tmp, 'bad.json');
  fs.writeFileSync(f, '{"runs": []}');
  assert.throws(() => readReport(f), /not a SliceServe load-test report/);
  assert.throws(() => readReport(path.join(tmp, 'missing.json')), /run `npm run bench` first/);
});

test('buildReport with measured peers: their rows in runs (peer: true), peers[] from them, tables, targets and chart', () => {
  const peerInfo = { n_vocab: 32000, n_params: 4_000_000, size_bytes: 8_000_000, n_embd: 64, ftype: 'Q8_0' };
  const result: RunResult = {
    blocks: [
      { block: { concurrency: 1, level: 0, round: 0, model: 'synth' }, records: [rec('synth', 1, 0.02), rec('synth', 1, 0.04)], wall_s: 2 },
      { block: { concurrency: 1, level: 0, round: 0, model: 'synth-sliced-0.5' }, records: [rec('synth-sliced-0.5', 1, 0.01)], wall_s: 0.5 },
      { block: { concurrency: 1, level: 0, round: 0, model: 'llamacpp-q8_0' }, records: [rec('llamacpp-q8_0', 1, 0.025), rec('llamacpp-q8_0', 1, 0.025)], wall_s: 1 },
      { block: { concurrency: 1, level: 0, round: 0, model: 'gone' }, records: [rec('gone', 1, 0, false), rec('gone', 1, 0, false)], wall_s: 0.01 },
      { block: { concurrency: 4, level: 1, round: 0, model: 'llamacpp-q8_0' }, records: [rec('llamacpp-q8_0', 4, 0.05)], wall_s: 0.4 },
      { block: { concurrency: 4, level: 1, round: 0, model: 'synth' }, records: [rec('synth', 4, 0.05)], wall_s: 0.5 },
    ],
    skipped: [],
    wall_s: 4.4,
  };
  const ctx: ReportContext = {
    ...context(),
    peers: [
      { name: 'llamacpp-q8_0', url: 'http://127.0.0.1:8081', model: 'gguf/bench-q8_0.gguf', info: peerInfo, startError: null },
      { name: 'gone', url: 'http://127.0.0.1:9', model: 'gone', info: null, startError: 'not reachable: fetch failed (ECONNREFUSED)' },
    ],
  };
  const report = buildReport(result, ctx);
  assert.ok(ReportSchema.safeParse(report).success);
  assert.deepEqual(report.runs.map((r) => `${r.concurrency}:${r.model}:${r.peer === true ? 'peer' : 'ours'}:${r.requests}:${r.errors}`), [
    '1:synth:ours:2:0', '1:synth-sliced-0.5:ours:1:0', '1:llamacpp-q8_0:peer:2:0', '1:gone:peer:2:2', '4:synth:ours:1:0', '4:llamacpp-q8_0:peer:1:0',
  ]);
  const q8 = report.runs.find((r) => r.model === 'llamacpp-q8_0' && r.concurrency === 1)!;
  assert.deepEqual([q8.sparsity, q8.output_tokens_per_s], [0, 8]); // 8 tokens / 1 s
  assert.deepEqual(report.speedup.map((x) => [x.model, x.concurrency]), [['synth-sliced-0.5', 1]], 'speedups compare our sliced model with our dense one only');
  assert.deepEqual(report.decode_batch1.map((d) => d.model), ['synth', 'synth-sliced-0.5']);
  const [p, gone] = report.peers;
  assert.deepEqual([p.name, p.measured, p.url, p.model, p.output_tokens_per_s, p.start_error], ['llamacpp-q8_0', true, 'http://127.0.0.1:8081', 'gguf/bench-q8_0.gguf', { '1': 8, '4': 10 }, null]);
  assert.ok(Math.abs(p.decode_batch1_tokens_per_s! - 40) < 1e-9, '1 / p50 TPOT at concurrency 1');
  assert.equal(p.weight_bytes_per_token_estimate, 8_000_000 * (1 - (32000 * 64) / 4_000_000));
  assert.deepEqual([gone.measured, gone.output_tokens_per_s, gone.decode_batch1_tokens_per_s, gone.start_error], [true, { '1': 0 }, null, 'not reachable: fetch failed (ECONNREFUSED)']);
  assert.ok(!report.peers.some((x) => x.name === LLAMA_CPP_PEER.name), "issue 5's static figures are dropped when peers were measured");

  const md = renderMarkdown(report, { title: 't', chartPath: 'c.svg' });
  assert.match(md, /## Against the peers \(measured in this run\)/);
  assert.match(md, /\| concurrency \| llamacpp-q8_0 \(peer\) \| gone \(peer\) \| dense \| sliced 50 % \|/);
  assert.match(md, /\| 1 \| 8\.0 \| 0\.0 \| 4\.0 \(0\.50x\) \| 8\.0 \(1\.00x\) \|/);
  assert.match(md, /\| 4 \| 10\.0 \| – \| 8\.0 \(0\.80x\) \| – \|/);
  assert.match(md, /\| batch-1 decode \(1 \/ p50 TPOT\) \| 40\.0 \| – \| 33\.3 \(0\.83x\) \| 100\.0 \(2\.50x\) \|/);
  assert.match(md, /at start: not reachable: fetch failed \(ECONNREFUSED\)/);
  // the peers' rows are in the same throughput, latency and error tables as ours
  assert.match(md, /\| llamacpp-q8_0 \(peer\) \| 1 \| 2 \| 0 \(0 %\) \| 2\.00 \| 8\.0 \|/);
  assert.match(md, /\| llamacpp-q8_0 \(peer\) \| 1 \| 100\.0 \| 100\.0 \| 100\.0 \| 100\.0 \| 25\.0 \| 25\.0 \| 25\.0 \| 25\.0 \|/);
  assert.match(md, /- gone \(peer\) at concurrency 1: 2 of 2 failed: `HTTP 500: boom`/);
  assert.match(md, /- dense does not trail peer `llamacpp-q8_0` \(measured in this run\) \(c=1: 4\.0 vs 8\.0; c=4: 8\.0 vs 10\.0 tok\/s\): \*\*not met\*\*/);
  assert.match(md, /- sliced 50 % beats peer `llamacpp-q8_0` \(measured in this run\) \(c=1: 8\.0 vs 8\.0 tok\/s\): \*\*not met\*\*/);
  assert.doesNotMatch(md, /trail peer `gone`|beats peer `gone`/, 'a peer that served nothing is compared with nothing');
  assert.match(md, /- No failed request: 0 of 4 failed, \*\*met\*\*/, "the peer's failures are not ours");
  assert.ok(md.includes('| llamacpp-q8_0 (peer) | 10.0 |  |  |  |  |  | 0 / 1 |'), 'the headline (concurrency 4) has the peer with its errors');
  const headline = md.slice(md.indexOf('## Headline'), md.indexOf('Targets (issue 5)'));
  assert.equal(headline.split('llamacpp-q8_0 (peer)').length - 1, 1, 'once, not also as a model without a speedup');
  // batch-1 vs bandwidth: the peer's row with its estimated bytes (8 MB * (1 - 2.048 M / 4 M) = 3.904 MB; 20 GB/s -> 5123 tok/s)
  assert.match(md, /\| llamacpp-q8_0 \(peer\) \| ~3\.9 MB \(model less embeddings\) \| 5123\.0 \| 40\.0 \| 1 % \|/);
  assert.doesNotMatch(md, /issue 5, not this run/);

  const spec = JSON.stringify(chartSpec(report));
  assert.match(spec, /"llamacpp-q8_0 \(peer\)"/);
  assert.doesNotMatch(spec, /llama\.cpp server \(peer\)/, 'no static line next to measured peers');
});

test('without --peer the static llama.cpp figures stay, marked as not from this run', () => {
  const result: RunResult = { blocks: [{ block: { concurrency: 1, level: 0, round: 0, model: 'synth' }, records: [rec('synth', 1, 0.02)], wall_s: 1 }], skipped: [], wall_s: 1 };
  const report = buildReport(result, context());
  assert.deepEqual(report.peers, [LLAMA_CPP_PEER]);
  assert.equal(report.peers[0].measured, false);
  const md = renderMarkdown(report, { title: 't', chartPath: 'c.svg' });
  assert.match(md, /## Against the peer \(llama\.cpp server\)/);
  assert.match(md, /Peer figures: issue 5: measured earlier on this machine kind .*not in this run \(pass --peer NAME=URL to measure one side by side\)/);
  assert.match(md, /dense does not trail llama\.cpp \(issue 5's figures, not this run\)/);
  assert.match(md, /no peer measured in this run/);
});

test('runBench --url with --peer: a llama.cpp-style peer and a dead one are measured interleaved; the dead one is errors, not a crash', async () => {
  const llama = await startFakeServer({ models: [{ id: 'gguf/bench-q8_0.gguf' }], style: 'llamacpp', meta: { n_vocab: 32000, n_params: 4_200_000, size: 5_000_000, n_embd: 64, ftype: 'Q8_0' } });
  const deadPort = await (await import('../../loadtests/server-process.js')).freePort();
  try {
    const argv = ['--url', server.url, '--model', path.join(tmp, 'synth'), '--sparsities', '0.5', '--concurrency', '1,2', '--requests', '2', '--output-tokens', '5', '--prompt-tokens', '12', '--no-bandwidth', '--out', path.join(tmp, 'reports-peer'), '--peer', `llamacpp-q8_0=${llama.url}/v1`, '--peer', `down=http://127.0.0.1:${deadPort}`];
    const cmd = addBenchOptions(new Command()).exitOverride();
    cmd.parse(argv, { from: 'user' });
    const logs: string[] = [];
    const progress = (): Progress => ({ log: (m) => logs.push(m), stop: () => undefined });
    server.received.length = 0;
    const { dir, report } = await runBench(resolveBenchOptions(cmd.opts(), argv), new AbortController().signal, progress);
    assert.ok(logs.some((l) => /^\[bench\] peer down \(http:\/\/127\.0\.0\.1:\d+\): not reachable: .*ECONNREFUSED/.test(l)), logs.join('\n'));
    assert.ok(logs.some((l) => l === `[bench] peer llamacpp-q8_0: ${llama.url}, model gguf/bench-q8_0.gguf`), logs.join('\n'));
    assert.deepEqual(report.runs.map((r) => `${r.concurrency}:${r.model}:${r.requests}:${r.errors}`), [
      '1:synth:2:0', '1:synth-sliced-0.5:2:0', '1:llamacpp-q8_0:2:0', '1:down:2:2', '2:synth:2:0', '2:synth-sliced-0.5:2:0', '2:llamacpp-q8_0:2:0', '2:down:2:2',
    ]);
    // warm-up (2 per model, max concurrency) + 2 per level: the peer saw as many requests as each of our models, with the same prompts
    assert.equal(llama.received.length, 2 + 2 * 2);
    assert.deepEqual(llama.received.map((r) => JSON.stringify(r.prompt)), server.received.filter((r) => r.model === 'synth').map((r) => JSON.stringify(r.prompt)));
    assert.ok(llama.received.every((r) => r.model === 'gguf/bench-q8_0.gguf' && r.max_tokens === 5 && r.ignore_eos === true && r.stream === true));
    const q8 = report.runs.find((r) => r.model === 'llamacpp-q8_0')!;
    assert.ok(q8.peer === true && q8.output_tokens === 10 && q8.itl_s!.n === 8, 'usage counted, closing chunk not an ITL');
    assert.deepEqual(report.peers.map((p) => [p.name, p.measured, p.model]), [['llamacpp-q8_0', true, 'gguf/bench-q8_0.gguf'], ['down', true, 'down']]);
    assert.ok(report.notes.some((n) => n.startsWith('Peer `llamacpp-q8_0` was measured in this run at ' + llama.url)));
    assert.deepEqual(readReport(path.join(dir, 'report.json')), report);
    const md = fs.readFileSync(path.join(dir, 'report.md'), 'utf8');
    assert.match(md, /- down \(peer\) at concurrency 1: 2 of 2 failed: `request failed: .*ECONNREFUSED/);
    assert.match(fs.readFileSync(path.join(dir, 'chart.svg'), 'utf8'), /llamacpp-q8_0 \(peer\)/);

    // a peer named like one of our models is refused before measuring
    const clash = ['--url', server.url, '--model', path.join(tmp, 'synth'), '--concurrency', '1', '--requests', '1', '--no-bandwidth', '--no-warmup', '--out', path.join(tmp, 'reports-peer'), '--peer', `synth=${llama.url}`];
    const cmd2 = addBenchOptions(new Command()).exitOverride();
    cmd2.parse(clash, { from: 'user' });
    await assert.rejects(runBench(resolveBenchOptions(cmd2.opts(), clash), new AbortController().signal, quiet), /--peer synth: that name is also a model served by SliceServe/);
  } finally {
    await llama.close();
  }
});
