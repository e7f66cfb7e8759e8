/**
 * Command-line options of the load generator (`npm run bench`, `sliceserve bench`), parsed
 * with commander and validated here into {@link BenchOptions}.
 */
import { Command, InvalidArgumentError, Option } from 'commander';

/** Everything a benchmark run needs, after defaults and `--quick` are applied. */
export interface BenchOptions {
  /** Hugging Face model directory (the dense model); null: synthesize `preset`. */
  model: string | null;
  /** Synthetic preset used when `model` is null (default bench-110m). */
  preset: string;
  sparsities: number[];
  /**
   * Weight precisions measured for dense and every sparsity (`serve --quantize`; none =
   * float32); null: all three when the load generator starts the server, what it serves with --url.
   */
  precisions: ('none' | 'int8' | 'int4')[] | null;
  concurrency: number[];
  /** Requests per model per concurrency level; null when `durationS` is set. */
  requests: number | null;
  /** Seconds per model per concurrency level; null when counting requests. */
  durationS: number | null;
  rounds: number;
  promptTokens: number;
  outputTokens: number;
  temperature: number;
  seed: number;
  /** Target a running server instead of starting one. */
  url: string | null;
  /** Dense model id to measure on `--url` (default: the first entry without parent). */
  denseId: string | null;
  /** Other OpenAI-compatible servers measured side by side (`--peer NAME=URL`, repeatable). */
  peers: PeerSpec[];
  calibration: string | null;
  calWindows: number;
  maxBatchSize: number | null;
  device: string | null;
  /** Extra arguments for `sliceserve serve`. */
  serverArgs: string[];
  /** Per-request limit, seconds. */
  timeoutS: number;
  /** Limit on the measurement phase, seconds (blocks not started by then are skipped). */
  maxTimeS: number;
  /** Limit on server start-up (loading, slicing), seconds. */
  serverTimeoutS: number;
  /** Root of the reports (a timestamped folder is created in it). */
  out: string;
  bandwidth: boolean;
  bandwidthThreads: number | null;
  /** Start the server with malloc advising transparent huge pages (runtime/huge-pages.ts). */
  hugePages: boolean;
  warmup: boolean;
  apiKey: string | null;
  quick: boolean;
  /** Folder where synthesized models are cached. */
  cacheDir: string;
  /** The command line, for "how to reproduce". */
  command: string;
}

/** A peer server given with `--peer NAME=URL`. */
export interface PeerSpec {
  /** Its label in the report (letters, digits, `.`, `_`, `-`), e.g. `llamacpp-q8_0`. */
  name: string;
  /** Base URL without a trailing `/v1`, e.g. `http://127.0.0.1:8081`. */
  url: string;
}

/** `http://host:port/v1/` -> `http://host:port`: the client appends `/v1/completions`. */
export function normalizeBaseUrl(v: string): string {
  return v.replace(/\/+$/, '').replace(/\/v1$/, '');
}

/**
 * Parses one `--peer NAME=URL` (commander calls it once per occurrence, with the list so far).
 *
 * @throws InvalidArgumentError when NAME or URL is malformed, or NAME was already given.
 */
export function parsePeer(v: string, prev: PeerSpec[] = []): PeerSpec[] {
  const eq = v.indexOf('=');
  const name = eq > 0 ? v.slice(0, eq).trim() : '';
  const raw = eq > 0 ? v.slice(eq + 1).trim() : '';
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(name) || raw === '') {
    throw new InvalidArgumentError(`--peer takes NAME=URL with NAME of letters, digits, '.', '_', '-' (e.g. llamacpp-q8_0=http://127.0.0.1:8081), got "${v}"`);
  }
  if (!/^https?:\/\//i.test(raw)) throw new InvalidArgumentError(`--peer ${name}: the URL must start with http:// or https://, got "${raw}"`);
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new InvalidArgumentError(`--peer ${name}: "${raw}" is not a URL (e.g. http://127.0.0.1:8081)`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new InvalidArgumentError(`--peer ${name}: the URL must start with http:// or https://, got "${raw}"`);
  if (url.search || url.hash) throw new InvalidArgumentError(`--peer ${name}: the URL must be a base URL without query or fragment, got "${raw}"`);
  if (prev.some((p) => p.name === name)) throw new InvalidArgumentError(`--peer ${name} is given twice; each peer needs its own NAME`);
  return [...prev, { name, url: normalizeBaseUrl(url.toString()) }];
}

/** A commander parser of an integer >= min for option `name` (a one-line error otherwise). */
export function intArg(name: string, min: number) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) throw new InvalidArgumentError(`${name} must be an integer >= ${min}, got "${v}"`);
    return n;
  };
}

function numArg(name: string, min: number) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isFinite(n) || n < min) throw new InvalidArgumentError(`${name} must be a number >= ${min}, got "${v}"`);
    return n;
  };
}

/** Parses "0.25,0.5" (sparsities in (0, 1)). */
export function parseSparsities(v: string): number[] {
  const list = v.split(',').map((s) => s.trim()).filter((s) => s.length > 0).map(Number);
  if (list.some((s) => !(s > 0 && s < 1))) throw new InvalidArgumentError(`sparsities must be numbers in (0, 1), e.g. 0.25,0.5; got "${v}"`);
  return list;
}

/** Parses "none,int8,int4" (weight precisions, in the given order, duplicates removed). */
export function parsePrecisions(v: string): ('none' | 'int8' | 'int4')[] {
  const list = v.split(',').map((s) => s.trim().toLowerCase()).filter((s) => s.length > 0);
  const bad = list.find((p) => p !== 'none' && p !== 'int8' && p !== 'int4');
  if (list.length === 0 || bad !== undefined) throw new InvalidArgumentError(`--quantize takes precisions none, int8, int4, comma-separated (none = float32 weights), e.g. none,int4; got "${v}"`);
  return [...new Set(list)] as ('none' | 'int8' | 'int4')[];
}

/** Parses "1,4,16" (positive integers, kept in the given order, duplicates removed). */
export function parseConcurrency(v: string): number[] {
  const list = v.split(',').map((s) => s.trim()).filter((s) => s.length > 0).map(Number);
  if (list.length === 0 || list.some((c) => !Number.isInteger(c) || c < 1)) {
    throw new InvalidArgumentError(`concurrency must be a list of positive integers, e.g. 1,4,16; got "${v}"`);
  }
  return [...new Set(list)];
}

/** Adds the load generator's options to `cmd`. */
export function addBenchOptions(cmd: Command): Command {
  return cmd
    .option('--model <dir>', 'dense Hugging Face model directory (default: the synthetic --preset, generated into the cache)')
    .option('--preset <name>', 'synthetic model preset used without --model (see `sliceserve synth --help`)', 'bench-110m')
    .option('--sparsities <list>', 'sliced variants to measure next to dense, comma-separated (default 0.25,0.5)', parseSparsities)
    .option('--quantize <list>', 'weight precisions measured for dense and every sparsity, comma-separated: none (float32), int8, int4 (default none,int8,int4, passed to `serve --quantize`; with --url: those it serves)', parsePrecisions)
    .option('--concurrency <list>', 'concurrency sweep, comma-separated (default 1,2,4,8,16; --quick 1,4,16)', parseConcurrency)
    .option('--requests <n>', 'requests per model per concurrency level (default max(8, 4 x concurrency); --quick: max(2, concurrency))', intArg('--requests', 1))
    .option('--duration <s>', 'seconds per model per concurrency level instead of a request count', numArg('--duration', 1))
    .option('--rounds <n>', 'interleaved rounds per level: each model runs this many blocks per level (default 4: one wave of requests per block; --quick 1)', intArg('--rounds', 1))
    .option('--prompt-tokens <n>', 'prompt length in tokens, BOS included', intArg('--prompt-tokens', 1), 66)
    .option('--output-tokens <n>', 'tokens generated per request (ignore_eos)', intArg('--output-tokens', 1), 64)
    .option('--temperature <t>', 'sampling temperature (0 = greedy)', numArg('--temperature', 0), 0)
    .option('--seed <n>', 'seed of the prompts (and of the synthetic weights)', intArg('--seed', 0), 0)
    .option('--url <url>', 'benchmark a running server (e.g. http://127.0.0.1:8080) instead of starting one')
    .option('--dense-id <id>', 'with --url: the dense model id to measure (default: the first without parent)')
    .addOption(
      new Option('--peer <NAME=URL>', 'also measure another OpenAI-compatible /v1/completions server (e.g. llama.cpp\'s llama-server), interleaved with our models, same request shape (repeatable)').argParser(parsePeer),
    )
    .option('--calibration <file>', 'calibration text passed to the server for slicing (default: the server default)')
    .option('--cal-windows <n>', 'calibration windows for slicing (speed does not depend on them; default 8, --quick 4)', intArg('--cal-windows', 1))
    .option('--max-batch-size <n>', 'passed to the server (default: the largest concurrency)', intArg('--max-batch-size', 1))
    .option('--device <name>', 'execution provider passed to the server (cpu, cuda, ...; default: the server default, cpu)')
    .addOption(new Option('--server-arg <arg>', 'extra argument for `sliceserve serve` (repeatable)').argParser((v: string, prev: string[] = []) => [...prev, v]))
    .option('--timeout <s>', 'per-request time limit, seconds', numArg('--timeout', 1), 300)
    .option('--max-time <s>', 'time limit of the measurement, seconds (default 1800; --quick 200)', numArg('--max-time', 1))
    .option('--server-timeout <s>', 'time limit of server start-up (loading, slicing), seconds', numArg('--server-timeout', 1), 900)
    .option('--out <dir>', 'reports folder (a timestamped run folder and latest/ are written in it)', 'loadtests/reports')
    .option('--no-bandwidth', 'skip the memory read-bandwidth probe')
    .option('--no-huge-pages', 'start the server without GLIBC_TUNABLES=glibc.malloc.hugetlb=1 (weights on 4 KiB pages)')
    .option('--bandwidth-threads <n>', 'threads of the bandwidth probe (default: all cores)', intArg('--bandwidth-threads', 1))
    .option('--no-warmup', 'skip the warm-up requests')
    .option('--api-key <key>', 'bearer token for the server (env SLICESERVE_API_KEY)')
    .option('--cache-dir <dir>', 'where synthetic models are cached', '.cache/synth')
    .option('--quick', 'a short run (< 5 min on 2 cores): bench-110m, concurrency 1,4,16, few requests, 1 round');
}

/**
 * Applies defaults (and `--quick`'s) to commander's parsed options.
 *
 * @param raw `cmd.opts()`.
 * @param argv the arguments as typed, for the report's "reproduce" line.
 * @throws Error when --requests and --duration are both given.
 */
export function resolveBenchOptions(raw: Record<string, unknown>, argv: string[]): BenchOptions {
  const quick = raw.quick === true;
  if (raw.requests !== undefined && raw.duration !== undefined) throw new Error('give --requests or --duration, not both');
  const concurrency = (raw.concurrency as number[] | undefined) ?? (quick ? [1, 4, 16] : [1, 2, 4, 8, 16]);
  const duration = (raw.duration as number | undefined) ?? null;
  return {
    model: (raw.model as string | undefined) ?? null,
    preset: raw.preset as string,
    sparsities: (raw.sparsities as number[] | undefined) ?? [0.25, 0.5],
    precisions: (raw.quantize as ('none' | 'int8' | 'int4')[] | undefined) ?? null,
    concurrency,
    requests: duration !== null ? null : ((raw.requests as number | undefined) ?? null),
    durationS: duration,
    rounds: (raw.rounds as number | undefined) ?? (quick ? 1 : 4),
    promptTokens: raw.promptTokens as number,
    outputTokens: raw.outputTokens as number,
    temperature: raw.temperature as number,
    seed: raw.seed as number,
    url: raw.url ? normalizeBaseUrl(String(raw.url)) : null,
    denseId: (raw.denseId as string | undefined) ?? null,
    peers: (raw.peer as PeerSpec[] | undefined) ?? [],
    calibration: (raw.calibration as string | undefined) ?? null,
    calWindows: (raw.calWindows as number | undefined) ?? (quick ? 4 : 8),
    maxBatchSize: (raw.maxBatchSize as number | undefined) ?? null,
    device: (raw.device as string | undefined) ?? null,
    serverArgs: (raw.serverArg as string[] | undefined) ?? [],
    timeoutS: raw.timeout as number,
    maxTimeS: (raw.maxTime as number | undefined) ?? (quick ? 200 : 1800),
    serverTimeoutS: raw.serverTimeout as number,
    out: raw.out as string,
    bandwidth: raw.bandwidth !== false,
    hugePages: raw.hugePages !== false,
    bandwidthThreads: (raw.bandwidthThreads as number | undefined) ?? null,
    warmup: raw.warmup !== false,
    apiKey: (raw.apiKey as string | undefined) ?? process.env.SLICESERVE_API_KEY ?? null,
    quick,
    cacheDir: raw.cacheDir as string,
    command: ['npm run bench', ...(argv.length > 0 ? ['--', ...argv] : [])].join(' '),
  };
}

/**
 * Requests per model at `concurrency` when --requests is not given: whole waves of
 * `concurrency` (4 waves in a full run: one per round; at least 8 requests at low concurrency).
 */
export function defaultRequests(concurrency: number, quick: boolean): number {
  return quick ? Math.max(2, concurrency) : Math.max(8, 4 * concurrency);
}
