/**
 * DecoderSession on the WebGPU provider, KV cache held on the device (present.* as GPU buffers
 * fed back as the past), against a CPU DecoderSession over sequences joining, leaving and
 * reordering; and the same session with the host past (deviceKV: false). Needs a WebGPU
 * adapter: a GPU's Vulkan driver, or Mesa's lavapipe on the CPU (docs/gpu.md). Runs only with
 * SLICESERVE_TEST_WEBGPU=1 (.ci/run sets it when scripts/lavapipe-setup.sh succeeded).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DecoderSession } from '../../runtime/decoder-session.js';
import { tinyModel } from '../helpers/tiny-model.js';
import { runJoinLeaveScenario } from './kv-scenario.js';

const enabled = process.env.SLICESERVE_TEST_WEBGPU === '1';
const skip = enabled ? false : 'no WebGPU adapter requested: run `eval "$(bash scripts/lavapipe-setup.sh)"` (or use a GPU) and set SLICESERVE_TEST_WEBGPU=1';
const SHAPE = { hidden: 32, layers: 2, heads: 4, kvHeads: 2, intermediate: 40, vocab: 50, context: 128 };
const median = (xs: number[]) => xs.slice().sort((a, b) => a - b)[xs.length >> 1];

for (const deviceKV of [true, false]) {
  test(`webgpu DecoderSession (${deviceKV ? 'KV on the device' : 'host KV uploaded each step'}) equals cpu within 1e-4 while sequences join, leave and reorder`, { skip }, async () => {
    const m = tinyModel(SHAPE, 41);
    const gpu = await DecoderSession.create(m, { device: 'webgpu', deviceKV, threads: 1 });
    const cpu = await DecoderSession.create(m, { device: 'cpu', threads: 1 });
    try {
      assert.equal(gpu.device, 'webgpu');
      const res = await runJoinLeaveScenario(gpu, cpu, { steps: 40, seed: 7, vocab: SHAPE.vocab });
      assert.ok(res.maxDiff < 1e-4, `max |webgpu - cpu| = ${res.maxDiff}`);
      assert.equal(res.argmaxMismatches, 0, 'greedy tokens differ');
      const stats = gpu.deviceKVStats;
      assert.equal(stats.enabled, deviceKV);
      if (deviceKV) {
        assert.ok(stats.reused >= 20, `only ${stats.reused} of 40 steps reused the device past: ${JSON.stringify(stats)}`);
        assert.ok((stats.uploaded['batch changed'] ?? 0) >= 1 && stats.uploaded['row out of sync'] === 1, JSON.stringify(stats));
        assert.equal(stats.pastLocation, 'gpu-buffer');
      } else {
        assert.equal(stats.pastLocation, null);
      }
      console.log(`# webgpu ${deviceKV ? 'device KV' : 'host KV'}: max |diff| ${res.maxDiff.toExponential(2)}, median step ${median(res.msTested.slice(1)).toFixed(2)} ms (cpu ${median(res.msReference.slice(1)).toFixed(2)} ms)`);
    } finally {
      await gpu.release();
      await cpu.release();
    }
  });
}
