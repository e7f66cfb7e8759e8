/**
 * Memory benchmark (issue 13, "bounded memory"; docs/memory.md): peak RSS and wall time of
 * `synth`, `slice` and `serve` (dense, then sliced) on a synthetic model, each in its own
 * process under GNU time (`/usr/bin/time -v`, its "Maximum resident set size"), with per-layer
 * slicing figures (seconds and RSS after each layer, from a traced slice: memory-probe.ts) and
 * an extrapolation to a 7B model from them. Not a CI test: a 3B run takes an hour or more on
 * 2 cores and needs ~25 GB of free disk.
 *
 * Usage: npm run bench:memory -- [options]
 *   --preset tinyllama-1.1b     synth preset (models/synth.ts), e.g. llama-3.2-3b
 *   --dtype float32             on-disk dtype of the synthetic checkpoint (bfloat16: as shipped)
 *   --model DIR                 measure this Hugging Face directory instead of a synthetic one
 *   --sparsity 0.25             slicing sparsity
 *   --dir .cache/mem            where models and results go
 *   --steps synth,slice,serve-dense,serve-sliced   what to run (a step whose output exists is reused)
 *   --cal-windows 128           calibration windows of the slice
 *   --requests 3                greedy completions (32 tokens) per served model
 * Writes <dir>/<preset>-<dtype>-sparsity<s>.json and prints a markdown summary.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { loadModel } from '../models/load.js';
import { countParameters } from '../models/parameters.js';
import { SYNTH_PRESETS } from '../models/synth.js';
import { freePort } from './server-process.js';

const REPO = path.resolve(__dirname, '..', '..');
const CLI = path.join(REPO, 'bin', 'sliceserve.js');
const PROBE = path.join(__dirname, 'memory-probe.js');
const GNU_TIME = '/usr/bin/time';

const { values: args } = parseArgs({
  options: {
    preset: { type: 'string', default: 'tinyllama-1.1b' },
    model: { type: 'string' },
    dtype: { type: 'string', default: 'float32' },
    sparsity: { type: 'string', default: '0.25' },
    dir: { type: 'string', default: path.join(REPO, '.cache', 'mem') },
    steps: { type: 'string', default: 'synth,slice,serve-dense,serve-sliced' },
    'cal-windows': { type: 'string', default: '128' },
    requests: { type: 'string', default: '3' },
  },
});

/** What GNU time reported for one process. */
interface Timed {
  /** Maximum resident set size, MiB. */
  maxRssMiB: number;
  wallS: number;
  exitCode: number;
}

/** Parses `/usr/bin/time -v` output. */
export function parseGnuTime(text: string): Timed {
  const rss = /Maximum resident set size \(kbytes\):\s*(\d+)/.exec(text);
  const wall = /Elapsed \(wall clock\) time \(h:mm:ss or m:ss\):\s*([\d:.]+)/.exec(text);
  const exit = /Exit status:\s*(\d+)/.exec(text);
  if (!rss || !wall) throw new Error(`no GNU time report in: ${text.slice(-400)}`);
  const parts = wall[1].split(':').map(Number);
  const wallS = parts.reduce((s, p) => s * 60 + p, 0);
  return { maxRssMiB: Number(rss[1]) / 1024, wallS, exitCode: exit ? Number(exit[1]) : 0 };
}

/** Runs `node <argv>` under GNU time; resolves with its report and output. */
function timedNode(argv: string[], label: string, onStart?: (pid: number) => void): { done: Promise<Timed & { output: string }>; pid: () => number | undefined } {
  const report = path.join(args.dir!, `${label}.time.txt`);
  const child = spawn(GNU_TIME, ['-v', '-o', report, process.execPath, ...argv], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (d) => (output += d));
  child.stderr.on('data', (d) => (output += d));
  if (child.pid !== undefined) onStart?.(child.pid);
  const done = new Promise<Timed & { output: string }>((resolve, reject) => {
    child.on('error', reject);
    child.on('exit', () => {
      try {
        resolve({ ...parseGnuTime(fs.readFileSync(report, 'utf8')), output });
      } catch (err) {
        reject(new Error(`${label}: ${(err as Error).message}\n${output.slice(-2000)}`));
      }
    });
  });
  // The node process is GNU time's child.
  const pid = () => {
    try {
      const children = fs.readFileSync(`/proc/${child.pid}/task/${child.pid}/children`, 'utf8').trim().split(/\s+/).map(Number);
      return children.find((p) => p > 0);
    } catch {
      return undefined;
    }
  };
  return { done, pid };
}

function statusMiB(pid: number): { rss: number; hwm: number } | null {
  try {
    const s = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const kib = (k: string) => Number(new RegExp(`${k}:\\s+(\\d+)`).exec(s)?.[1] ?? NaN);
    return { rss: kib('VmRSS') / 1024, hwm: kib('VmHWM') / 1024 };
  } catch {
    return null;
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Serves `model` alone, waits until ready, runs greedy completions, stops it with SIGTERM. */
async function serve(model: string, label: string, requests: number): Promise<Record<string, unknown>> {
  const port = await freePort();
  const run = timedNode([CLI, 'serve', '--model', model, '--dense-only', '--port', String(port), '--log-level', 'warn'], label);
  const t0 = performance.now();
  let pid: number | undefined;
  let readyS = NaN;
  for (;;) {
    pid ??= run.pid();
    try {
      const res = await fetch(`http://127.0.0.1:${port}/health/ready`, { signal: AbortSignal.timeout(2000) });
      if (res.ok) {
        readyS = (performance.now() - t0) / 1000;
        break;
      }
    } catch {
      /* not up yet */
    }
    if ((performance.now() - t0) / 1000 > 3 * 3600) throw new Error(`${label}: not ready after 3 hours`);
    await Promise.race([sleep(1000), run.done.then((r) => { throw new Error(`${label}: the server exited during startup\n${r.output.slice(-2000)}`); })]);
  }
  const atReady = pid !== undefined ? statusMiB(pid) : null;
  const models = (await (await fetch(`http://127.0.0.1:${port}/v1/models`)).json()) as { data: { id: string }[] };
  const id = models.data[0]!.id;
  const completions: { seconds: number; tokens: number; text: string }[] = [];
  for (let i = 0; i < requests; i++) {
    const t = performance.now();
    const res = await fetch(`http://127.0.0.1:${port}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: id, prompt: 'Once upon a time', max_tokens: 32, temperature: 0, ignore_eos: true }),
    });
    const body = (await res.json()) as { choices: { text: string }[]; usage: { completion_tokens: number } };
    completions.push({ seconds: (performance.now() - t) / 1000, tokens: body.usage.completion_tokens, text: body.choices[0]!.text });
  }
  const settled = pid !== undefined ? statusMiB(pid) : null;
  if (pid !== undefined) process.kill(pid, 'SIGTERM');
  const timed = await run.done;
  return {
    model: id,
    ready_s: readyS,
    rss_at_ready_mib: atReady?.rss,
    rss_after_requests_mib: settled?.rss,
    max_rss_mib: timed.maxRssMiB,
    completions,
    greedy_identical: completions.every((c) => c.text === completions[0]!.text),
  };
}

/** Bytes of a model's weights on disk (safetensors files). */
function safetensorsBytes(dir: string): number {
  return fs.readdirSync(dir).filter((f) => f.endsWith('.safetensors')).reduce((n, f) => n + fs.statSync(path.join(dir, f)).size, 0);
}

/** Per-layer figures from a slice trace: seconds of each layer and RSS when it finished. */
function perLayer(trace: { t: number; phase: string; rss_mib: number; hwm_mib: number }[]): { layer: number; seconds: number; rss_mib: number; hwm_mib: number }[] {
  const out: { layer: number; seconds: number; rss_mib: number; hwm_mib: number }[] = [];
  let last = trace.find((e) => e.phase === 'embedding');
  for (const e of trace) {
    const m = /^layer (\d+) output$/.exec(e.phase);
    if (!m || !last) continue;
    out.push({ layer: Number(m[1]), seconds: e.t - last.t, rss_mib: e.rss_mib, hwm_mib: e.hwm_mib });
    last = e;
  }
  return out;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

async function main(): Promise<void> {
  const preset = args.model ? path.basename(path.resolve(args.model)) : args.preset!;
  const dtype = args.dtype!;
  if (!args.model && !SYNTH_PRESETS[preset]) throw new Error(`--preset ${preset}: choose one of ${Object.keys(SYNTH_PRESETS).join(', ')}`);
  if (!fs.existsSync(GNU_TIME)) throw new Error(`${GNU_TIME} is missing: install GNU time (Debian: apt-get install time)`);
  const steps = new Set(args.steps!.split(','));
  if (args.model) steps.delete('synth');
  fs.mkdirSync(args.dir!, { recursive: true });
  const modelDir = args.model ? path.resolve(args.model) : path.join(args.dir!, `${preset}-${dtype}`);
  const slicedDir = path.join(args.dir!, `${preset}-${dtype}-sliced-${args.sparsity}`);
  let result: Record<string, unknown> = {
    preset, dtype, sparsity: Number(args.sparsity),
    machine: { cpus: (await import('node:os')).cpus().length, memory_gib: (await import('node:os')).totalmem() / 2 ** 30 },
    started: new Date().toISOString(),
  };
  const resultFile = path.join(args.dir!, `${preset}-${dtype}-sparsity${args.sparsity}.json`);
  // Steps measured by an earlier run (and not rerun now) keep their figures.
  if (fs.existsSync(resultFile)) result = { ...(JSON.parse(fs.readFileSync(resultFile, 'utf8')) as Record<string, unknown>), ...result };
  const save = () => fs.writeFileSync(resultFile, JSON.stringify(result, null, 2) + '\n');

  if (steps.has('synth') && !fs.existsSync(path.join(modelDir, 'config.json'))) {
    process.stderr.write(`[memory] synth ${preset} (${dtype}) -> ${modelDir}\n`);
    const t = await timedNode([CLI, 'synth', '--preset', preset, '--dtype', dtype, '--out', modelDir, '--overwrite'], `${preset}-${dtype}-synth`).done;
    if (t.exitCode !== 0) throw new Error(`synth failed:\n${t.output}`);
    result.synth = { wall_s: t.wallS, max_rss_mib: t.maxRssMiB };
    save();
  }
  // Counted from the directory's shapes (the model is opened lazily: nothing is read).
  const parameters = countParameters(loadModel(modelDir).weights);
  Object.assign(result, { parameters, f32_weight_bytes: parameters * 4, disk_bytes: safetensorsBytes(modelDir) });

  if (steps.has('slice') && !fs.existsSync(path.join(slicedDir, 'config.json'))) {
    process.stderr.write(`[memory] slice ${modelDir} at ${args.sparsity} -> ${slicedDir}\n`);
    const traceFile = path.join(args.dir!, `${preset}-${dtype}-slice.trace.jsonl`);
    const t = await timedNode([PROBE, modelDir, args.sparsity!, slicedDir, traceFile, args['cal-windows']!], `${preset}-${dtype}-slice`).done;
    if (t.exitCode !== 0) throw new Error(`slice failed:\n${t.output}`);
    const lines = fs.readFileSync(traceFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    const events = lines.filter((l) => 'phase' in l);
    const report = lines.find((l) => 'report' in l)?.report;
    const layers = perLayer(events);
    result.slice = {
      wall_s: t.wallS,
      max_rss_mib: t.maxRssMiB,
      load_s: events.find((e) => e.phase === 'loaded')?.t,
      embedding_done_s: events.find((e) => e.phase === 'embedding')?.t,
      timings: report?.timings,
      width: report?.width,
      parameters_after: report?.parametersAfter,
      per_layer: layers,
      median_layer_s: median(layers.map((l) => l.seconds)),
      max_layer_rss_mib: Math.max(...layers.map((l) => l.rss_mib)),
    };
    save();
  }
  if (fs.existsSync(slicedDir)) result.sliced_disk_bytes = safetensorsBytes(slicedDir);

  const requests = Number(args.requests);
  if (steps.has('serve-dense')) {
    process.stderr.write(`[memory] serve ${modelDir}\n`);
    result.serve_dense = await serve(modelDir, `${preset}-${dtype}-serve-dense`, requests);
    save();
  }
  if (steps.has('serve-sliced') && fs.existsSync(slicedDir)) {
    process.stderr.write(`[memory] serve ${slicedDir}\n`);
    result.serve_sliced = await serve(slicedDir, `${preset}-${dtype}-serve-sliced`, requests);
    save();
  }
  result.finished = new Date().toISOString();
  save();
  console.log(markdown(result));
  process.stderr.write(`[memory] wrote ${resultFile}\n`);
}

/** A markdown summary of one run. */
function markdown(r: Record<string, unknown>): string {
  const gib = (mib: unknown) => (typeof mib === 'number' ? `${(mib / 1024).toFixed(2)} GiB` : 'n/a');
  const f32 = (r.f32_weight_bytes as number) / 2 ** 20;
  const ratio = (mib: unknown, of: number) => (typeof mib === 'number' ? `${(mib / of).toFixed(2)}x` : '');
  const lines = [`### ${r.preset} (${r.dtype} on disk, ${((r.parameters as number) / 1e9).toFixed(2)} B parameters, float32 weights ${gib(f32)})`, '',
    '| step | wall | peak RSS (GNU time) | peak / float32 weight bytes |', '|---|---|---|---|'];
  const row = (name: string, s: { wall_s?: number; max_rss_mib?: number; ready_s?: number } | undefined, of = f32) => {
    if (s) lines.push(`| ${name} | ${(s.ready_s ?? s.wall_s ?? NaN).toFixed(0)} s${s.ready_s !== undefined ? ' to ready' : ''} | ${gib(s.max_rss_mib)} | ${ratio(s.max_rss_mib, of)} |`);
  };
  row('synth', r.synth as never);
  row('slice', r.slice as never);
  row('serve dense', r.serve_dense as never);
  const slicedF32 = (((r.slice as { parameters_after?: number } | undefined)?.parameters_after ?? NaN) * 4) / 2 ** 20;
  row('serve sliced', r.serve_sliced as never, Number.isFinite(slicedF32) ? slicedF32 : (r.sliced_disk_bytes as number) / 2 ** 20);
  const slice = r.slice as { per_layer: { layer: number; seconds: number; rss_mib: number }[]; median_layer_s: number } | undefined;
  if (slice) {
    lines.push('', `Per layer (slice): median ${slice.median_layer_s.toFixed(1)} s; RSS after each layer (MiB): ${slice.per_layer.map((l) => l.rss_mib).join(', ')}`);
  }
  return lines.join('\n');
}

main().catch((err) => {
  process.stderr.write(`bench-memory: ${err instanceof Error ? err.message : err}\n`);
  process.exit(1);
});
