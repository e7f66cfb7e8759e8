/**
 * The load-test report: per model and concurrency, request and output-token throughput,
 * TTFT / TPOT / ITL / e2e latency (mean, p50, p90, p99) and the error rate, as vLLM's
 * benchmark_serving, llmperf and genai-perf report them (see ../shared/reference/SERVING.md);
 * the expected (FLOPs) and measured speedup of each sliced variant over dense; batch-1 decode
 * against the memory-bandwidth bound; the machine; peer figures. `report.json` follows
 * {@link ReportSchema}, so other tools can read it.
 */
import { z } from 'zod';
import type { RequestRecord } from './client.js';
import type { RunResult } from './runner.js';
import { percentile, summarize } from './stats.js';
import { bandwidthBoundTokensPerSecond } from './flops.js';
import { peerWeightBytesPerToken, type Peer } from './peers.js';

const SummarySchema = z.object({
  n: z.number().int().nonnegative(),
  mean: z.number(),
  p50: z.number(),
  p90: z.number(),
  p99: z.number(),
  min: z.number(),
  max: z.number(),
});

/** One model at one concurrency level, all its blocks pooled. */
export const RunSchema = z.object({
  model: z.string(),
  /** 0 for the dense model. */
  sparsity: z.number().min(0).max(1),
  concurrency: z.number().int().positive(),
  /** Requests sent (successful + failed). */
  requests: z.number().int().nonnegative(),
  errors: z.number().int().nonnegative(),
  error_rate: z.number().min(0).max(1),
  /** Sum of the wall times of this model's blocks at this level, seconds. */
  duration_s: z.number().nonnegative(),
  /** Successful requests per second. */
  requests_per_s: z.number().nonnegative(),
  /** Output tokens of successful requests per second. */
  output_tokens_per_s: z.number().nonnegative(),
  output_tokens: z.number().int().nonnegative(),
  /** Output tokens/s of each of this model's blocks at this level, in run order (the spread shows the noise). */
  block_output_tokens_per_s: z.array(z.number().nonnegative()),
  ttft_s: SummarySchema.nullable(),
  tpot_s: SummarySchema.nullable(),
  itl_s: SummarySchema.nullable(),
  e2e_s: SummarySchema.nullable(),
  /** Up to 5 distinct error messages, for diagnosis. */
  error_samples: z.array(z.string()),
  /** True for a peer server's row (`--peer`; `model` is then the peer's name and sparsity 0: we did not slice it). */
  peer: z.boolean().optional(),
});

const ModelSchema = z.object({
  id: z.string(),
  sparsity: z.number().min(0).max(1),
  /** Residual width actually served (d' for a sliced model). */
  hidden_size: z.number().int().positive(),
  original_hidden_size: z.number().int().positive(),
  parameters: z.number().nullable(),
  slice_head: z.boolean(),
  /** Weights multiplied per generated token, by group (see flops.ts). */
  matmul_weights_per_token: z.object({ attention: z.number(), mlp: z.number(), shortcuts: z.number(), head: z.number(), total: z.number() }),
  matmul_flops_per_token: z.number().positive(),
});

export const ReportSchema = z.object({
  schema_version: z.literal(1),
  created: z.string(),
  git_commit: z.string().nullable(),
  model: z.object({
    dir: z.string().nullable(),
    preset: z.string().nullable(),
    synthetic: z.boolean(),
    config: z.record(z.string(), z.unknown()).nullable(),
  }),
  request_shape: z.object({
    prompt_tokens: z.number().int().positive(),
    output_tokens: z.number().int().positive(),
    ignore_eos: z.literal(true),
    stream: z.literal(true),
    temperature: z.number(),
    prefix_caching: z.string(),
  }),
  options: z.record(z.string(), z.unknown()),
  machine: z.object({
    cpu_model: z.string(),
    cores: z.number().int().positive(),
    memory_bytes: z.number(),
    os: z.string(),
    node: z.string(),
    onnxruntime_node: z.string().nullable(),
    execution_provider: z.string(),
    read_bandwidth_bytes_per_s: z.number().nullable(),
    read_bandwidth_method: z.string().nullable(),
    /** 1, 5 and 15 minute load averages when the run started and ended (other work competes for the cores). */
    load_average_start: z.array(z.number()).nullable(),
    load_average_end: z.array(z.number()).nullable(),
    /**
     * Whether the server's weights were on transparent huge pages (runtime/huge-pages.ts);
     * null when the server was not started by the load generator (--url). Absent in reports
     * written before it was recorded.
     */
    huge_pages: z
      .object({ transparent_hugepage: z.string().nullable(), malloc_hugetlb: z.string().nullable(), active: z.boolean() })
      .nullable()
      .optional(),
  }),
  models: z.array(ModelSchema),
  runs: z.array(RunSchema),
  speedup: z.array(
    z.object({
      model: z.string(),
      sparsity: z.number(),
      concurrency: z.number().int().positive(),
      /** Dense matmul FLOPs per token / sliced matmul FLOPs per token. */
      theoretical: z.number().positive(),
      /** Sliced output tokens/s / dense output tokens/s at the same concurrency; null if either is 0. */
      measured: z.number().nullable(),
      /** measured / theoretical. */
      fraction_of_theoretical: z.number().nullable(),
      /**
       * Median over rounds of (sliced tok/s / dense tok/s) within the same round, whose blocks
       * run back to back: a disturbance that slows one round (another process on the cores)
       * cancels out of its ratio instead of weighting the pooled totals. Null with no round
       * in which both ran.
       */
      measured_paired_median: z.number().nullable().optional(),
      /** The per-round ratios behind {@link measured_paired_median}, in round order. */
      round_ratios: z.array(z.number()).optional(),
    }),
  ),
  decode_batch1: z.array(
    z.object({
      model: z.string(),
      sparsity: z.number(),
      /** 1 / median TPOT at concurrency 1. */
      tokens_per_s: z.number().nullable(),
      /** float32 weights read per generated token, bytes. */
      weight_bytes_per_token: z.number(),
      bandwidth_bound_tokens_per_s: z.number().nullable(),
      fraction_of_bound: z.number().nullable(),
      /** The bound at {@link REFERENCE_READ_BYTES_PER_S} (issue 5's native probe on this machine kind). */
      reference_bound_tokens_per_s: z.number().optional(),
    }),
  ),
  peers: z.array(
    z.object({
      name: z.string(),
      source: z.string(),
      /** By concurrency level. */
      output_tokens_per_s: z.record(z.string(), z.number()),
      decode_batch1_tokens_per_s: z.number().nullable(),
      /** True when measured in this run (`--peer`; its rows are in `runs`), false for figures from elsewhere. Absent in older reports. */
      measured: z.boolean().optional(),
      url: z.string().optional(),
      /** The `model` id the peer was sent (from its `/v1/models`). */
      model: z.string().optional(),
      /** What the peer's `/v1/models` reported (llama.cpp's `meta`), null when nothing. */
      model_info: z
        .object({ n_vocab: z.number().nullable(), n_params: z.number().nullable(), size_bytes: z.number().nullable(), n_embd: z.number().nullable(), ftype: z.string().nullable() })
        .nullable()
        .optional(),
      /** Estimated weight bytes read per token at batch 1 (peers.ts: the model's size minus its embedding table); null when unknown. */
      weight_bytes_per_token_estimate: z.number().nullable().optional(),
      /** The start-up probe's failure, when the peer did not answer `/v1/models`. */
      start_error: z.string().nullable().optional(),
    }),
  ),
  wall_s: z.number(),
  /** CPU seconds the load generator itself used while measuring (it shares the machine with the server). */
  load_generator_cpu_s: z.number().nullable().optional(),
  truncated: z.boolean(),
  notes: z.array(z.string()),
});

export type Report = z.infer<typeof ReportSchema>;
export type RunStats = z.infer<typeof RunSchema>;
export type ModelEntry = z.infer<typeof ModelSchema>;

/**
 * The peer figures shown when no `--peer` is measured: llama.cpp's server, measured on this
 * machine kind in an earlier session with the same request shape (f32, 2 threads, ~66-token
 * prompts, 64 output tokens, ignore_eos, prefix caching defeated, streaming), medians, runs vary
 * +-15-20 %. Source: issue 5. Not comparable within a run; `--peer` measures one instead.
 */
export const LLAMA_CPP_PEER: Report['peers'][number] = {
  name: 'llama.cpp server (f32, 2 threads)',
  source: 'issue 5: measured earlier on this machine kind with the same request shape, not in this run (pass --peer NAME=URL to measure one side by side); medians, runs vary +-15-20 %',
  output_tokens_per_s: { '1': 45, '4': 75, '16': 131 },
  decode_batch1_tokens_per_s: 65,
  measured: false,
};

/**
 * 2-thread memory read bandwidth of this machine kind as issue 5 reports it (a native read
 * probe: ~27-28 GB/s; a 2-thread memcpy gives only ~19 GB/s). Our WebAssembly probe reads with
 * 128-bit loads and usually reports less, so the report shows the bound at both figures.
 */
export const REFERENCE_READ_BYTES_PER_S = 27.5e9;

/**
 * Pools the records of one model at one level into its row of the report.
 *
 * @param blockRates output tokens/s of each block (default: none recorded).
 */
export function runStats(model: string, sparsity: number, concurrency: number, records: readonly RequestRecord[], duration_s: number, blockRates: number[] = []): RunStats {
  const ok = records.filter((r) => r.ok);
  const errors = records.length - ok.length;
  const outputTokens = ok.reduce((s, r) => s + r.output_tokens, 0);
  const pick = (f: (r: RequestRecord) => number | null): number[] => ok.map(f).filter((v): v is number => v !== null);
  return {
    model,
    sparsity,
    concurrency,
    requests: records.length,
    errors,
    error_rate: records.length === 0 ? 0 : errors / records.length,
    duration_s,
    requests_per_s: duration_s > 0 ? ok.length / duration_s : 0,
    output_tokens_per_s: duration_s > 0 ? outputTokens / duration_s : 0,
    output_tokens: outputTokens,
    block_output_tokens_per_s: blockRates,
    ttft_s: summarize(pick((r) => r.ttft_s)),
    tpot_s: summarize(pick((r) => r.tpot_s)),
    itl_s: summarize(ok.flatMap((r) => r.itl_s)),
    e2e_s: summarize(pick((r) => r.e2e_s)),
    error_samples: [...new Set(records.filter((r) => !r.ok).map((r) => r.error ?? 'unknown'))].slice(0, 5),
  };
}

/** What {@link buildReport} needs besides the measurements. */
export interface ReportContext {
  created: Date;
  gitCommit: string | null;
  model: Report['model'];
  requestShape: Report['request_shape'];
  options: Record<string, unknown>;
  machine: Report['machine'];
  /** Dense first; one entry per measured model. */
  models: ModelEntry[];
  notes: string[];
  /** CPU seconds used by the load generator during the measurement (process.cpuUsage). */
  loadGeneratorCpuS?: number;
  /** Peer servers measured in the run (`--peer`); their blocks carry the peer's name. None: the static {@link LLAMA_CPP_PEER} figures. */
  peers?: Peer[];
}

/** The `peers` entry of a peer measured in this run, from its rows in `runs`. */
function measuredPeer(p: Peer, runs: readonly RunStats[]): Report['peers'][number] {
  const mine = runs.filter((r) => r.peer === true && r.model === p.name);
  const c1 = mine.find((r) => r.concurrency === 1);
  return {
    name: p.name,
    source: `measured in this run at ${p.url} (model \`${p.model}\`), interleaved with our models, same requests`,
    output_tokens_per_s: Object.fromEntries(mine.map((r) => [String(r.concurrency), r.output_tokens_per_s])),
    decode_batch1_tokens_per_s: c1?.tpot_s ? 1 / c1.tpot_s.p50 : null,
    measured: true,
    url: p.url,
    model: p.model,
    model_info: p.info,
    weight_bytes_per_token_estimate: peerWeightBytesPerToken(p.info),
    start_error: p.startError,
  };
}

/** Output tokens/s of one block (successful requests only). */
function blockRate(b: RunResult['blocks'][number]): number {
  return b.wall_s > 0 ? b.records.filter((r) => r.ok).reduce((n, r) => n + r.output_tokens, 0) / b.wall_s : 0;
}

/**
 * Per round at concurrency `c`: sliced tok/s / dense tok/s of that round's two blocks (rounds
 * where either is missing or produced nothing are left out), in round order.
 */
export function pairedRoundRatios(result: RunResult, denseId: string, slicedId: string, c: number): number[] {
  const at = (model: string) => new Map(result.blocks.filter((b) => b.block.concurrency === c && b.block.model === model).map((b) => [b.block.round, blockRate(b)]));
  const dense = at(denseId);
  const sliced = at(slicedId);
  return [...sliced.keys()]
    .sort((a, b) => a - b)
    .filter((r) => (dense.get(r) ?? 0) > 0 && (sliced.get(r) ?? 0) > 0)
    .map((r) => (sliced.get(r) as number) / (dense.get(r) as number));
}

/**
 * Builds the report from a run. Runs are ordered by concurrency, then as `ctx.models`, then
 * the peers (`ctx.peers`, rows with `peer: true`). Speedups compare each sliced model with the
 * first model of sparsity 0 (the dense one); peers are compared in the Markdown only.
 *
 * @throws Error when the result does not validate against {@link ReportSchema} (a bug).
 */
export function buildReport(result: RunResult, ctx: ReportContext): Report {
  const runs: RunStats[] = [];
  const levels = [...new Set(result.blocks.map((b) => b.block.concurrency))].sort((a, b) => a - b);
  for (const c of levels) {
    for (const m of ctx.models) {
      const blocks = result.blocks.filter((b) => b.block.concurrency === c && b.block.model === m.id);
      if (blocks.length === 0) continue;
      const rates = blocks.map(blockRate);
      runs.push(runStats(m.id, m.sparsity, c, blocks.flatMap((b) => b.records), blocks.reduce((s, b) => s + b.wall_s, 0), rates));
    }
    for (const p of ctx.peers ?? []) {
      const blocks = result.blocks.filter((b) => b.block.concurrency === c && b.block.model === p.name);
      if (blocks.length === 0) continue;
      runs.push({ ...runStats(p.name, 0, c, blocks.flatMap((b) => b.records), blocks.reduce((s, b) => s + b.wall_s, 0), blocks.map(blockRate)), peer: true });
    }
  }
  const dense = ctx.models.find((m) => m.sparsity === 0);
  const speedup: Report['speedup'] = [];
  if (dense) {
    for (const m of ctx.models.filter((x) => x.sparsity > 0)) {
      for (const c of levels) {
        const d = runs.find((r) => r.model === dense.id && r.concurrency === c);
        const s = runs.find((r) => r.model === m.id && r.concurrency === c);
        if (!d || !s) continue;
        const theoretical = dense.matmul_flops_per_token / m.matmul_flops_per_token;
        const measured = d.output_tokens_per_s > 0 && s.output_tokens_per_s > 0 ? s.output_tokens_per_s / d.output_tokens_per_s : null;
        const round_ratios = pairedRoundRatios(result, dense.id, m.id, c);
        speedup.push({
          model: m.id,
          sparsity: m.sparsity,
          concurrency: c,
          theoretical,
          measured,
          fraction_of_theoretical: measured === null ? null : measured / theoretical,
          measured_paired_median: round_ratios.length > 0 ? percentile([...round_ratios].sort((a, b) => a - b), 50) : null,
          round_ratios,
        });
      }
    }
  }
  const bw = ctx.machine.read_bandwidth_bytes_per_s;
  const decode_batch1 = ctx.models.map((m) => {
    const r = runs.find((x) => x.model === m.id && x.concurrency === 1);
    const tps = r?.tpot_s ? 1 / r.tpot_s.p50 : null;
    const bytes = 4 * (m.matmul_weights_per_token.total + m.hidden_size);
    const bound = bw ? bandwidthBoundTokensPerSecond(bytes, bw) : null;
    return {
      model: m.id,
      sparsity: m.sparsity,
      tokens_per_s: tps,
      weight_bytes_per_token: bytes,
      bandwidth_bound_tokens_per_s: bound,
      fraction_of_bound: tps !== null && bound ? tps / bound : null,
      reference_bound_tokens_per_s: bandwidthBoundTokensPerSecond(bytes, REFERENCE_READ_BYTES_PER_S),
    };
  });
  const report: Report = {
    schema_version: 1,
    created: ctx.created.toISOString(),
    git_commit: ctx.gitCommit,
    model: ctx.model,
    request_shape: ctx.requestShape,
    options: ctx.options,
    machine: ctx.machine,
    models: ctx.models,
    runs,
    speedup,
    decode_batch1,
    peers: ctx.peers && ctx.peers.length > 0 ? ctx.peers.map((p) => measuredPeer(p, runs)) : [LLAMA_CPP_PEER],
    wall_s: result.wall_s,
    load_generator_cpu_s: ctx.loadGeneratorCpuS ?? null,
    truncated: result.skipped.length > 0,
    notes: ctx.notes,
  };
  const parsed = ReportSchema.safeParse(report);
  if (!parsed.success) throw new Error(`report does not match its schema: ${parsed.error.message}`);
  return report;
}
