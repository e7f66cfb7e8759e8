/**
 * Child process of the memory benchmark (loadtests/bench-memory.ts): does what `sliceserve
 * slice` does (load the model, SliceGPT it with the artifact written to --out as it goes) and
 * appends one JSON line per slicer progress event to a trace file: seconds since start, the
 * phase, RSS and peak RSS (VmHWM) in MiB, so that the benchmark can report per-layer figures.
 *
 * Usage: node dist/loadtests/memory-probe.js <model dir> <sparsity> <out dir> <trace.jsonl> [cal windows]
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadModel } from '../models/load.js';
import { sliceModelWithReport } from '../slicer/index.js';

/** The calibration text `sliceserve slice` uses by default (the repository's copy). */
const CALIBRATION_FILE = path.resolve(__dirname, '..', '..', 'data', 'tinystories-train-sample.txt');

/** VmRSS and VmHWM of this process, MiB (Linux /proc). */
export function residentMiB(): { rss: number; hwm: number } {
  const status = fs.readFileSync('/proc/self/status', 'utf8');
  const kib = (key: string) => Number(new RegExp(`${key}:\\s+(\\d+)`).exec(status)?.[1] ?? NaN);
  return { rss: kib('VmRSS') / 1024, hwm: kib('VmHWM') / 1024 };
}

async function main(): Promise<void> {
  const [modelDir, sparsity, outDir, traceFile, windows] = process.argv.slice(2);
  if (!modelDir || !sparsity || !outDir || !traceFile) throw new Error('usage: memory-probe.js <model dir> <sparsity> <out dir> <trace.jsonl> [cal windows]');
  const t0 = performance.now();
  const trace = fs.openSync(traceFile, 'w');
  const record = (phase: string, fraction: number) => {
    const m = residentMiB();
    fs.writeSync(trace, JSON.stringify({ t: (performance.now() - t0) / 1000, phase, fraction, rss_mib: Math.round(m.rss), hwm_mib: Math.round(m.hwm) }) + '\n');
  };
  record('start', 0);
  const model = loadModel(modelDir);
  record('loaded', 0);
  const { report } = await sliceModelWithReport(
    model,
    { sparsity: Number(sparsity), calibrationFile: CALIBRATION_FILE, outDir, overwrite: true, ...(windows ? { calWindows: Number(windows) } : {}) },
    (p) => record(p.phase, p.fraction),
  );
  record('end', 1);
  fs.writeSync(trace, JSON.stringify({ report }) + '\n');
  fs.closeSync(trace);
}

main().catch((err) => {
  process.stderr.write(`memory-probe: ${err instanceof Error ? err.stack : err}\n`);
  process.exit(1);
});
