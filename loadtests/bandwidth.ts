/**
 * A multi-threaded memory READ bandwidth probe, to bound batch-1 decode speed: decoding one
 * token reads every weight once, so tokens/s <= read bandwidth / weight bytes per token.
 * A read probe (not memcpy, which also writes) is the right bound: llama.cpp decodes the
 * bench-110m shape at ~92 % of it on this machine kind, above the memcpy figure.
 *
 * Each worker thread owns a 256 MiB buffer (larger than the per-core caches) and sums it
 * as 64-bit integers with a WebAssembly SIMD loop (four independent 128-bit accumulators,
 * 64 bytes per iteration): plain JavaScript adds one double at a time and measures its own
 * speed (~5 GB/s per thread here), not the memory's. All threads start each pass together
 * on an Atomics barrier, and a pass lasts until the slowest thread is done.
 */
import { performance } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';

/** Result of {@link measureReadBandwidth}. */
export interface BandwidthResult {
  /** Best pass: bytes read by all threads / wall time, in bytes per second. */
  read_bytes_per_s: number;
  threads: number;
  /** Bytes each thread reads per pass. */
  bytes_per_thread: number;
  passes: number;
  method: string;
}

function uleb(n: number): number[] {
  const out: number[] = [];
  do {
    let b = n & 0x7f;
    n >>>= 7;
    if (n !== 0) b |= 0x80;
    out.push(b);
  } while (n !== 0);
  return out;
}

/**
 * The probe as a WebAssembly module (binary format, SIMD proposal, supported by Node >= 16).
 * It exports `mem` (one 64 KiB page; grow it to hold the buffer) and
 * `sum(begin: i32, end: i32) -> f64`: the sum of the little-endian int64 values in
 * `[begin, end)` (byte offsets; `end - begin` a positive multiple of 64), read with
 * `v128.load` into four `i64x2.add` accumulators.
 */
export function readProbeWasm(): Uint8Array {
  const ACC = 4;
  const I64X2_ADD = [0xfd, 0xce, 0x01];
  const body: number[] = [0x01, ACC, 0x7b]; // locals 2..5: v128
  body.push(0x03, 0x40); // loop
  for (let k = 0; k < ACC; k++) {
    // acc_k = i64x2.add(acc_k, v128.load offset=16k align=16 (begin))
    body.push(0x20, 2 + k, 0x20, 0x00, 0xfd, 0x00, 0x04, ...uleb(16 * k), ...I64X2_ADD, 0x21, 2 + k);
  }
  // begin += 64; br_if loop (begin < end)
  body.push(0x20, 0x00, 0x41, 0xc0, 0x00, 0x6a, 0x22, 0x00, 0x20, 0x01, 0x49, 0x0d, 0x00, 0x0b);
  body.push(0x20, 2);
  for (let k = 1; k < ACC; k++) body.push(0x20, 2 + k, ...I64X2_ADD);
  // lane 0 + lane 1 as i64, converted to f64
  body.push(0x22, 2, 0xfd, 0x1d, 0x00, 0x20, 2, 0xfd, 0x1d, 0x01, 0x7c, 0xb9, 0x0b);
  const code = [0x01, ...uleb(body.length), ...body];
  return new Uint8Array([
    ...[0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00], // magic, version 1
    ...[0x01, 0x07, 0x01, 0x60, 0x02, 0x7f, 0x7f, 0x01, 0x7c], // type: (i32, i32) -> f64
    ...[0x03, 0x02, 0x01, 0x00], // function 0 has type 0
    ...[0x05, 0x03, 0x01, 0x00, 0x01], // memory: min 1 page
    ...[0x07, 0x0d, 0x02, 0x03, 0x6d, 0x65, 0x6d, 0x02, 0x00, 0x03, 0x73, 0x75, 0x6d, 0x00, 0x00], // exports mem, sum
    0x0a,
    ...uleb(code.length),
    ...code,
  ]);
}

const WORKER_SOURCE = `
const { workerData, parentPort } = require('node:worker_threads');
const { wasm, bytes, passes, ctrl } = workerData;
const c = new Int32Array(ctrl);
const inst = new WebAssembly.Instance(new WebAssembly.Module(wasm));
inst.exports.mem.grow(Math.ceil(bytes / 65536));
new BigInt64Array(inst.exports.mem.buffer, 0, bytes / 8).fill(3n);
let sink = 0;
for (let p = 1; p <= passes; p++) {
  Atomics.add(c, 1, 1);
  Atomics.notify(c, 1);
  while (Atomics.load(c, 0) < p) Atomics.wait(c, 0, p - 1, 1000);
  sink += inst.exports.sum(0, bytes);
  Atomics.add(c, 2, 1);
  Atomics.notify(c, 2);
}
parentPort.postMessage(sink);
`;

function waitAtLeast(c: Int32Array, index: number, target: number): void {
  for (;;) {
    const v = Atomics.load(c, index);
    if (v >= target) return;
    Atomics.wait(c, index, v, 1000);
  }
}

/**
 * Measures the aggregate memory read bandwidth of `threads` threads. Runs `passes` timed
 * passes (the first also warms the arrays up) and returns the best one. Blocks the calling
 * thread while the passes run (a few seconds with the defaults).
 *
 * @param threads worker threads (default: the number of CPU cores the process may use).
 * @param bytesPerThread buffer size per thread, rounded down to a multiple of 64 bytes (default 256 MiB).
 * @param passes timed passes (default 6).
 * @throws Error when a worker fails.
 */
export async function measureReadBandwidth(threads: number, bytesPerThread = 256 * 2 ** 20, passes = 6): Promise<BandwidthResult> {
  const bytes = Math.max(64, Math.floor(bytesPerThread / 64) * 64);
  const wasm = readProbeWasm();
  const ctrl = new SharedArrayBuffer(12);
  const c = new Int32Array(ctrl);
  const workers = Array.from({ length: threads }, () => new Worker(WORKER_SOURCE, { eval: true, workerData: { wasm, bytes, passes, ctrl } }));
  const exits = workers.map(
    (w) =>
      new Promise<void>((resolve, reject) => {
        w.once('error', reject);
        w.once('message', () => resolve());
      }),
  );
  let best = Infinity;
  try {
    for (let p = 1; p <= passes; p++) {
      waitAtLeast(c, 1, threads * p);
      const t0 = performance.now();
      Atomics.store(c, 0, p);
      Atomics.notify(c, 0);
      waitAtLeast(c, 2, threads * p);
      best = Math.min(best, performance.now() - t0);
    }
    await Promise.all(exits);
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
  }
  return {
    read_bytes_per_s: (threads * bytes) / (best / 1000),
    threads,
    bytes_per_thread: bytes,
    passes,
    method: `${threads} worker threads, each summing its own ${Math.round(bytes / 2 ** 20)} MiB buffer with WebAssembly SIMD loads (read only, no writes), best of ${passes} synchronized passes`,
  };
}
