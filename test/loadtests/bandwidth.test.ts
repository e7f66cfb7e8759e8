import assert from 'node:assert/strict';
import { test } from 'node:test';
import { measureReadBandwidth, readProbeWasm } from '../../loadtests/bandwidth.js';

// The project compiles without lib.dom, which declares WebAssembly: type the few members used.
interface WasmApi {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object) => { exports: Record<string, unknown> };
}
const Wasm = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;

test('the WebAssembly read probe sums int64 values exactly', () => {
  const inst = new Wasm.Instance(new Wasm.Module(readProbeWasm()));
  const { mem, sum } = inst.exports as { mem: { grow(pages: number): number; buffer: ArrayBuffer }; sum: (begin: number, end: number) => number };
  mem.grow(1);
  const a = new BigInt64Array(mem.buffer, 0, 1024);
  let expected = 0n;
  for (let i = 0; i < a.length; i++) {
    a[i] = BigInt((i * 7919) % 1000) - 300n;
    expected += a[i];
  }
  assert.equal(sum(0, 8 * 1024), Number(expected));
  // a sub-range: values 8..15 (64 bytes)
  assert.equal(sum(64, 128), Number(a.slice(8, 16).reduce((s, v) => s + v, 0n)));
});

test('measureReadBandwidth runs threads over their buffers and reports a positive rate', async () => {
  const r = await measureReadBandwidth(2, 2 ** 20, 2);
  assert.equal(r.threads, 2);
  assert.equal(r.bytes_per_thread, 2 ** 20);
  assert.equal(r.passes, 2);
  assert.ok(Number.isFinite(r.read_bytes_per_s) && r.read_bytes_per_s > 0);
  assert.match(r.method, /2 worker threads/);
});
