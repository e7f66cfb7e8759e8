/**
 * `sliceserve serve`: the OpenAI-compatible server (server/). Defaults serve the bundled
 * stories260K dense and sliced at sparsity 0.25 (`npm start`). Every option has an env var
 * where deployments expect one (PORT, HOST, SLICESERVE_DEVICE, SLICESERVE_API_KEY,
 * SLICESERVE_CACHE_DIR, LOG_LEVEL). SIGTERM / SIGINT: graceful shutdown, then exit 0.
 */
import fs from 'node:fs';
import path from 'node:path';
import { type Command, InvalidArgumentError } from 'commander';
import pino from 'pino';
import { DEFAULT_MAX_PREFILL_TOKENS } from '../../engine/scheduler.js';
import { makeDirectories } from '../../models/dirs.js';
import { resolveDeviceRequest } from '../../runtime/device.js';
import { parseBodyLimit } from '../../server/body-limit.js';
import { type SliceServer, startServer } from '../../server/index.js';
import type { QuantChoice, QuantRotation } from '../../slicer/quantize.js';
import {
  DEFAULT_CALIBRATION_FILE, DEFAULT_EVAL_FILE, DEFAULT_MODEL_DIR, QUANT_ROTATION_HELP, defaultCacheDir, dtypeOption, intOption, numberOption, quantRotationOption, quantizeListOption, resolveBundled,
} from '../options.js';

const collect = <T>(parse: (v: string) => T) => (value: string, previous: T[] | undefined) => [...(previous ?? []), parse(value)];

/** Port 0..65535. */
/**
 * A listen failure as one line naming the flag and the fix (EADDRINUSE, EACCES, an address
 * that does not resolve or is not on this machine); other errors unchanged.
 */
export function listenError(err: unknown, host: string, port: number): unknown {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  const what = (err as Error).message;
  if (code === 'EADDRINUSE') return new Error(`--port ${port}: the port is in use on ${host} (${what}); pass another --port, or 0 for any free one`);
  if (code === 'EACCES') return new Error(`--port ${port}: not allowed to listen on it (${what}); ports below 1024 need privileges, pass --port 8080 or another`);
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN' || code === 'EADDRNOTAVAIL') {
    return new Error(`--host ${host}: cannot listen on it (${what}); pass an address of this machine, e.g. 127.0.0.1, or 0.0.0.0 for all`);
  }
  return err;
}

/** A boolean environment variable: 1, true or yes (any case) is on. */
function envFlag(value: string | undefined): boolean {
  return /^(1|true|yes)$/i.test((value ?? '').trim());
}

/** pino's levels, most severe first. */
const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

/** The PORT environment variable as a port. @throws Error naming PORT and the fix */
function envPort(value: string): number {
  try {
    return portOption(value);
  } catch {
    throw new Error(`env PORT=${JSON.stringify(value)} is not a port (0..65535): fix or unset PORT, or pass --port <n>`);
  }
}

function portOption(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new InvalidArgumentError(`expected a port 0..65535, got "${value}"`);
  return n;
}

/** A body limit (server/body-limit.ts syntax), kept as given for the 413 message. */
function bodyLimitOption(value: string): string {
  try {
    parseBodyLimit(value);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
  return value;
}

/** Options after commander parsed them. */
interface ServeOptions {
  model?: string[];
  sparsity?: number[];
  denseOnly?: boolean;
  quantize?: QuantChoice[];
  quantRotation: QuantRotation;
  calibration: string;
  calWindows?: number;
  heldOut: string;
  heldOutWindows: number;
  cacheDir?: string;
  host: string;
  port?: number;
  device?: string;
  dtype: 'float32' | 'float16';
  threads?: number;
  maxBatchSize: number;
  maxQueue: number;
  kvCacheTokens?: number;
  maxBatchPrefillTokens: number;
  apiKey?: string;
  metricsPublic?: boolean;
  metricsIncludeVllm?: boolean;
  chatTemplate?: string;
  maxBody: string;
  shutdownTimeout: number;
  logLevel: string;
}

export function register(program: Command): void {
  program
    .command('serve')
    .description('serve dense and SliceGPT-sliced models over an OpenAI-compatible HTTP API, SSE and WebSocket (docs/api.md)')
    .option('--model <dir>', `dense model directory, repeatable (default ${DEFAULT_MODEL_DIR})`, collect(String))
    .option('--sparsity <s>', 'slice each model at this sparsity at startup, repeatable (default 0.25)', collect(numberOption(0, 1)))
    .option('--dense-only', 'serve the dense models only (no startup slicing)')
    .option('--quantize <list>', 'weight precisions to serve every model at (dense and each --sparsity), comma-separated or repeated: none | int8 | int4 (none = float weights, the default; quantized ids end in -int8 / -int4; cached under --cache-dir)', quantizeListOption)
    .option('--quant-rotation <mode>', QUANT_ROTATION_HELP, quantRotationOption, 'auto')
    .option('--calibration <file>', 'calibration text for slicing', DEFAULT_CALIBRATION_FILE)
    .option('--cal-windows <n>', 'calibration windows (slicer default 128)', intOption(1))
    .option('--held-out <file>', "held-out text (not the calibration text) on which each slice's and its dense model's perplexity are measured (/v1/models, /v1/slices)", DEFAULT_EVAL_FILE)
    .option('--held-out-windows <n>', 'held-out windows of 256 tokens per slice (0 = do not measure)', intOption(0), 16)
    .option('--cache-dir <dir>', 'cache of slices and quantized models (env SLICESERVE_CACHE_DIR; default $XDG_CACHE_HOME/sliceserve or ~/.cache/sliceserve, never the working directory)')
    .option('--host <host>', 'address to listen on (env HOST)', process.env.HOST || '127.0.0.1')
    .option('--port <port>', 'port, 0 = any free one (env PORT; default 8080)', portOption)
    .option('--device <device>', 'cpu | cuda | webgpu | auto (env SLICESERVE_DEVICE; default cpu)')
    .option('--dtype <dtype>', 'graph precision: float32 | float16 (float16 is for GPUs)', dtypeOption, 'float32')
    .option('--threads <n>', 'onnxruntime intra-op threads per model (default: all cores)', intOption(1))
    .option('--max-batch-size <n>', 'sequences per forward pass at most', intOption(1), 16)
    .option('--max-queue <n>', 'requests per model waiting for a batch slot at most, besides those free slots admit at once (>= 1); more get 429', intOption(1), 256)
    .option('--kv-cache-tokens <n>', 'KV budget per model in tokens (default max-batch-size x context)', intOption(1))
    .option('--max-batch-prefill-tokens <n>', 'positions one prefill step computes at most (sequences x longest chunk): longer prompts are fed in chunks between decode steps (chunked prefill); 0 = whole prompts', intOption(0), DEFAULT_MAX_PREFILL_TOKENS)
    .option('--api-key <key>', 'require "Authorization: Bearer <key>" (env SLICESERVE_API_KEY)', process.env.SLICESERVE_API_KEY)
    .option('--metrics-public', 'serve /metrics without the API key (Prometheus scrapers rarely carry one; env SLICESERVE_METRICS_PUBLIC=1)')
    .option('--metrics-include-vllm', "also serve vLLM's vllm:* series on /metrics, as vLLM does, for scrape configs that read /metrics only (they are always on /metrics/vllm; promtool's lint flags their ':' as on vLLM's own /metrics; env SLICESERVE_METRICS_INCLUDE_VLLM=1)")
    .option('--chat-template <file>', "Jinja chat template for /v1/chat/completions, instead of the models' own (tokenizer_config.json chat_template or chat_template.jinja)")
    .option('--max-body <size>', 'JSON body limit: bytes, or a number with b, kb, mb or gb (e.g. 512kb)', bodyLimitOption, '1mb')
    .option('--shutdown-timeout <s>', 'seconds in-flight requests get to finish on SIGTERM', numberOption(0, 3600, true), 30)
    .option('--log-level <level>', `${LOG_LEVELS.join(' | ')} (env LOG_LEVEL)`, process.env.LOG_LEVEL || 'info')
    .action(async (opts: ServeOptions) => {
      const models = (opts.model ?? [DEFAULT_MODEL_DIR]).map(resolveBundled);
      for (const dir of models) {
        if (!fs.existsSync(dir)) throw new Error(`model directory ${dir} does not exist; pass --model <dir> (a llama2.c or Hugging Face model)`);
      }
      if (opts.denseOnly && opts.sparsity) throw new Error(`--dense-only and --sparsity ${opts.sparsity.join(', ')} contradict each other; drop one of them`);
      const sparsities = opts.denseOnly ? [] : (opts.sparsity ?? [0.25]);
      const calibrationFile = resolveBundled(opts.calibration);
      if (sparsities.length > 0 && !fs.existsSync(calibrationFile)) {
        throw new Error(`calibration file ${calibrationFile} does not exist; pass --calibration <file> or --dense-only`);
      }
      // Also for --dense-only: slices made later through /v1/slices are measured too.
      const heldOutFile = opts.heldOutWindows > 0 ? resolveBundled(opts.heldOut) : undefined;
      if (heldOutFile && !fs.existsSync(heldOutFile)) throw new Error(`--held-out ${opts.heldOut}: no such file; pass a text file of stories, or --held-out-windows 0`);
      if (heldOutFile && fs.existsSync(calibrationFile) && fs.realpathSync(heldOutFile) === fs.realpathSync(calibrationFile)) {
        throw new Error(`--held-out ${opts.heldOut} is the calibration text: a slice's quality cost is measured on text it was not calibrated on; pass another --held-out file, or --held-out-windows 0`);
      }
      if (!(LOG_LEVELS as readonly string[]).includes(opts.logLevel)) {
        throw new Error(`--log-level (or env LOG_LEVEL) ${JSON.stringify(opts.logLevel)} is not a level: use one of ${LOG_LEVELS.join(', ')}`);
      }
      const cacheDir = opts.cacheDir ? path.resolve(opts.cacheDir) : defaultCacheDir();
      // Before listening, when startup writes there (slices, quantized models) or the directory
      // was named: a dense-only server with a read-only home still starts (a later /v1/slices
      // job then fails with the reason).
      const named = opts.cacheDir ? '--cache-dir' : process.env.SLICESERVE_CACHE_DIR ? 'env SLICESERVE_CACHE_DIR' : null;
      if (named || sparsities.length > 0 || (opts.quantize ?? []).some((q) => q !== 'none')) {
        try {
          makeDirectories(cacheDir);
          fs.accessSync(cacheDir, fs.constants.W_OK);
        } catch (err) {
          throw new Error(`${named ? `${named} ${cacheDir}` : `the cache directory ${cacheDir}`} is not a writable directory (${err instanceof Error ? err.message : String(err)}); pass --cache-dir <dir>`);
        }
      }
      // PORT is read here, not as the option's default, so that a bad PORT fails `serve` alone.
      const port = opts.port ?? (process.env.PORT ? envPort(process.env.PORT) : 8080);
      const logger = pino({ level: opts.logLevel, base: { service: 'sliceserve' } });
      // Handlers first: a SIGTERM while the server starts (listening, loading, slicing) is a
      // graceful stop too, never node's default exit by signal.
      let server: SliceServer | null = null;
      let stopping = false;
      const stop = (signal: string) => {
        if (stopping) return;
        stopping = true;
        logger.info({ signal }, 'signal received');
        if (server) shutdownAndExit(server);
      };
      const shutdownAndExit = (s: SliceServer) =>
        void s.shutdown(opts.shutdownTimeout * 1000).then(
          () => process.exit(0),
          (err: unknown) => {
            logger.error({ err }, 'shutdown failed');
            process.exit(1);
          },
        );
      process.on('SIGTERM', () => stop('SIGTERM'));
      process.on('SIGINT', () => stop('SIGINT'));
      server = await startServer({
        models,
        sparsities,
        quantize: opts.quantize ?? ['none'],
        quantRotation: opts.quantRotation,
        calibrationFile,
        calWindows: opts.calWindows,
        heldOutFile,
        heldOutWindows: opts.heldOutWindows,
        cacheDir,
        host: opts.host,
        port,
        device: resolveDeviceRequest(opts.device),
        dtype: opts.dtype,
        threads: opts.threads,
        maxBatchSize: opts.maxBatchSize,
        maxQueue: opts.maxQueue,
        kvCacheTokens: opts.kvCacheTokens,
        maxPrefillTokens: opts.maxBatchPrefillTokens > 0 ? opts.maxBatchPrefillTokens : undefined,
        apiKey: opts.apiKey || undefined,
        metricsPublic: opts.metricsPublic ?? envFlag(process.env.SLICESERVE_METRICS_PUBLIC),
        metricsIncludeVllm: opts.metricsIncludeVllm ?? envFlag(process.env.SLICESERVE_METRICS_INCLUDE_VLLM),
        chatTemplateFile: opts.chatTemplate ? path.resolve(opts.chatTemplate) : undefined,
        sparsitiesExplicit: opts.sparsity !== undefined,
        bodyLimit: opts.maxBody,
        logger,
      }).catch((err: unknown) => {
        throw listenError(err, opts.host, port);
      });
      if (stopping) shutdownAndExit(server); // the signal came while it started to listen
      try {
        await server.ready;
      } catch (err) {
        // The message names the model and the reason (server/index.ts `ready`).
        await server.shutdown(0);
        throw err;
      }
    });
}
