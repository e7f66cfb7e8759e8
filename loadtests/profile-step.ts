/**
 * Where does a decode step's time go? For each model (dense, sliced artifacts) and batch
 * size, measures (a) the serving path's greedy decode step (`DecoderSession.stepGreedy`:
 * building feeds, writing the step's KV entries into the resident rows, `session.run`) and
 * (b) a bare `session.run` of the same graph with the same shapes, then the operator shares of
 * that run from onnxruntime's profiler (a separate, profiled session: the profiler adds a cost
 * per node). The difference between (a) and (b) is JavaScript-side work.
 *
 * By default the models take turns step by step with onnxruntime's thread spinning off (fair
 * between models, slower than serving). `--spinning` measures what a server's worker runs:
 * sessions with spinning on (onnxruntime's default, as `serve` uses), each model for a block of
 * `--steps` steps in turn, `--rounds` times; the figure is the median of the blocks' medians.
 * `--bandwidth` adds each model's weight bytes per decode step and the batch-1 bound they
 * give at the machine's read bandwidth (loadtests/bandwidth.ts, measured once at start).
 *
 *   node dist/loadtests/profile-step.js --model <dir> [--model <dir> ...] [--batch 1,16]
 *        [--past 96] [--steps 16] [--threads 2] [--spinning [--rounds 5]] [--bandwidth]
 *        [--json out.json]
 *
 * Not part of the test suite (it measures speed); results are printed as a table.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { Command } from 'commander';
import * as ort from 'onnxruntime-node';
import { keyCacheLayout } from '../models/onnx/contract.js';
import { buildDecoderGraph } from '../models/onnx/decoder-graph.js';
import { loadModel } from '../models/load.js';
import { blockQuantJson } from '../models/quant/index.js';
import type { LoadedModel } from '../models/types.js';
import { DecoderSession, decoderSessionOptions } from '../runtime/decoder-session.js';
import { withGraphFiles } from '../runtime/graph-files.js';
import { measureReadBandwidth } from './bandwidth.js';
import { type MatmulShape, bandwidthBoundTokensPerSecond, matmulWeightsPerToken, weightBytesPerToken } from './flops.js';
import { matmulShapeOf } from './models.js';
import { makePrompt } from './prompts.js';
import { summarize } from './stats.js';

/** One (model, batch) measurement. Times in milliseconds per decode step. */
export interface StepProfile {
  model: string;
  hidden_size: number;
  batch: number;
  past: number;
  /** DecoderSession.step, median over the steps. */
  serving_step_ms: number;
  /** Bare session.run with the same shapes, median. */
  run_ms: number;
  /** Operator type -> share of the profiled node time (0..1). */
  op_share: Record<string, number>;
  /** Matmul weights multiplied per token (flops.ts). */
  matmul_weights_per_token: number;
  /**
   * Bytes of weights one decode step reads: the quantized tensors in their MatMulNBits layout
   * (codes, scales, zero points), every float matmul weight at 4 bytes, one embedding row.
   */
  weight_bytes_per_token: number;
  /** How serving_step_ms was measured: models taking turns without spinning, or spinning blocks. */
  serving_mode: ServingMode;
}

/** See the file comment: 'turns' (default) or 'spinning' (as a server's worker runs). */
export type ServingMode = 'turns' | 'spinning';

/**
 * Weight bytes a decode step of `model` reads at batch 1 (flops.ts `weightBytesPerToken`):
 * every matmul weight, in its MatMulNBits layout (codes, float32 scales, zero points) where the
 * model's quantization options cover its group, else float32, plus one float32 embedding row.
 */
export function decodeWeightBytes(model: LoadedModel): number {
  const q = model.quantization?.options;
  return weightBytesPerToken(decodeShape(model), q ? { linear: blockQuantJson(q.linear)!, head: blockQuantJson(q.head), shortcuts: blockQuantJson(q.shortcuts) } : null);
}

/** The matmul shape of `model` as flops.ts counts it (its residual width, whether its head was sliced). */
function decodeShape(model: LoadedModel): MatmulShape {
  return { ...matmulShapeOf(model.config), sliced_hidden_size: residualWidth(model), slice_head: model.config.sliceserve?.slice_head ?? false };
}

function residualWidth(model: LoadedModel): number {
  return model.weights.get('model.embed_tokens.weight')!.shape[1];
}

/**
 * Operator label of a profiled node: its type, with MatMul split into weight products (a
 * [batch, sequence, in] activation times an initializer) and attention products (rank-4
 * operands of the 'primitives' kernel: scores and value mixing over the KV cache).
 */
export function opLabel(op: string, inputShapes?: Array<Record<string, number[]>>): string {
  if (op !== 'MatMul' && op !== 'FusedMatMul') return op;
  const first = inputShapes?.[0] ? Object.values(inputShapes[0])[0] : undefined;
  return first && first.length === 4 ? `${op} (attention)` : `${op} (weights)`;
}

/** Aggregates an onnxruntime profile (Chrome trace JSON) by operator type. */
export function opShares(profileFile: string): Record<string, number> {
  const events = JSON.parse(fs.readFileSync(profileFile, 'utf8')) as Array<{
    cat?: string;
    name?: string;
    dur?: number;
    args?: { op_name?: string; input_type_shape?: Array<Record<string, number[]>> };
  }>;
  const byOp = new Map<string, number>();
  let total = 0;
  for (const e of events) {
    if (e.cat !== 'Node' || !e.name?.endsWith('_kernel_time') || !e.dur) continue;
    const op = opLabel(e.args?.op_name ?? 'unknown', e.args?.input_type_shape);
    byOp.set(op, (byOp.get(op) ?? 0) + e.dur);
    total += e.dur;
  }
  return Object.fromEntries([...byOp].sort((a, b) => b[1] - a[1]).map(([k, v]) => [k, v / total]));
}

/**
 * Median greedy decode step (ms) of each model at one batch size, the models taking turns
 * step by step in one process (sessions with spinning off), so that the machine's drift hits
 * them alike: on a shared 2-core machine, timing one model after the other moves the ratio by
 * +-15 %.
 */
async function servingSteps(models: LoadedModel[], batch: number, promptTokens: number, steps: number, threads: number): Promise<number[]> {
  const sessions = await Promise.all(models.map((model) => DecoderSession.create(model, { threads, spinning: false })));
  return takingTurns(models, sessions, batch, promptTokens, steps);
}

/**
 * Median greedy decode step (ms) of each model at one batch size with spinning sessions (as
 * `serve` runs them): each model decodes a block of `steps` steps after a fresh prefill of
 * `promptTokens`, the models one after the other, `rounds` times; the median of the blocks'
 * medians. Only the measured model's session is open (an idle spinning pool takes cores).
 */
async function spinningSteps(models: LoadedModel[], batch: number, promptTokens: number, steps: number, threads: number, rounds: number): Promise<number[]> {
  const blocks: number[][] = models.map(() => []);
  for (let r = 0; r < rounds; r++) {
    for (const [k, model] of models.entries()) {
      const session = await DecoderSession.create(model, { threads });
      blocks[k].push((await takingTurns([model], [session], batch, promptTokens, steps))[0]);
    }
  }
  return blocks.map((b) => summarize(b)!.p50);
}

/** The greedy decode steps of {@link servingSteps} on open sessions, which it releases. */
async function takingTurns(models: LoadedModel[], sessions: DecoderSession[], batch: number, promptTokens: number, steps: number): Promise<number[]> {
  try {
    const caches = sessions.map((session) => Array.from({ length: batch }, () => session.newCache()));
    for (const [k, session] of sessions.entries()) {
      const vocab = models[k].config.vocab_size;
      await session.step(caches[k].map((cache, b) => ({ cache, tokens: makePrompt(b, { promptTokens, vocabSize: vocab, bosTokenId: 1, seed: 3 }) })));
    }
    const times: number[][] = sessions.map(() => []);
    for (let s = 0; s < steps + 2; s++) {
      for (const [k, session] of sessions.entries()) {
        const vocab = models[k].config.vocab_size;
        const t0 = performance.now();
        // What a batch of greedy requests runs (engine/scheduler.ts): the greedy tokens, not the logits.
        await session.stepGreedy(caches[k].map((cache) => ({ cache, tokens: [3 + ((s * 7919) % (vocab - 3))] })));
        if (s >= 2) times[k].push(performance.now() - t0);
      }
    }
    return times.map((t) => summarize(t)!.p50);
  } finally {
    await Promise.all(sessions.map((session) => session.release()));
  }
}

async function bareRun(model: LoadedModel, batch: number, past: number, steps: number, threads: number, profileDir: string): Promise<{ ms: number; shares: Record<string, number> }> {
  // The graph DecoderSession runs: no present.* outputs, the default attention kernel.
  const transposedKeys = keyCacheLayout() === 'transposed';
  const c = model.config;
  const T = past + 1;
  const feeds: Record<string, ort.Tensor> = {
    input_ids: new ort.Tensor('int64', new BigInt64Array(batch).fill(5n), [batch, 1]),
    position_ids: new ort.Tensor('int64', new BigInt64Array(batch).fill(BigInt(past)), [batch, 1]),
    attention_bias: new ort.Tensor('float32', new Float32Array(batch * T).fill(0), [batch, 1, T]),
  };
  for (let l = 0; l < c.num_hidden_layers; l++) {
    for (const kind of ['key', 'value']) {
      const dims = kind === 'key' && transposedKeys ? [batch, c.num_key_value_heads, c.head_dim, past] : [batch, c.num_key_value_heads, past, c.head_dim];
      feeds[`past_key_values.${l}.${kind}`] = new ort.Tensor('float32', new Float32Array(batch * c.num_key_value_heads * past * c.head_dim), dims);
    }
  }
  const fetches = ['greedy_token', ...Array.from({ length: c.num_hidden_layers }, (_, l) => [`step_key_values.${l}.key`, `step_key_values.${l}.value`]).flat()];
  // The graph is written once to files onnxruntime opens by path, as DecoderSession does (no
  // buffer limit: a 1B float32 graph is over Node's 4 GiB typed-array limit). It is timed
  // without the profiler (which adds a cost per node), then profiled for the operator shares.
  const times: number[] = [];
  await withGraphFiles(
    (externalDataFile) => buildDecoderGraph(model, { logits: 'last', presentOutputs: false, externalDataFile }),
    async ({ modelPath }) => {
      const open = (profile: boolean) =>
        ort.InferenceSession.create(modelPath, {
          ...decoderSessionOptions(threads),
          ...(profile ? { enableProfiling: true, profileFilePrefix: path.join(profileDir, `${model.id}-b${batch}`) } : {}),
        } as ort.InferenceSession.SessionOptions);
      const timed = await open(false);
      for (let s = 0; s < steps + 2; s++) {
        const t0 = performance.now();
        await timed.run(feeds, fetches);
        if (s >= 2) times.push(performance.now() - t0);
      }
      await timed.release();
      const profiled = await open(true);
      for (let s = 0; s < steps + 2; s++) await profiled.run(feeds, fetches);
      profiled.endProfiling(); // writes <prefix>_<timestamp>.json (onnxruntime-node returns nothing)
      await profiled.release();
    },
  );
  const prefix = `${model.id}-b${batch}`;
  const file = fs.readdirSync(profileDir).find((f) => f.startsWith(prefix) && f.endsWith('.json'));
  if (!file) throw new Error(`onnxruntime wrote no profile under ${profileDir}`);
  const shares = opShares(path.join(profileDir, file));
  fs.rmSync(path.join(profileDir, file), { force: true });
  return { ms: summarize(times)!.p50, shares };
}

/** Profiles every (model, batch) pair. */
export async function profileSteps(
  dirs: string[],
  batches: number[],
  opts: { past: number; steps: number; threads: number; mode?: ServingMode; rounds?: number },
): Promise<StepProfile[]> {
  const out: StepProfile[] = [];
  const mode = opts.mode ?? 'turns';
  const profileDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sliceserve-profile-'));
  try {
    const models = dirs.map((dir) => loadModel(dir));
    for (const batch of batches) {
      const serving =
        mode === 'spinning'
          ? await spinningSteps(models, batch, opts.past, opts.steps, opts.threads, opts.rounds ?? 5)
          : await servingSteps(models, batch, opts.past, opts.steps, opts.threads);
      for (const [k, model] of models.entries()) {
        const d = residualWidth(model);
        const dense = model.config.hidden_size;
        const w = matmulWeightsPerToken(decodeShape(model));
        const bare = await bareRun(model, batch, opts.past, opts.steps, opts.threads, profileDir);
        out.push({
          model: model.id,
          hidden_size: d,
          batch,
          past: opts.past,
          serving_step_ms: serving[k],
          run_ms: bare.ms,
          op_share: bare.shares,
          matmul_weights_per_token: w.total,
          weight_bytes_per_token: decodeWeightBytes(model),
          serving_mode: mode,
        });
        process.stderr.write(`[profile] ${model.id} (d=${d}/${dense}) batch ${batch}: step ${serving[k].toFixed(1)} ms, bare run ${bare.ms.toFixed(1)} ms\n`);
      }
    }
  } finally {
    fs.rmSync(profileDir, { recursive: true, force: true });
  }
  return out;
}

/**
 * Prints profiles as a Markdown table. With `readBytesPerSecond` (bytes/s), batch-1 rows also
 * get the weight bytes per step and the share of the bandwidth bound (bandwidth / bytes per
 * step, tokens/s) that their serving step reaches.
 */
export function profileTable(rows: StepProfile[], readBytesPerSecond?: number): string {
  const ops = [...new Set(rows.flatMap((r) => Object.keys(r.op_share).slice(0, 5)))];
  const bound = readBytesPerSecond !== undefined;
  const head = ['model', "d'", 'batch', 'step ms', 'run ms', 'JS share', 'tok/s', ...(bound ? ['MB / step', 'of bound'] : []), ...ops.map((o) => `${o} %`)];
  const lines = [head, head.map(() => '---')].map((r) => `| ${r.join(' | ')} |`);
  for (const r of rows) {
    const tokPerS = (1000 * r.batch) / r.serving_step_ms;
    const ofBound =
      r.batch === 1 && readBytesPerSecond !== undefined ? `${((100 * tokPerS) / bandwidthBoundTokensPerSecond(r.weight_bytes_per_token, readBytesPerSecond)).toFixed(0)} %` : '';
    const cells = [
      r.model,
      String(r.hidden_size),
      String(r.batch),
      r.serving_step_ms.toFixed(2),
      r.run_ms.toFixed(2),
      `${(Math.max(0, 1 - r.run_ms / r.serving_step_ms) * 100).toFixed(0)} %`,
      tokPerS.toFixed(1),
      ...(bound ? [(r.weight_bytes_per_token / 1e6).toFixed(1), ofBound] : []),
      ...ops.map((o) => ((r.op_share[o] ?? 0) * 100).toFixed(1)),
    ];
    lines.push(`| ${cells.join(' | ')} |`);
  }
  return lines.join('\n');
}

if (require.main === module) {
  const cmd = new Command('profile-step')
    .requiredOption('--model <dir>', 'model directory (repeatable: dense, then sliced artifacts)', (v: string, prev: string[] = []) => [...prev, v])
    .option('--batch <list>', 'batch sizes', '1,16')
    .option('--past <n>', 'tokens already in the KV cache (the prompt length)', '96')
    .option('--steps <n>', 'timed decode steps', '16')
    .option('--threads <n>', 'onnxruntime intra-op threads', String(os.availableParallelism()))
    .option('--spinning', 'serving steps as `serve` runs them: spinning sessions, one model at a time, in blocks')
    .option('--rounds <n>', 'with --spinning: blocks per model', '5')
    .option('--bandwidth', 'measure the read bandwidth first and report each batch-1 step against its bound')
    .option('--json <file>', 'also write the rows as JSON');
  cmd.parse(process.argv);
  const o = cmd.opts<{ model: string[]; batch: string; past: string; steps: string; threads: string; spinning?: boolean; rounds: string; bandwidth?: boolean; json?: string }>();
  void (async () => {
    const threads = Number(o.threads);
    const bandwidth = o.bandwidth ? (await measureReadBandwidth(threads)).read_bytes_per_s : undefined;
    if (bandwidth !== undefined) process.stderr.write(`[profile] read bandwidth ${(bandwidth / 1e9).toFixed(1)} GB/s (${threads} threads)\n`);
    const rows = await profileSteps(o.model, o.batch.split(',').map(Number), {
      past: Number(o.past),
      steps: Number(o.steps),
      threads,
      mode: o.spinning ? 'spinning' : 'turns',
      rounds: Number(o.rounds),
    });
    process.stdout.write(profileTable(rows, bandwidth) + '\n');
    if (o.json) fs.writeFileSync(o.json, JSON.stringify({ read_bytes_per_s: bandwidth ?? null, rows }, null, 2));
  })();
}
