/**
 * A plain TypeScript forward pass of the Llama family, float64 arithmetic, one sequence, no
 * cache. It is the oracle the ONNX graph is tested against (and it runs dense and sliced
 * weights alike). Not used for serving.
 *
 * Dense forward as llama2.c `run.c` (PROTOCOL.md §1) in the Hugging Face weight layout
 * (RoPE rotates the first half of each head against the second half); sliced forward as
 * SliceGPT (arXiv 2401.15024, §3.3-3.4; SLICEGPT.md §3, §5):
 *   r   = x @ S_attn + o(attn(norm(x)))
 *   out = r @ S_mlp  + down(silu(gate(norm(r))) * up(norm(r)))
 * where `norm` divides by the ORIGINAL hidden_size even when x is narrower.
 */
import type { RotarySpec } from '../../models/config.js';
import type { LoadedModel, WeightTensor } from '../../models/types.js';
import { modelWidths } from '../../models/widths.js';
import { W } from './llama-names.js';

/**
 * Logits of every position of `tokens` (positions 0..S-1).
 * @param model dense or sliced Llama model (weights `[out, in]`).
 * @param tokens token ids, length S >= 1, each < vocab_size.
 * @returns S arrays of vocab_size logits (float64).
 * @throws Error if a token id is out of range.
 */
export function referenceForward(model: LoadedModel, tokens: readonly number[]): Float64Array[] {
  const { config, weights } = model;
  const get = (name: string): WeightTensor => {
    const t = weights.get(name);
    if (!t) throw new Error(`reference forward: missing weight ${name}`);
    return t;
  };
  const widths = modelWidths(model);
  const d = config.hidden_size;
  const eps = config.norm_eps;
  const H = config.num_attention_heads;
  const KV = config.num_key_value_heads;
  const hd = config.head_dim;
  const S = tokens.length;
  const embed = get(W.embed);
  const V = embed.shape[0];

  let xs: Float64Array[] = tokens.map((t) => {
    if (!Number.isInteger(t) || t < 0 || t >= V) throw new Error(`token id ${t} out of range [0, ${V})`);
    return Float64Array.from(embed.data.subarray(t * embed.shape[1], (t + 1) * embed.shape[1]));
  });

  const norm = (x: Float64Array, weight: WeightTensor | undefined): Float64Array => {
    let ss = 0;
    for (const v of x) ss += v * v;
    const inv = 1 / Math.sqrt(ss / d + eps);
    return x.map((v, i) => v * inv * (weight ? weight.data[i] : 1));
  };
  const rope = (vec: Float64Array, heads: number, pos: number): void => {
    const half = hd / 2;
    for (let h = 0; h < heads; h++) {
      for (let i = 0; i < half; i++) {
        const freq = Math.pow((config.positions as RotarySpec).rope_theta, (-2 * i) / hd);
        const c = Math.cos(pos * freq);
        const s = Math.sin(pos * freq);
        const a = vec[h * hd + i];
        const b = vec[h * hd + i + half];
        vec[h * hd + i] = a * c - b * s;
        vec[h * hd + i + half] = b * c + a * s;
      }
    }
  };

  for (let l = 0; l < config.num_hidden_layers; l++) {
    const attnNorm = weights.get(W.attnNorm(l));
    const q = xs.map((x) => matvec(get(W.q(l)), norm(x, attnNorm)));
    const k = xs.map((x) => matvec(get(W.k(l)), norm(x, attnNorm)));
    const v = xs.map((x) => matvec(get(W.v(l)), norm(x, attnNorm)));
    q.forEach((vec, pos) => rope(vec, H, pos));
    k.forEach((vec, pos) => rope(vec, KV, pos));
    const attnOut: Float64Array[] = [];
    for (let t = 0; t < S; t++) {
      const out = new Float64Array(H * hd);
      for (let h = 0; h < H; h++) {
        const kvh = Math.floor(h / (H / KV));
        const scores = new Float64Array(t + 1);
        let max = -Infinity;
        for (let j = 0; j <= t; j++) {
          let dot = 0;
          for (let i = 0; i < hd; i++) dot += q[t][h * hd + i] * k[j][kvh * hd + i];
          scores[j] = dot / Math.sqrt(hd);
          max = Math.max(max, scores[j]);
        }
        let sum = 0;
        for (let j = 0; j <= t; j++) sum += scores[j] = Math.exp(scores[j] - max);
        for (let j = 0; j <= t; j++) {
          const p = scores[j] / sum;
          for (let i = 0; i < hd; i++) out[h * hd + i] += p * v[j][kvh * hd + i];
        }
      }
      attnOut.push(matvec(get(W.o(l)), out));
    }
    const attnShortcut = weights.get(W.attnShortcut(l));
    const rs = xs.map((x, t) => add(attnShortcut ? vecmat(x, attnShortcut) : x, attnOut[t]));
    const mlpNorm = weights.get(W.mlpNorm(l));
    const mlpShortcut = weights.get(W.mlpShortcut(l));
    xs = rs.map((r) => {
      const n = norm(r, mlpNorm);
      const g = matvec(get(W.gate(l)), n);
      const u = matvec(get(W.up(l)), n);
      const hidden = g.map((gv, i) => (gv / (1 + Math.exp(-gv))) * u[i]);
      return add(mlpShortcut ? vecmat(r, mlpShortcut) : r, matvec(get(W.down(l)), hidden));
    });
    if (xs[0].length !== widths.layers[l].output) throw new Error(`layer ${l}: width ${xs[0].length}`);
  }
  const head = weights.get(W.lmHead) ?? embed;
  const finalNorm = weights.get(W.finalNorm);
  return xs.map((x) => matvec(head, norm(x, finalNorm)));
}

/** y = W x for W stored [out, in]. */
function matvec(w: WeightTensor, x: Float64Array): Float64Array {
  const [out, inn] = w.shape;
  if (inn !== x.length) throw new Error(`matvec: weight [${w.shape}] vs input ${x.length}`);
  const y = new Float64Array(out);
  for (let o = 0; o < out; o++) {
    let s = 0;
    const row = o * inn;
    for (let i = 0; i < inn; i++) s += w.data[row + i] * x[i];
    y[o] = s;
  }
  return y;
}

/** y = x S for S stored [in, out] (shortcut matrices). */
function vecmat(x: Float64Array, s: WeightTensor): Float64Array {
  const [inn, out] = s.shape;
  if (inn !== x.length) throw new Error(`vecmat: shortcut [${s.shape}] vs input ${x.length}`);
  const y = new Float64Array(out);
  for (let i = 0; i < inn; i++) {
    const xi = x[i];
    for (let o = 0; o < out; o++) y[o] += xi * s.data[i * out + o];
  }
  return y;
}

function add(a: Float64Array, b: Float64Array): Float64Array {
  if (a.length !== b.length) throw new Error(`residual width mismatch: ${a.length} vs ${b.length}`);
  return a.map((v, i) => v + b[i]);
}
