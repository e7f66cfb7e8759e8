/**
 * The load generator: starts the server (or targets --url), measures dense and every sliced
 * variant interleaved over a concurrency sweep, and writes the report
 * (loadtests/reports/<timestamp>/report.json, report.md, chart.svg, requests.jsonl,
 * server.log; latest/ points at the newest). The server is always stopped, even on Ctrl-C
 * or an error.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { hugePageStatus, withMallocHugePages } from '../runtime/huge-pages.js';
import { measureReadBandwidth } from './bandwidth.js';
import { renderChartSvg } from './chart.js';
import { streamCompletion } from './client.js';
import { gitCommit, hugePagesEntry, machineInfo } from './machine.js';
import { renderMarkdown } from './markdown.js';
import { hasModels, modelEntries, offeredPrecisions, readDenseShape, selectModels } from './models.js';
import { defaultRequests, type BenchOptions } from './options.js';
import { peerWarnings, probePeer, type Peer } from './peers.js';
import { createProgress, type Progress } from './progress.js';
import { makePrompt } from './prompts.js';
import { buildReport, type Report } from './report.js';
import { runPlan, targetOf, type Target } from './runner.js';
import { ServerProcess, freePort, waitForServer } from './server-process.js';
import { ensureSynthModel } from './synth-cache.js';

/** The repository root (this file is dist/loadtests/bench.js once compiled). */
export const REPO_ROOT = path.resolve(__dirname, '..', '..');

/** A folder name for a run: UTC time, sortable, e.g. `2026-11-29T183005Z`. */
export function runFolderName(d: Date): string {
  return d.toISOString().replace(/\.\d+Z$/, 'Z').replace(/:/g, '');
}

/**
 * Writes a report's files into `dir` and points `<root>/latest` at it (a relative symlink;
 * a copy where symlinks are not allowed).
 */
export async function writeReportFiles(report: Report, dir: string, root: string): Promise<void> {
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'report.json'), JSON.stringify(report, null, 2) + '\n');
  fs.writeFileSync(path.join(dir, 'chart.svg'), await renderChartSvg(report));
  fs.writeFileSync(path.join(dir, 'report.md'), renderMarkdown(report, { title: `SliceServe load test, ${report.created.slice(0, 16).replace('T', ' ')} UTC`, chartPath: 'chart.svg' }));
  const latest = path.join(root, 'latest');
  fs.rmSync(latest, { recursive: true, force: true });
  try {
    fs.symlinkSync(path.relative(root, dir), latest, 'dir');
  } catch {
    fs.cpSync(dir, latest, { recursive: true });
  }
}

async function warmUp(baseUrl: string, models: string[], targets: Record<string, Target>, concurrency: number, opts: BenchOptions, vocabSize: number, bos: number | null, signal: AbortSignal): Promise<string[]> {
  const errors: string[] = [];
  for (const model of models) {
    const t = targetOf({ baseUrl, targets, apiKey: opts.apiKey ?? undefined }, model);
    const records = await Promise.all(
      Array.from({ length: concurrency }, (_, i) =>
        streamCompletion(
          { model: t.model, prompt: makePrompt(900_000_000 + i, { promptTokens: opts.promptTokens, vocabSize, bosTokenId: bos, seed: opts.seed }), max_tokens: opts.outputTokens, temperature: opts.temperature, ignore_eos: true },
          { baseUrl: t.baseUrl, timeoutS: opts.timeoutS, signal, apiKey: t.apiKey, concurrency },
        ),
      ),
    );
    for (const r of records) if (!r.ok) errors.push(`${model}: ${r.error}`);
  }
  return errors;
}

/** The report's note about each peer (or about the static figures when none was measured). */
export function peerNotes(peers: readonly Peer[]): string[] {
  if (peers.length === 0) {
    return ['No `--peer` was given: the llama.cpp figures are issue 5\'s (f32, 2 threads, measured earlier on this machine kind), not measured in this run, so they are not comparable the way the rows of one run are. `--peer NAME=URL` measures a running llama-server (or any OpenAI-compatible server) interleaved with our models.'];
  }
  return peers.map((p) => {
    const info = p.info;
    const what = info
      ? [info.n_params != null ? `${(info.n_params / 1e6).toFixed(1)} M parameters` : null, info.size_bytes != null ? `weights ${(info.size_bytes / 2 ** 20).toFixed(1)} MiB` : null, info.n_vocab != null ? `vocabulary ${info.n_vocab}` : null, info.ftype != null ? `type ${info.ftype}` : null].filter((x) => x !== null).join(', ')
      : 'no model details reported';
    return `Peer \`${p.name}\` was measured in this run at ${p.url}, model \`${p.model}\` (${what}), interleaved with our models and sent the same requests (token-id prompts, \`max_tokens\`, \`ignore_eos\`, temperature, streaming with \`stream_options.include_usage\`; output tokens from its \`usage.completion_tokens\`). Its threads and slots are whatever it was started with; its name should say them.${p.startError ? ` At start: ${p.startError}.` : ''}`;
  });
}

/** Notes printed in every report. */
function reportNotes(opts: BenchOptions, synthetic: boolean, sliced: boolean, peers: readonly Peer[], quantized = false): string[] {
  const notes: string[] = [];
  if (quantized) {
    notes.push(
      'Quantized models (`serve --quantize`): every linear layer, shortcut matrix and the head are onnxruntime `MatMulNBits` weights (int8: 8 bits, blocks of 128; int4: 4 bits, blocks of 32 with the head and shortcuts at int8; asymmetric; accuracy_level 4: activations quantized to int8 per block inside the matmul); the embedding stays float32; slices were turned by a seeded random orthogonal residual rotation before quantizing. Weight bytes per token count codes, float32 scales and zero points (docs/quantization.md). Their quality is measured on stories260K (README perplexity table), not here.',
    );
  }
  if (synthetic) {
    notes.push(
      `The model is synthetic (\`sliceserve synth --preset ${opts.preset} --seed ${opts.seed}\`: a real model's shape, seeded random weights, the family's real tokenizer). Serving speed does not depend on weight values, so it measures what a trained model of this shape would; its text is gibberish.`,
    );
  }
  if (sliced) {
    notes.push(
      `Quality figures (perplexity) come from stories260K only (see the slicer's evaluation); ${opts.url ? 'the served model was sliced by the server as configured' : `this model was sliced with only ${opts.calWindows} calibration windows, enough for speed and meaningless for quality`}.`,
    );
  }
  notes.push(
    'Each block is a closed loop: `concurrency` clients each send the next request as soon as their previous one ends. Throughput = output tokens of successful requests / summed block wall time (first send to last [DONE]).',
    'Prefix caching is defeated: every prompt is BOS + random token ids, different for every request (the same set for every model at a given level and round).',
    'Expected speedups count matmul FLOPs only; attention scores (q k^T, softmax v) grow with the context and are not counted (< 1 % here).',
  );
  if (opts.warmup) notes.push('Before measuring, every model served one warm-up wave of the measured request shape at the largest concurrency (so its KV buffers, onnxruntime arenas and JIT-compiled paths are as in steady state), not recorded.');
  if (opts.quick) notes.push('Quick run (--quick): few requests per level and one round, so figures are indicative (expect +-15 % between runs); use the full run for BENCHMARKS.md.');
  notes.push(...peerNotes(peers));
  return notes;
}

/**
 * Runs a benchmark with `opts` and writes its report.
 *
 * @param signal aborts the run (Ctrl-C): blocks stop, the server is stopped, a partial report is written.
 * @returns the run folder and the report.
 * @throws Error when the model, the server or the run fails; the server is stopped first.
 */
export async function runBench(
  opts: BenchOptions,
  signal: AbortSignal,
  makeProgress: (totalRequests: number | null) => Progress = (n) => createProgress(n),
): Promise<{ dir: string; report: Report }> {
  let progress: Progress = makeProgress(null);
  const created = new Date();
  const root = path.resolve(opts.out);
  const dir = path.join(root, runFolderName(created));
  fs.mkdirSync(dir, { recursive: true });
  let modelDir = opts.model ? path.resolve(opts.model) : null;
  const synthetic = modelDir === null;
  if (modelDir === null && opts.url === null) {
    modelDir = ensureSynthModel(opts.preset, path.resolve(opts.cacheDir), opts.seed, (m) => progress.log(m));
  }
  const shape = modelDir ? readDenseShape(modelDir) : null;
  if (!shape) throw new Error('with --url, also pass --model <dir> (the dense model directory) so the report can count FLOPs from its config.json');

  // Peers are asked first, so that one that is down is reported before minutes of slicing.
  let peers = await Promise.all(opts.peers.map((p) => probePeer(p)));
  for (const p of peers) if (p.startError) progress.log(`[bench] peer ${p.name} (${p.url}): ${p.startError} (asked again before measuring)`);

  const machine = machineInfo(opts.device ?? 'cpu');
  if (opts.bandwidth) {
    const threads = opts.bandwidthThreads ?? machine.cores;
    progress.log(`[bench] measuring memory read bandwidth (${threads} threads)...`);
    const bw = await measureReadBandwidth(threads);
    machine.read_bandwidth_bytes_per_s = bw.read_bytes_per_s;
    machine.read_bandwidth_method = bw.method;
    progress.log(`[bench] read bandwidth ${(bw.read_bytes_per_s / 1e9).toFixed(1)} GB/s`);
  }

  let server: ServerProcess | null = null;
  try {
    let baseUrl = opts.url;
    const denseId = opts.url ? opts.denseId : null;
    const maxC = Math.max(...opts.concurrency);
    if (baseUrl === null) {
      const port = await freePort();
      baseUrl = `http://127.0.0.1:${port}`;
      const args = [path.join(REPO_ROOT, 'bin', 'sliceserve.js'), 'serve', '--model', modelDir!];
      for (const s of opts.sparsities) args.push('--sparsity', String(s));
      args.push('--quantize', (opts.precisions ?? ['none', 'int8', 'int4']).join(','));
      if (opts.calibration) args.push('--calibration', path.resolve(opts.calibration));
      // --held-out-windows 0: the held-out perplexity of random weights means nothing and costs startup time.
      args.push('--cal-windows', String(opts.calWindows), '--held-out-windows', '0', '--max-batch-size', String(opts.maxBatchSize ?? maxC));
      if (opts.device) args.push('--device', opts.device);
      args.push('--port', String(port), '--host', '127.0.0.1', ...opts.serverArgs);
      const base = opts.hugePages ? withMallocHugePages(process.env) : process.env;
      const env = { ...base, ...(opts.apiKey ? { SLICESERVE_API_KEY: opts.apiKey } : {}) };
      machine.huge_pages = hugePagesEntry(hugePageStatus(env));
      progress.log(`[bench] starting: node ${args.map((a) => path.relative(REPO_ROOT, a).startsWith('..') ? a : path.relative(REPO_ROOT, a) || a).join(' ')}`);
      server = ServerProcess.start(process.execPath, args, { cwd: REPO_ROOT, logFile: path.join(dir, 'server.log'), env });
    }
    const t0 = performance.now();
    // With --url and no --quantize: whatever precisions the server serves (at least one).
    const wanted = opts.precisions ?? (opts.url ? null : ['none', 'int8', 'int4']);
    progress.log(`[bench] waiting for ${baseUrl} to serve the dense model and sparsities ${opts.sparsities.join(', ')}${wanted ? ` at ${wanted.join(', ')}` : ''} (slicing and quantizing happen at start-up)...`);
    const s = server;
    const ready = (c: Parameters<typeof hasModels>[0]) => (wanted ? hasModels(c, denseId, opts.sparsities, wanted) : offeredPrecisions(c, denseId, opts.sparsities).length > 0);
    const cards = await waitForServer(baseUrl, ready, opts.url ? 30 : opts.serverTimeoutS, {
      apiKey: opts.apiKey ?? undefined,
      alive: s ? () => s.failure() : undefined,
      signal,
    });
    progress.log(`[bench] server ready after ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    const sel = selectModels(cards, denseId, opts.sparsities, wanted ?? offeredPrecisions(cards, denseId, opts.sparsities));
    const entries = modelEntries(sel, shape);
    const vocabSize = shape.vocab_size;
    // a peer that was down at start gets one more chance (it may have finished loading meanwhile)
    peers = await Promise.all(peers.map((p) => (p.startError ? probePeer(p) : p)));
    for (const line of peerWarnings(peers, entries.map((e) => e.id), vocabSize)) progress.log(`[bench] ${line}`);
    for (const p of peers.filter((x) => !x.startError)) progress.log(`[bench] peer ${p.name}: ${p.url}, model ${p.model}`);
    const targets: Record<string, Target> = Object.fromEntries(peers.map((p) => [p.name, { baseUrl: p.url, model: p.model }]));
    const ids = [...entries.map((e) => e.id), ...peers.map((p) => p.name)];

    if (opts.warmup) {
      progress.log(`[bench] warm-up: ${maxC} requests of the measured shape per model${peers.length > 0 ? ' and peer' : ''} (not recorded)`);
      const errs = await warmUp(baseUrl, ids, targets, maxC, opts, vocabSize, shape.bos_token_id, signal);
      if (errs.length > 0) progress.log(`[bench] warm-up errors (${errs.length}): ${errs.slice(0, 3).join('; ')}`);
    }

    const requestsPerLevel = opts.durationS === null ? (c: number) => opts.requests ?? defaultRequests(c, opts.quick) : undefined;
    const total = requestsPerLevel ? opts.concurrency.reduce((sum, c) => sum + requestsPerLevel(c) * ids.length, 0) : null;
    progress.stop();
    progress = makeProgress(total);
    const cpu0 = process.cpuUsage();
    const result = await runPlan(
      {
        baseUrl,
        models: ids,
        targets,
        concurrencies: opts.concurrency,
        rounds: opts.rounds,
        requestsPerLevel,
        durationS: opts.durationS ?? undefined,
        promptTokens: opts.promptTokens,
        outputTokens: opts.outputTokens,
        temperature: opts.temperature,
        seed: opts.seed,
        vocabSize,
        bosTokenId: shape.bos_token_id,
        timeoutS: opts.timeoutS,
        deadlineMs: performance.now() + opts.maxTimeS * 1000,
        apiKey: opts.apiKey ?? undefined,
        signal,
      },
      progress,
    );
    progress.stop();
    const cpu = process.cpuUsage(cpu0);
    fs.writeFileSync(path.join(dir, 'requests.jsonl'), result.blocks.flatMap((b) => b.records.map((r) => JSON.stringify({ ...r, round: b.block.round }))).join('\n') + '\n');

    machine.load_average_end = os.loadavg();
    const config = modelDir ? (JSON.parse(fs.readFileSync(path.join(modelDir, 'config.json'), 'utf8')) as Record<string, unknown>) : null;
    const { command, ...optionValues } = opts;
    const report = buildReport(result, {
      created,
      gitCommit: gitCommit(REPO_ROOT),
      model: { dir: modelDir ? path.relative(REPO_ROOT, modelDir) || modelDir : null, preset: synthetic ? opts.preset : null, synthetic, config },
      requestShape: {
        prompt_tokens: opts.promptTokens,
        output_tokens: opts.outputTokens,
        ignore_eos: true,
        stream: true,
        temperature: opts.temperature,
        prefix_caching: 'defeated (random token-id prompts, unique per request)',
      },
      options: { ...optionValues, command, interrupted: signal.aborted },
      machine,
      models: entries,
      notes: reportNotes(opts, synthetic, entries.some((e) => e.sparsity > 0), peers, entries.some((e) => e.precision !== undefined && e.precision !== 'none')),
      loadGeneratorCpuS: (cpu.user + cpu.system) / 1e6,
      peers,
    });
    await writeReportFiles(report, dir, root);
    return { dir, report };
  } finally {
    progress.stop();
    if (server) {
      process.stderr.write('[bench] stopping the server\n');
      await server.stop();
    }
  }
}
