import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  blockQuantJson,
  dequantizeBlockwise,
  matMulNBitsLayout,
  packCodes,
  QUANT_PRESETS,
  QuantizationError,
  quantizeBlockwise,
  quantizedWeightBytes,
  unpackCodes,
  zeroPointAt,
  type BlockQuantOptions,
  type QuantBits,
} from '../../models/quant/index.js';
import type { WeightTensor } from '../../models/types.js';
import { seededNormals } from '../../slicer/linalg/index.js';

const tensor = (shape: [number, number], values: ArrayLike<number>): WeightTensor => ({ shape, data: Float32Array.from(values) });
const range = (n: number, f: (i: number) => number) => Array.from({ length: n }, (_, i) => f(i));
const hex = (bytes: Uint8Array) => Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join(' ');

/** Gaussian weights with a few large outliers per row (as trained LLM weights have). */
function weightsWithOutliers(N: number, K: number, seed: number): WeightTensor {
  const g = seededNormals(N * K, seed);
  const data = new Float32Array(N * K);
  for (let i = 0; i < data.length; i++) data[i] = 0.02 * g[i] * (i % 97 === 5 ? 25 : 1);
  return { shape: [N, K], data };
}

describe('MatMulNBits layout', () => {
  it('follows the spec sizes: B [N, ceil(K/bs), bs*bits/8], zero points ceil(kBlocks*bits/8) per row', () => {
    const L = matMulNBitsLayout(3, 100, { bits: 4, blockSize: 32 });
    assert.deepEqual([L.kBlocks, L.blobSize, L.zeroPointBytesPerRow, L.midpoint, L.maxCode], [4, 16, 2, 8, 15]);
    const L8 = matMulNBitsLayout(3, 100, { bits: 8, blockSize: 64 });
    assert.deepEqual([L8.kBlocks, L8.blobSize, L8.zeroPointBytesPerRow, L8.midpoint, L8.maxCode], [2, 64, 2, 128, 255]);
    assert.equal(matMulNBitsLayout(1, 48, { bits: 4, blockSize: 16 }).zeroPointBytesPerRow, 2); // 3 blocks -> 2 bytes
  });

  it('refuses bits other than 4/8 and block sizes that are not powers of two in [16, 256]', () => {
    for (const blockSize of [8, 24, 48, 512, 0, -16, 32.5]) {
      assert.throws(() => matMulNBitsLayout(4, 64, { bits: 4, blockSize }), (e: unknown) => e instanceof QuantizationError && /power of two from 16 to 256/.test(e.message));
    }
    for (const bits of [2, 3, 16]) {
      assert.throws(() => matMulNBitsLayout(4, 64, { bits: bits as QuantBits, blockSize: 32 }), /bits must be 4 or 8/);
    }
    assert.throws(() => matMulNBitsLayout(0, 64, { bits: 4, blockSize: 32 }), /positive integers/);
  });
});

describe('packCodes', () => {
  it('puts the even-indexed 4-bit code in the low nibble; 8-bit codes one per byte', () => {
    assert.equal(hex(packCodes([1, 2, 3, 4, 15], 4)), '21 43 0f');
    assert.equal(hex(packCodes([1, 200, 255], 8)), '01 c8 ff');
    assert.deepEqual(Array.from(unpackCodes(packCodes([1, 2, 3, 4, 15], 4), 5, 4)), [1, 2, 3, 4, 15]);
    assert.throws(() => packCodes([16], 4), RangeError);
  });
});

describe('quantizeBlockwise: golden values', () => {
  it('4-bit symmetric: -8..7 gives scale 1 and codes 0..15; the negated block gives scale -1', () => {
    const q = quantizeBlockwise(tensor([1, 16], range(16, (i) => i - 8)), { bits: 4, blockSize: 16, symmetric: true });
    assert.equal(hex(q.data), '10 32 54 76 98 ba dc fe');
    assert.deepEqual(Array.from(q.scales), [1]);
    assert.equal(q.zeroPoints, undefined);
    const neg = quantizeBlockwise(tensor([1, 16], range(16, (i) => 8 - i)), { bits: 4, blockSize: 16, symmetric: true });
    assert.equal(hex(neg.data), '10 32 54 76 98 ba dc fe');
    assert.deepEqual(Array.from(neg.scales), [-1]);
  });

  it('4-bit symmetric widens the scale instead of clipping when both signs are nearly as large (7.5 and -7.9: scale 7.5/7)', () => {
    const w = [7.5, -7.9, ...range(14, () => 0)];
    const q = quantizeBlockwise(tensor([1, 16], w), { bits: 4, blockSize: 16, symmetric: true });
    const s = Math.fround(7.5 / 7);
    assert.equal(q.scales[0], s); // positive: the negative side is the larger and takes code 0
    assert.equal(hex(q.data.subarray(0, 1)), '1f'); // 7.5 -> 7 + 8 = 15 (low nibble), -7.9 -> round(-7.37) + 8 = 1
    const codes = Array.from(unpackCodes(q.data, 16, 4));
    assert.deepEqual(codes.slice(0, 2), [15, 1]);
    assert.deepEqual(codes.slice(2), range(14, () => 8));
  });

  it('8-bit symmetric: -8..7 gives scale 1/16 and codes 128 + 16k', () => {
    const q = quantizeBlockwise(tensor([1, 16], range(16, (i) => i - 8)), { bits: 8, blockSize: 16, symmetric: true });
    assert.deepEqual(Array.from(q.scales), [0.0625]);
    assert.deepEqual(Array.from(q.data), range(16, (i) => 16 * i));
  });

  it('4-bit asymmetric: zero points packed two blocks per byte, low nibble first, per row', () => {
    // Row 0: blocks with minima -1.5, -2.5, -0.5 (scale 0.5): zero points 3, 5, 1.
    // Row 1: all-positive blocks: the range is widened to 0, so zero point 0, scale max/15.
    const row0 = [...range(16, (i) => (i - 3) * 0.5), ...range(16, (i) => (i - 5) * 0.5), ...range(16, (i) => (i - 1) * 0.5)];
    const row1 = [...range(16, (i) => i + 1), ...range(16, () => 3), ...range(16, (i) => (i === 0 ? 15 : 0))];
    const q = quantizeBlockwise(tensor([2, 48], [...row0, ...row1]), { bits: 4, blockSize: 16, symmetric: false });
    assert.ok(q.zeroPoints);
    assert.equal(hex(q.zeroPoints), '53 01 00 00');
    assert.deepEqual(Array.from(q.scales), [0.5, 0.5, 0.5, Math.fround(16 / 15), Math.fround(0.2), 1]);
    assert.equal(hex(q.data.subarray(0, 8)), '10 32 54 76 98 ba dc fe');
    assert.deepEqual(Array.from(unpackCodes(q.data.subarray(3 * 8 + 8, 3 * 8 + 16), 16, 4)), range(16, () => 15)); // 3 / 0.2
    assert.deepEqual([zeroPointAt(q, 0, 0), zeroPointAt(q, 0, 1), zeroPointAt(q, 0, 2), zeroPointAt(q, 1, 2)], [3, 5, 1, 0]);
  });

  it('8-bit asymmetric: zero point one byte per block', () => {
    const q = quantizeBlockwise(tensor([1, 32], [...range(16, (i) => i - 51), ...range(16, (i) => i * 17)]), { bits: 8, blockSize: 16, symmetric: false });
    // Block 0: [-51, -36] widened to [-51, 0]: scale 0.2, zero point 255. Block 1: [0, 255]: scale 1, zero 0.
    assert.deepEqual(Array.from(q.scales), [Math.fround(0.2), 1]);
    assert.deepEqual(Array.from(q.zeroPoints!), [255, 0]);
    assert.deepEqual(Array.from(q.data.subarray(16)), range(16, (i) => i * 17));
  });

  it('pads K up to a whole block with the zero point, so padding dequantizes to 0', () => {
    for (const symmetric of [true, false]) {
      const w = tensor([2, 20], range(40, (i) => ((i * 7) % 11) - 5));
      const q = quantizeBlockwise(w, { bits: 4, blockSize: 16, symmetric });
      assert.equal(q.data.length, 2 * 2 * 8);
      for (let n = 0; n < 2; n++) {
        const codes = unpackCodes(q.data.subarray((n * 2 + 1) * 8, (n * 2 + 2) * 8), 16, 4);
        assert.deepEqual(Array.from(codes.subarray(4)), range(12, () => zeroPointAt(q, n, 1)), `row ${n} padding`);
      }
      assert.deepEqual(dequantizeBlockwise(q).shape, [2, 20]);
    }
  });

  it('an all-zero block gets scale 0 and dequantizes to 0', () => {
    for (const symmetric of [true, false]) {
      const q = quantizeBlockwise(tensor([1, 32], [...range(16, () => 0), ...range(16, (i) => i)]), { bits: 4, blockSize: 16, symmetric });
      assert.equal(q.scales[0], 0);
      assert.deepEqual(Array.from(dequantizeBlockwise(q).data.subarray(0, 16)), range(16, () => 0));
    }
  });

  it('refuses non-finite weights, non-2-D weights and mismatched data, naming the problem', () => {
    const opts: BlockQuantOptions = { bits: 4, blockSize: 16, symmetric: true };
    assert.throws(() => quantizeBlockwise(tensor([1, 16], [...range(15, () => 0), NaN]), opts), /weight \[0, 15\] is NaN/);
    assert.throws(() => quantizeBlockwise({ shape: [16], data: new Float32Array(16) }, opts), /2-D/);
    assert.throws(() => quantizeBlockwise({ shape: [2, 16], data: new Float32Array(16) }, opts), /16 values for shape \[2, 16\]/);
  });
});

describe('quantizeBlockwise / dequantizeBlockwise round trip', () => {
  const cases: Array<[QuantBits, number, boolean, number]> = [];
  for (const bits of [4, 8] as const) for (const bs of [16, 32, 64, 128, 256]) for (const sym of [true, false]) cases.push([bits, bs, sym, 0]);

  for (const [bits, blockSize, symmetric] of cases) {
    it(`bits ${bits}, block ${blockSize}, ${symmetric ? 'symmetric' : 'asymmetric'}: |w - deq(q(w))| <= |scale|/2 per element, K = 300 (padded)`, () => {
      const [N, K] = [7, 300];
      const w = weightsWithOutliers(N, K, bits * 1000 + blockSize + (symmetric ? 1 : 0));
      const q = quantizeBlockwise(w, { bits, blockSize, symmetric });
      const deq = dequantizeBlockwise(q);
      const kBlocks = Math.ceil(K / blockSize);
      let worstRatio = 0;
      for (let n = 0; n < N; n++) {
        for (let k = 0; k < K; k++) {
          const s = Math.abs(q.scales[n * kBlocks + Math.floor(k / blockSize)]);
          const err = Math.abs(w.data[n * K + k] - deq.data[n * K + k]);
          assert.ok(err <= s * (0.5 + 1e-6), `[${n}, ${k}]: error ${err} > |scale|/2 = ${s / 2}`);
          worstRatio = Math.max(worstRatio, err / s);
        }
      }
      // Round to nearest uses the whole half step somewhere (the bound is tight, not loose).
      assert.ok(worstRatio > 0.4, `worst error / scale ${worstRatio}`);
      const expectedBytes = N * kBlocks * (blockSize * bits) / 8 + N * kBlocks * 4 + (symmetric ? 0 : N * Math.ceil((kBlocks * bits) / 8));
      assert.equal(quantizedWeightBytes(q), expectedBytes);
    });
  }

  for (const bits of [4, 8] as const) {
    for (const symmetric of [true, false]) {
      it(`bits ${bits} ${symmetric ? 'symmetric' : 'asymmetric'}: weights on the block grid come back exactly, and re-quantizing gives the same codes`, () => {
        const m = 1 << (bits - 1);
        const max = (1 << bits) - 1;
        const [N, K, bs] = [5, 64, 32];
        const data = new Float32Array(N * K);
        for (let n = 0; n < N; n++) {
          for (let b = 0; b < K / bs; b++) {
            const step = 2 ** -(n + b + 3); // exact in float32
            const zero = symmetric ? m : 1 + ((n * 3 + b) % (max - 1));
            for (let j = 0; j < bs; j++) {
              // Both ends of the code range appear in every block, so the quantizer recovers `step`.
              const code = j === 0 ? 0 : j === 1 ? (symmetric ? max - 1 : max) : (j * 37 + n) % (symmetric ? max : max + 1);
              data[n * K + b * bs + j] = (symmetric ? -(code - zero) : code - zero) * step;
            }
          }
        }
        const q = quantizeBlockwise({ shape: [N, K], data }, { bits, blockSize: bs, symmetric });
        assert.deepEqual(dequantizeBlockwise(q).data, data);
        const again = quantizeBlockwise(dequantizeBlockwise(q), { bits, blockSize: bs, symmetric });
        assert.deepEqual(again.data, q.data);
        assert.deepEqual(again.scales, q.scales);
      });
    }
  }

  it('8 bits is at least 8x more accurate than 4 bits, asymmetric no worse than symmetric at 4 bits (RMS error)', () => {
    const w = weightsWithOutliers(64, 512, 3);
    const rms = (o: BlockQuantOptions) => {
      const d = dequantizeBlockwise(quantizeBlockwise(w, o)).data;
      let s = 0;
      for (let i = 0; i < d.length; i++) s += (d[i] - w.data[i]) ** 2;
      return Math.sqrt(s / d.length);
    };
    const e4s = rms({ bits: 4, blockSize: 32, symmetric: true });
    const e4a = rms({ bits: 4, blockSize: 32, symmetric: false });
    const e8s = rms({ bits: 8, blockSize: 32, symmetric: true });
    assert.ok(e4s > 8 * e8s, `4-bit ${e4s} vs 8-bit ${e8s}`);
    assert.ok(e4a <= e4s * 1.05, `asymmetric ${e4a} vs symmetric ${e4s}`);
    assert.ok(rms({ bits: 4, blockSize: 16, symmetric: true }) < rms({ bits: 4, blockSize: 256, symmetric: true }), 'smaller blocks are more accurate');
  });
});

it('blockQuantJson: the snake_case form of block options; null stays null', () => {
  assert.deepEqual(blockQuantJson({ bits: 4, blockSize: 32, symmetric: false }), { bits: 4, block_size: 32, symmetric: false });
  assert.deepEqual(blockQuantJson(QUANT_PRESETS.int8.head), { bits: 8, block_size: 128, symmetric: false });
  assert.equal(blockQuantJson(QUANT_PRESETS.int4.embedding), null);
});
