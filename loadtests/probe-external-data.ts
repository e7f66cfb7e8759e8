/**
 * How onnxruntime-node takes external weights, and what each way costs in memory
 * (docs/memory.md): a graph of 8 MatMuls with 8 distinct 64 MiB float32 weights (512 MiB) is
 * written to `model.onnx` + `weights.bin`, then opened in a fresh child process per way:
 * - `buffer`: model bytes + `externalData: [{ path, data: <Buffer of weights.bin> }]`;
 * - `path`: `InferenceSession.create('<dir>/model.onnx')`, onnxruntime reading weights.bin;
 * - `path-noprepack`: the same with `session.disable_prepacking`;
 * - `string-data`: model bytes + `externalData: [{ path, data: '<file path>' }]` (expected to
 *   be rejected by the Node binding).
 * Each child reports its RSS after creation and after runs, and VmHWM (peak), in MiB, plus
 * batch-1 and batch-16 run times (only comparable within one run).
 *
 * Usage: node dist/loadtests/probe-external-data.js [dir]
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { OnnxGraph } from '../models/onnx/builder.js';

const K = 2048;
const N = 8192;
const COUNT = 8;

function status(): { rss: number; hwm: number } {
  const s = fs.readFileSync('/proc/self/status', 'utf8');
  const kib = (k: string) => Number(new RegExp(`${k}:\\s+(\\d+)`).exec(s)?.[1] ?? NaN);
  return { rss: Math.round(kib('VmRSS') / 1024), hwm: Math.round(kib('VmHWM') / 1024) };
}

/** Writes the probe graph (weights streamed to weights.bin). */
function writeGraph(dir: string): void {
  const g = OnnxGraph.streamingTo('probe', path.join(dir, 'weights.bin'));
  const x = g.input('x', 'float32', ['batch', K]);
  let sum = '';
  for (let i = 0; i < COUNT; i++) {
    const w = new Float32Array(K * N);
    for (let j = i; j < w.length; j += 97) w[j] = ((j + i) % 7) * 0.001; // distinct per i: no constant sharing
    const y = g.op('MatMul', [x, g.initializer(`w${i}`, 'float32', [K, N], w)]);
    sum = sum ? g.op('Add', [sum, y]) : y;
  }
  g.op('Identity', [sum], {}, { output: 'y' });
  g.output('y', 'float32', ['batch', N]);
  fs.writeFileSync(path.join(dir, 'model.onnx'), g.build().model);
}

async function child(dir: string, way: string): Promise<void> {
  const modelFile = path.join(dir, 'model.onnx');
  const weightsFile = path.join(dir, 'weights.bin');
  const options: ort.InferenceSession.SessionOptions = { graphOptimizationLevel: 'all', intraOpNumThreads: 2 };
  const before = status();
  const t0 = performance.now();
  let session: ort.InferenceSession;
  try {
    if (way === 'buffer') {
      session = await ort.InferenceSession.create(fs.readFileSync(modelFile), { ...options, externalData: [{ path: 'weights.bin', data: fs.readFileSync(weightsFile) }] });
    } else if (way === 'string-data') {
      session = await ort.InferenceSession.create(fs.readFileSync(modelFile), { ...options, externalData: [{ path: 'weights.bin', data: weightsFile }] });
    } else {
      session = await ort.InferenceSession.create(modelFile, way === 'path-noprepack' ? { ...options, extra: { session: { disable_prepacking: '1' } } } : options);
    }
  } catch (err) {
    console.log(JSON.stringify({ way, error: (err as Error).message.split('\n')[0] }));
    return;
  }
  const createMs = performance.now() - t0;
  const created = status();
  const timeRuns = async (batch: number, runs: number) => {
    const feeds = { x: new ort.Tensor('float32', new Float32Array(batch * K).fill(1), [batch, K]) };
    await session.run(feeds);
    const t = performance.now();
    for (let i = 0; i < runs; i++) await session.run(feeds);
    return (performance.now() - t) / runs;
  };
  const b1 = await timeRuns(1, 10);
  const b16 = await timeRuns(16, 5);
  const after = status();
  console.log(JSON.stringify({ way, start_rss_mib: before.rss, create_ms: Math.round(createMs), rss_created_mib: created.rss, rss_after_runs_mib: after.rss, peak_mib: after.hwm, batch1_ms: +b1.toFixed(1), batch16_ms: +b16.toFixed(1) }));
}

async function main(): Promise<void> {
  if (process.argv[2] === '--child') return child(process.argv[3]!, process.argv[4]!);
  const dir = process.argv[2] ?? fs.mkdtempSync(path.join(os.tmpdir(), 'probe-external-'));
  fs.mkdirSync(dir, { recursive: true });
  writeGraph(dir);
  console.log(`weights: ${COUNT} x ${K}x${N} float32 = ${(COUNT * K * N * 4) / 2 ** 20} MiB, onnxruntime-node ${ort.env.versions.node ?? ''}`);
  for (const way of ['buffer', 'path', 'path-noprepack', 'string-data']) {
    const r = spawnSync(process.execPath, [__filename, '--child', dir, way], { encoding: 'utf8' });
    process.stdout.write(r.stdout || r.stderr);
  }
  if (!process.argv[2]) fs.rmSync(dir, { recursive: true, force: true });
}

void main();
