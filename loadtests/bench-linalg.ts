/**
 * Benchmark of slicer/linalg: symmetric eigendecomposition per backend, and the float64
 * second moment X^T X of a [tokens, d] calibration signal. Prints markdown tables.
 *
 * Usage: npm run bench:linalg [-- options]
 *   --sizes 288,768,2048,4096   eigh orders n (random SPD matrices, seeded)
 *   --js-max 2048               largest n run on the JS backend (4096 takes ~8-10 min on 2 cores)
 *   --backends js,lapack        eigh backends to time (default: all available)
 *   --moment-d 288,768,2048     widths d of the X^T X benchmark
 *   --tokens 32768              rows of X (128 windows x 256 tokens, PROTOCOL §5.2)
 *   --js-moment-max 288         largest d also timed with the plain JS loop
 *   --eigh-only                 skip the X^T X and matmul benchmarks
 * Example (the slow one, run once): npm run bench:linalg -- --sizes 4096 --js-max 4096 --backends js --eigh-only
 */
import os from 'node:os';
import { parseArgs } from 'node:util';
import {
  eighBackendInfo,
  eighSymmetric,
  matmulF64,
  matmulF64Js,
  MomentAccumulator,
  releaseLinalgSessions,
  seededNormals,
  type EighBackend,
} from '../slicer/linalg/index.js';

const { values: args } = parseArgs({
  options: {
    sizes: { type: 'string', default: '288,768,2048,4096' },
    'js-max': { type: 'string', default: '2048' },
    backends: { type: 'string' },
    'moment-d': { type: 'string', default: '288,768,2048' },
    tokens: { type: 'string', default: '32768' },
    'js-moment-max': { type: 'string', default: '288' },
    'eigh-only': { type: 'boolean', default: false },
  },
});

function intList(text: string, flag: string): number[] {
  const list = text.split(',').map((s) => Number(s.trim()));
  if (list.some((v) => !Number.isInteger(v) || v < 1)) throw new Error(`--${flag} must be a comma-separated list of positive integers, got "${text}"`);
  return list;
}

function seconds(ms: number): string {
  return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(ms >= 10 ? 0 : 1)} ms`;
}

/** Best wall time (ms) of `reps` runs of fn, with the last result. */
async function time<T>(reps: number, fn: () => T | Promise<T>): Promise<{ ms: number; result: T }> {
  let best = Infinity;
  let result!: T;
  for (let r = 0; r < reps; r++) {
    const t0 = performance.now();
    result = await fn();
    best = Math.min(best, performance.now() - t0);
  }
  return { ms: best, result };
}

/** Seeded SPD matrix X^T X / rows with X [2n, n] standard normal (a Wishart spectrum). */
async function randomSpd(n: number, seed: number): Promise<Float64Array> {
  const rows = 2 * n;
  const x = seededNormals(rows * n, seed);
  const h = await matmulF64(x, [rows, n], x, [rows, n], { transA: true });
  for (let i = 0; i < n; i++) for (let j = 0; j < i; j++) h[j * n + i] = h[i * n + j];
  for (let i = 0; i < h.length; i++) h[i] /= rows;
  return h;
}

/** max |A V - V diag(values)| / max |values|, computed with matmulF64. */
async function relativeResidual(a: Float64Array, values: Float64Array, vectors: Float64Array, n: number): Promise<number> {
  const av = await matmulF64(a, [n, n], vectors, [n, n]);
  let worst = 0;
  let scale = 0;
  for (let j = 0; j < n; j++) scale = Math.max(scale, Math.abs(values[j]));
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) worst = Math.max(worst, Math.abs(av[i * n + j] - vectors[i * n + j] * values[j]));
  }
  return worst / scale;
}

async function main(): Promise<void> {
  const sizes = intList(args.sizes!, 'sizes');
  const jsMax = intList(args['js-max']!, 'js-max')[0];
  const momentDims = intList(args['moment-d']!, 'moment-d');
  const tokens = intList(args.tokens!, 'tokens')[0];
  const jsMomentMax = intList(args['js-moment-max']!, 'js-moment-max')[0];
  const info = eighBackendInfo();
  const backends = (args.backends ? args.backends.split(',') : info.available) as EighBackend[];
  for (const b of backends) {
    if (!info.available.includes(b)) throw new Error(`backend ${b} is not available here (${info.lapackUnavailable ?? 'unknown backend'})`);
  }

  console.log(`# slicer/linalg benchmark\n`);
  console.log(`- CPU: ${os.cpus()[0]?.model ?? 'unknown'}, ${os.availableParallelism()} threads; Node ${process.version}`);
  console.log(`- LAPACK: ${info.lapackImplementation ?? `unavailable (${info.lapackUnavailable})`}\n`);

  console.log('## eighSymmetric (random SPD, float64; best of 3 for n <= 768, else 1 run)\n');
  console.log(`| n | ${backends.map((b) => `${b} time | ${b} residual`).join(' | ')} |`);
  console.log(`|---|${backends.map(() => '---|---').join('|')}|`);
  for (const n of sizes) {
    const a = await randomSpd(n, n);
    const cells: string[] = [];
    for (const backend of backends) {
      if (backend === 'js' && n > jsMax) {
        cells.push(`skipped (--js-max ${jsMax})`, '');
        continue;
      }
      const { ms, result } = await time(n <= 768 ? 3 : 1, () => eighSymmetric(a, n, { backend }));
      const residual = await relativeResidual(a, result.values, result.vectors, n);
      cells.push(seconds(ms), residual.toExponential(1));
    }
    console.log(`| ${n} | ${cells.join(' | ')} |`);
  }

  if (!args['eigh-only']) await benchProducts(tokens, momentDims, jsMomentMax);
  await releaseLinalgSessions();
}

async function benchProducts(tokens: number, momentDims: number[], jsMomentMax: number): Promise<void> {
  console.log(`\n## Second moment H = X^T X, X [${tokens}, d], float64 accumulation (best of 3)\n`);
  console.log('| d | MomentAccumulator, float64 X | MomentAccumulator, float32 X | plain JS loop |');
  console.log('|---|---|---|---|');
  for (const d of momentDims) {
    const x = seededNormals(tokens * d, d + 1);
    const x32 = Float32Array.from(x);
    const f64 = await time(3, async () => {
      const acc = new MomentAccumulator(d);
      await acc.add(x, tokens);
      return acc.moment();
    });
    const f32 = await time(3, async () => {
      const acc = new MomentAccumulator(d);
      await acc.add(x32, tokens);
      return acc.moment();
    });
    const js = d <= jsMomentMax ? seconds((await time(1, () => matmulF64Js(x, [tokens, d], x, [tokens, d], { transA: true }))).ms) : `skipped (--js-moment-max ${jsMomentMax})`;
    console.log(`| ${d} | ${seconds(f64.ms)} | ${seconds(f32.ms)} | ${js} |`);
  }

  const n = 2048;
  const a = seededNormals(n * n, 5);
  const b = seededNormals(n * n, 6);
  const mm = await time(3, () => matmulF64(a, [n, n], b, [n, n]));
  console.log(`\nmatmulF64 ${n}x${n}x${n}: ${seconds(mm.ms)} (best of 3)`);
}

main().catch((err: unknown) => {
  console.error(`bench-linalg: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
