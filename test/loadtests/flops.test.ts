import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  bandwidthBoundTokensPerSecond, inferSliceHead, matmulFlopsPerToken, matmulWeightsPerToken, parameterCount, theoreticalSpeedup,
} from '../../loadtests/flops.js';
import { matmulShapeOf } from '../../loadtests/models.js';
import type { DecoderConfig } from '../../models/config.js';
import { layoutOf } from '../../models/registry.js';
import { SYNTH_PRESETS, synthConfig } from '../../models/synth.js';
import { expectedWeightShapes } from '../../models/validate.js';
import { slicedWidth } from '../../slicer/width.js';

// A tiny config, counted by hand: d = 8, f = 12, 2 layers, 2 heads / 1 KV head of size 4
// (q out 8, k/v out 4), vocab 10.
const TINY = { hidden_size: 8, intermediate_size: 12, num_hidden_layers: 2, num_attention_heads: 2, num_key_value_heads: 1, head_dim: 4, vocab_size: 10 };

test('dense: q/k/v/o + gate/up/down per layer + head, no shortcuts', () => {
  // per layer: attention 8*(8+4+4) + 8*8 = 192; mlp 2*8*12 + 12*8 = 288; head 8*10 = 80
  assert.deepEqual(matmulWeightsPerToken(TINY), { attention: 384, mlp: 576, shortcuts: 0, head: 80, total: 1040 });
  assert.equal(matmulFlopsPerToken(TINY), 2080);
});

test("sliced to d' = 4, head not sliced: the last layer writes the full width", () => {
  // layer 0: attention 4*16 + 8*4 = 96; mlp 2*4*12 + 12*4 = 144; shortcuts 4*4 + 4*4 = 32
  // layer 1: attention 96; mlp 96 + 12*8 = 192; shortcuts 4*4 + 4*8 = 48; head 8*10 = 80
  const w = matmulWeightsPerToken({ ...TINY, sliced_hidden_size: 4 });
  assert.deepEqual(w, { attention: 192, mlp: 336, shortcuts: 80, head: 80, total: 688 });
  assert.equal(matmulFlopsPerToken({ ...TINY, sliced_hidden_size: 4 }), 1376);
  assert.ok(Math.abs(theoreticalSpeedup(TINY, 4) - 1040 / 688) < 1e-12);
});

test("sliced to d' = 4 with a sliced head", () => {
  // both layers: attention 96, mlp 144, shortcuts 32; head 4*10 = 40
  assert.deepEqual(matmulWeightsPerToken({ ...TINY, sliced_hidden_size: 4, slice_head: true }), { attention: 192, mlp: 288, shortcuts: 64, head: 40, total: 584 });
  assert.ok(Math.abs(theoreticalSpeedup(TINY, 4, true) - 1040 / 584) < 1e-12);
});

test('bench-110m at sparsity 0.5 (d\' = 384) is expected to run ~1.5x faster than dense', () => {
  const bench = { hidden_size: 768, intermediate_size: 2048, num_hidden_layers: 12, num_attention_heads: 12, num_key_value_heads: 4, vocab_size: 32000 };
  // dense: 12 * (768*(768+256+256) + 768*768 + 3*768*2048) + 768*32000 = 100,073,472
  assert.equal(matmulWeightsPerToken(bench).total, 100_073_472);
  const speedup = theoreticalSpeedup(bench, 384);
  assert.ok(speedup > 1.45 && speedup < 1.55, `speedup ${speedup}`);
  assert.ok(theoreticalSpeedup(bench, 576) > 1.1 && theoreticalSpeedup(bench, 576) < speedup);
});

test('whether the head was sliced is inferred from the parameter count', () => {
  for (const sliceHead of [true, false]) {
    for (const norms of [true, false]) {
      const p = parameterCount({ ...TINY, sliced_hidden_size: 4, slice_head: sliceHead }, norms);
      assert.equal(inferSliceHead(TINY, 4, p), sliceHead, `slice_head ${sliceHead}, norms ${norms}`);
    }
  }
  assert.equal(inferSliceHead(TINY, 4, undefined), false);
});

test('bad shapes throw; the bandwidth bound is bandwidth / bytes', () => {
  assert.throws(() => matmulWeightsPerToken({ ...TINY, sliced_hidden_size: 9 }), RangeError);
  assert.throws(() => matmulWeightsPerToken({ ...TINY, intermediate_size: 0 }), RangeError);
  assert.throws(() => matmulWeightsPerToken({ ...TINY, head_dim: undefined, num_attention_heads: 3 }), RangeError);
  assert.equal(bandwidthBoundTokensPerSecond(400e6, 20e9), 50);
});

test('every family: the count equals the 2-D weights the layout holds (embeddings excepted), dense and sliced', () => {
  // An independent count: models/validate.ts expectedWeightShapes lists every tensor of a
  // (sliced) config; the matmul weights are its 2-D tensors but the embedding lookups.
  for (const name of ['opt-125m', 'phi-2', 'qwen3-0.6b', 'llama-3.2-1b', 'bench-110m']) {
    const dense = synthConfig(SYNTH_PRESETS[name]);
    const layout = layoutOf(dense);
    for (const sparsity of [0, 0.25]) {
      for (const sliceHead of [false, true]) {
        const width = slicedWidth(sparsity, dense.hidden_size, 8);
        const config: DecoderConfig = sparsity === 0 ? dense : {
          ...dense, fused_norms: true, tie_word_embeddings: false,
          sliceserve: {
            sparsity, original_hidden_size: dense.hidden_size, sliced_hidden_size: width, round_interval: 8, slice_head: sliceHead,
            calibration: { file: 'x', sha256: 'x', windows: 1, seq_len: 1, tokens: 1 }, source_model_sha256: 'x', created: 'x',
          },
        };
        let expected = 0;
        for (const [tensor, shape] of expectedWeightShapes(config)) {
          if (shape.length !== 2 || tensor === layout.embedPositions) continue;
          if (tensor === layout.embedTokens && !config.tie_word_embeddings) continue; // tied: the head reads it
          expected += shape[0] * shape[1];
        }
        const got = matmulWeightsPerToken({ ...matmulShapeOf(dense), sliced_hidden_size: width, slice_head: sliceHead }).total;
        assert.equal(got, expected, `${name} sparsity ${sparsity} slice_head ${sliceHead}`);
      }
    }
  }
});
