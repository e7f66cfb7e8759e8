/**
 * What a long prompt costs the requests already decoding, at each prefill budget
 * (`serve --max-batch-prefill-tokens`, chunked prefill: engine/scheduler.ts):
 *
 *   npm run bench:prefill -- --preset bench-110m --budgets 0,512,128 --decoders 8 --long-tokens 1536
 *
 * One `sliceserve serve --dense-only` per budget, all started first and measured in
 * interleaved rounds (one budget at a time, so they never share the cores). In each block,
 * `--decoders` streams of short prompts run closed-loop while a long prompt (`--long-tokens`
 * tokens, 8 outputs) arrives every `--long-every` seconds. Reported per budget: the decoders'
 * inter-token latency (ITL p50 / p99 / max: a whole prefill stalls every decoder for its
 * duration, a chunk for one chunk), their TPOT, the long requests' TTFT (what chunking costs
 * them) and output tokens per second. Prints a markdown table; writes
 * `loadtests/reports/prefill-<time>.json`.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Command } from 'commander';
import { streamCompletion, type RequestRecord } from './client.js';
import { intArg } from './options.js';
import { makePrompt } from './prompts.js';
import { ServerProcess, freePort, waitForServer } from './server-process.js';
import { summarize } from './stats.js';
import { ensureSynthModel } from './synth-cache.js';

interface Options {
  model?: string;
  preset: string;
  budgets: number[];
  decoders: number;
  shortTokens: number;
  outputTokens: number;
  longTokens: number;
  longEvery: number;
  duration: number;
  rounds: number;
  quantize: string;
  threads: number;
  out: string;
}

/** One budget's server. */
interface Target {
  budget: number;
  server: ServerProcess;
  baseUrl: string;
  model: string;
  records: { decode: RequestRecord[]; long: RequestRecord[] };
  seconds: number;
}

const ROOT = path.resolve(__dirname, '..', '..');

/** The model facts the prompts need (config.json). */
interface PromptModel {
  vocab_size: number;
  bos_token_id?: number | null;
}

/**
 * Runs one block against `t`: closed-loop decoders plus a long prompt every `longEvery` s. The
 * prompts are the load test's (prompts.ts), request i of the block from seed `seed`.
 */
async function block(t: Target, o: Options, model: PromptModel, seed: number): Promise<void> {
  const until = performance.now() + o.duration * 1000;
  const common = { baseUrl: t.baseUrl, timeoutS: 600, concurrency: o.decoders };
  const body = (ids: number[], maxTokens: number) => ({ model: t.model, prompt: ids, max_tokens: maxTokens, temperature: 0, ignore_eos: true });
  let n = 0;
  const prompt = (promptTokens: number) => makePrompt(n++, { promptTokens, vocabSize: model.vocab_size, bosTokenId: model.bos_token_id ?? null, seed });
  const decoder = async () => {
    while (performance.now() < until) t.records.decode.push(await streamCompletion(body(prompt(o.shortTokens), o.outputTokens), common));
  };
  const longs: Promise<void>[] = [];
  const timer = setInterval(() => {
    if (performance.now() < until) longs.push(streamCompletion(body(prompt(o.longTokens), 8), common).then((r) => void t.records.long.push(r)));
  }, o.longEvery * 1000);
  const start = performance.now();
  await Promise.all(Array.from({ length: o.decoders }, decoder));
  clearInterval(timer);
  await Promise.all(longs);
  t.seconds += (performance.now() - start) / 1000;
}

const ms = (s: number | undefined) => (s === undefined ? '-' : (s * 1000).toFixed(1));

async function main(): Promise<void> {
  const program = new Command('prefill-stall')
    .option('--model <dir>', 'Hugging Face model directory (default: the synthetic --preset)')
    .option('--preset <name>', 'synthetic model preset', 'bench-110m')
    .option('--budgets <list>', 'values of --max-batch-prefill-tokens (0 = whole prompts)', (v) => v.split(',').map((x) => intArg('--budgets', 0)(x.trim())), [0, 512, 256, 128])
    .option('--decoders <n>', 'streams decoding all the time', intArg('--decoders', 1), 8)
    .option('--short-tokens <n>', 'prompt tokens of a decoder request', intArg('--short-tokens', 1), 32)
    .option('--output-tokens <n>', 'output tokens of a decoder request', intArg('--output-tokens', 2), 128)
    .option('--long-tokens <n>', 'prompt tokens of a long request', intArg('--long-tokens', 1), 1536)
    .option('--long-every <s>', 'seconds between two long requests', intArg('--long-every', 1), 4)
    .option('--duration <s>', 'seconds per block', intArg('--duration', 1), 30)
    .option('--rounds <n>', 'blocks per budget (interleaved)', intArg('--rounds', 1), 2)
    .option('--quantize <p>', 'none | int8 | int4', 'none')
    .option('--threads <n>', 'onnxruntime threads of each server', intArg('--threads', 1), 2)
    .option('--out <dir>', 'report folder', path.join(ROOT, 'loadtests', 'reports'));
  program.parse();
  const o = program.opts<Options>();
  const dir = o.model ? path.resolve(o.model) : ensureSynthModel(o.preset, path.join(ROOT, '.cache', 'synth'), 0, console.log);
  const config = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')) as PromptModel & { max_position_embeddings: number };
  if (o.longTokens + 8 > config.max_position_embeddings) throw new Error(`--long-tokens ${o.longTokens} + 8 outputs exceed the context ${config.max_position_embeddings}; lower --long-tokens`);
  fs.mkdirSync(o.out, { recursive: true });
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const targets: Target[] = [];
  try {
    for (const budget of o.budgets) {
      const port = await freePort();
      const logFile = path.join(o.out, `prefill-${stamp}-server-${budget}.log`);
      const args = [path.join(ROOT, 'bin', 'sliceserve.js'), 'serve', '--dense-only', '--model', dir, '--port', String(port), '--threads', String(o.threads), '--held-out-windows', '0', '--quantize', o.quantize, '--max-batch-prefill-tokens', String(budget), '--log-level', 'warn'];
      const server = ServerProcess.start(process.execPath, args, { cwd: ROOT, logFile });
      targets.push({ budget, server, baseUrl: `http://127.0.0.1:${port}`, model: '', records: { decode: [], long: [] }, seconds: 0 });
    }
    for (const t of targets) {
      const models = await waitForServer(t.baseUrl, (m) => m.length > 0, 900, { alive: () => t.server.failure() });
      t.model = models[0].id;
      console.log(`[prefill] budget ${t.budget}: ${t.model} ready at ${t.baseUrl}`);
    }
    for (let r = 0; r < o.rounds; r++) {
      for (const t of targets) {
        await block(t, o, config, r);
        console.log(`[prefill] round ${r + 1}, budget ${t.budget}: ${t.records.decode.length} decoder and ${t.records.long.length} long requests so far`);
      }
    }
  } finally {
    await Promise.all(targets.map((t) => t.server.stop()));
  }
  const rows = targets.map((t) => {
    const ok = (rs: RequestRecord[]) => rs.filter((x) => x.ok);
    const itl = summarize(ok(t.records.decode).flatMap((x) => x.itl_s));
    const tpot = summarize(ok(t.records.decode).flatMap((x) => (x.tpot_s === null ? [] : [x.tpot_s])));
    const ttft = summarize(ok(t.records.long).flatMap((x) => (x.ttft_s === null ? [] : [x.ttft_s])));
    const tokens = [...t.records.decode, ...t.records.long].reduce((s, x) => s + x.output_tokens, 0);
    const failed = [...t.records.decode, ...t.records.long].filter((x) => !x.ok).length;
    return { budget: t.budget, itl, tpot, ttft, outputTokPerS: tokens / t.seconds, decodeRequests: t.records.decode.length, longRequests: t.records.long.length, failed };
  });
  const file = path.join(o.out, `prefill-${stamp}.json`);
  fs.writeFileSync(file, JSON.stringify({ options: o, model: dir, rows }, null, 2));
  console.log(`\n${o.decoders} decoders (${o.shortTokens}-token prompts, ${o.outputTokens} outputs), a ${o.longTokens}-token prompt every ${o.longEvery} s; ${o.rounds} x ${o.duration} s per budget\n`);
  console.log('| --max-batch-prefill-tokens | decode ITL p50 ms | p99 ms | max ms | decode TPOT p50 ms | long TTFT p50 ms | max ms | output tok/s | requests (failed) |');
  console.log('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
  for (const x of rows) {
    console.log(`| ${x.budget === 0 ? 'whole prompts' : x.budget} | ${ms(x.itl?.p50)} | ${ms(x.itl?.p99)} | ${ms(x.itl?.max)} | ${ms(x.tpot?.p50)} | ${ms(x.ttft?.p50)} | ${ms(x.ttft?.max)} | ${x.outputTokPerS.toFixed(1)} | ${x.decodeRequests + x.longRequests} (${x.failed}) |`);
  }
  console.log(`\n[prefill] wrote ${path.relative(process.cwd(), file)}`);
}

main().catch((err: unknown) => {
  console.error(`prefill-stall: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
