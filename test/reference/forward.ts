/**
 * An independent float64 forward pass of every family SliceServe serves, dense or SliceGPT-
 * sliced, written as plain loops from transformers' modelling code (v5.x,
 * src/transformers/models/<family>/modeling_<family>.py) and the SliceGPT paper, reading
 * config.json and the safetensors itself (config.ts, checkpoint.ts). It imports nothing from
 * SliceServe's product code: it is the oracle the product's logits, perplexity and greedy text
 * are checked against (issue 12), on fixtures and on checkpoints the tests are not given.
 *
 * Per layer, for a residual x (one row per token):
 * - sequential blocks (Llama, Mistral, Qwen2, Qwen3, Phi-3, OPT):
 *   `h = x + o(attn(norm1(x)))`, `out = h + mlp(norm2(h))` (`LlamaDecoderLayer`,
 *   `OPTDecoderLayer` with do_layer_norm_before);
 * - parallel blocks (Phi): `out = x + dense(attn(n)) + fc2(act(fc1(n)))`, n = ln(x)
 *   (`PhiDecoderLayer`);
 * - attention (`eager_attention_forward`): q, k, v projections (+ bias where the family has
 *   one), per-head q/k norm before RoPE (Qwen3 RMSNorm over head_dim, `Qwen3Attention`; Phi
 *   `qk_layernorm` LayerNorm), RoPE on the first rotary_dim dims of each head in rotate-half
 *   layout (rope.ts), scores `q k^T / sqrt(head_dim)` (OPT scales q after its bias: the same),
 *   causal mask j <= i and on sliding layers also j > i - W (masking_utils
 *   `sliding_window_overlay`), softmax, query head h reading KV head h // (H / KV) (`repeat_kv`);
 * - MLP: gated `down(act(gate(n)) * up(n))` (Phi-3: `gate_up_proj` rows [0, I) gate, [I, 2I)
 *   up, `chunk(2)`; Phi-3's `qkv_proj` rows q, k, v) or plain `fc2(act(fc1(n)))`;
 * - positions: RoPE, or OPT's learned table at row position + 2 (`OPTLearnedPositionalEmbedding`);
 * - the head: final norm, `lm_head` (+ bias for Phi), the embedding when tied.
 * A SliceGPT artifact (config.json `sliceserve`; Ashkboos et al. 2024 §3.1-3.4) has weightless
 * RMS norms dividing by the ORIGINAL hidden_size, readers carrying the folded norm biases, and
 * per-layer shortcut matrices stored [in, out] (models/arch/spec.ts `LayerLayout`, the layout
 * the product's slicer saves): sequential `h = x S_attn + o(attn(norm(x)))`,
 * `out = h S_mlp + mlp(norm(h))`; parallel `out = x S + o(attn(n)) + mlp(n)`.
 *
 * Every product and sum is float64; weights are float32 as decoded (exact for F16/BF16).
 * Differences from transformers' float64 run: RoPE angles are float64 here where transformers
 * computes inv_freq and cos/sin in float32 (about 1e-6 on the fixtures' logits).
 */
import fs from 'node:fs';
import path from 'node:path';
import { ReferenceCheckpoint } from './checkpoint.js';
import { resolveReferenceConfig, type JsonConfig, type ResolvedConfig } from './config.js';
import { activation, layerNorm, linear, matmul, ReferenceWeightError, rmsNorm, softmax, type ReferenceTensor } from './math.js';
import { applyRotary, ropeInvFreq } from './rope.js';

/** A norm: kind and parameters (both null: SliceGPT's weightless norm). */
interface NormSpec {
  name: string;
  weight: string | null;
  bias: string | null;
}

interface LinearSpec {
  weight: string;
  bias: string | null;
  /** Rows [from, to) of a fused tensor (Phi-3 qkv_proj / gate_up_proj); null = all rows. */
  rows: [number, number] | null;
}

interface LayerPlan {
  inputNorm: NormSpec;
  postAttentionNorm: NormSpec | null;
  q: LinearSpec;
  k: LinearSpec;
  v: LinearSpec;
  o: LinearSpec;
  qNorm: NormSpec | null;
  kNorm: NormSpec | null;
  gate: LinearSpec | null;
  up: LinearSpec;
  down: LinearSpec;
  attnShortcut: string | null;
  mlpShortcut: string | null;
  /** Sliding window W of this layer, or null. */
  window: number | null;
}

/** The KV cache of one sequence: per layer, per position, the rotated keys and the values. */
export interface ReferenceCache {
  length: number;
  keys: Float64Array[][];
  values: Float64Array[][];
}

/** Where a family's tensors are (layer entries relative to the layer's prefix, no `.weight`). */
interface FamilyNames {
  embed: string;
  positions: string | null;
  layer: (l: number) => string;
  inputNorm: string;
  postNorm: string | null;
  q: string;
  k: string;
  v: string;
  o: string;
  qNorm: string | null;
  kNorm: string | null;
  gate: string | null;
  up: string;
  down: string;
  finalNorm: string;
}

/** Tensor names of each family, from its modeling_*.py module tree. */
function familyNames(c: ResolvedConfig, has: (n: string) => boolean): FamilyNames {
  const attn = { q: 'self_attn.q_proj', k: 'self_attn.k_proj', v: 'self_attn.v_proj' };
  if (c.family === 'opt') {
    // facebook/opt-* store the base model's names ("decoder.layers.0...") without "model.".
    const root = has('model.decoder.embed_tokens.weight') ? 'model.decoder' : 'decoder';
    return {
      embed: `${root}.embed_tokens.weight`, positions: `${root}.embed_positions.weight`, layer: (l) => `${root}.layers.${l}`,
      inputNorm: 'self_attn_layer_norm', postNorm: 'final_layer_norm', ...attn, o: 'self_attn.out_proj',
      qNorm: null, kNorm: null, gate: null, up: 'fc1', down: 'fc2', finalNorm: `${root}.final_layer_norm`,
    };
  }
  if (c.family === 'phi') {
    return {
      embed: 'model.embed_tokens.weight', positions: null, layer: (l) => `model.layers.${l}`,
      inputNorm: 'input_layernorm', postNorm: null, ...attn, o: 'self_attn.dense',
      qNorm: 'self_attn.q_layernorm', kNorm: 'self_attn.k_layernorm', gate: null, up: 'mlp.fc1', down: 'mlp.fc2', finalNorm: 'model.final_layernorm',
    };
  }
  return {
    embed: 'model.embed_tokens.weight', positions: null, layer: (l) => `model.layers.${l}`,
    inputNorm: 'input_layernorm', postNorm: 'post_attention_layernorm', ...attn, o: 'self_attn.o_proj',
    qNorm: 'self_attn.q_norm', kNorm: 'self_attn.k_norm', gate: 'mlp.gate_proj', up: 'mlp.up_proj', down: 'mlp.down_proj', finalNorm: 'model.norm',
  };
}

/** Tokens per pass over the head matrix. */
const HEAD_BLOCK = 32;

/** A checkpoint tensor that transformers recomputes instead of loading. */
const IGNORED = /\.rotary_emb\.inv_freq$/;

/**
 * A model directory (config.json + safetensors) ready to run in float64.
 * Construction reads the headers (and a tied head stored anyway, to compare it); tensors are
 * read when a forward pass needs them.
 */
export class ReferenceModel {
  readonly config: ResolvedConfig;
  readonly json: JsonConfig;
  readonly checkpoint: ReferenceCheckpoint;
  private readonly layers: LayerPlan[] = [];
  private readonly embed: string;
  private readonly positions: string | null;
  private readonly finalNorm: NormSpec;
  private readonly head: { weight: string; bias: string | null };

  /**
   * @param dir a Hugging Face model directory, dense or a SliceServe SliceGPT artifact.
   * @throws ReferenceUnsupportedError for a config the reference does not implement;
   *   ReferenceWeightError for a missing tensor, or a tensor the model would not use (the
   *   checkpoint and config disagree).
   */
  constructor(readonly dir: string, options: { keepInMemory?: boolean } = {}) {
    this.json = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')) as JsonConfig;
    const c = (this.config = resolveReferenceConfig(this.json));
    const ckpt = (this.checkpoint = new ReferenceCheckpoint(dir, options.keepInMemory));
    const has = (n: string) => ckpt.has(n);
    const used = new Set<string>();
    const need = (n: string): string => {
      if (!has(n)) throw new ReferenceWeightError(`${dir}: tensor ${n} is missing`);
      used.add(n);
      return n;
    };
    const optional = (n: string): string | null => (has(n) ? need(n) : null);
    const sliced = c.sliced !== null;
    const names = familyNames(c, has);
    const layerNorm = c.norm === 'layer';
    const norm = (base: string): NormSpec => {
      if (sliced) {
        for (const suffix of ['.weight', '.bias']) if (has(base + suffix)) throw new ReferenceWeightError(`${dir}: a sliced model has weightless norms, but ${base}${suffix} is stored`);
        return { name: base, weight: null, bias: null };
      }
      if (!c.normAffine) return { name: base, weight: null, bias: null };
      return { name: base, weight: need(`${base}.weight`), bias: layerNorm ? need(`${base}.bias`) : null };
    };
    // A dense bias exists as the config says; a sliced model's readers also carry the LayerNorm
    // bias folded into them (SliceGPT §3.1), so there a bias is read wherever it is stored.
    const lin = (base: string, dense: boolean, reader: boolean): LinearSpec => ({
      weight: need(`${base}.weight`),
      bias: dense ? need(`${base}.bias`) : sliced && reader ? optional(`${base}.bias`) : null,
      rows: null,
    });
    const H = c.numHeads * c.headDim;
    const KV = c.numKvHeads * c.headDim;
    for (let l = 0; l < c.numLayers; l++) {
      const p = names.layer(l);
      const fusedQkv = c.family === 'phi3' && has(`${p}.self_attn.qkv_proj.weight`);
      const fusedGateUp = c.family === 'phi3' && has(`${p}.mlp.gate_up_proj.weight`);
      const rowsOf = (base: string, rows: [number, number]): LinearSpec => ({ weight: need(`${base}.weight`), bias: null, rows });
      const plan: LayerPlan = {
        inputNorm: norm(`${p}.${names.inputNorm}`),
        postAttentionNorm: names.postNorm ? norm(`${p}.${names.postNorm}`) : null,
        q: fusedQkv ? rowsOf(`${p}.self_attn.qkv_proj`, [0, H]) : lin(`${p}.${names.q}`, c.bias.qkv, true),
        k: fusedQkv ? rowsOf(`${p}.self_attn.qkv_proj`, [H, H + KV]) : lin(`${p}.${names.k}`, c.bias.qkv, true),
        v: fusedQkv ? rowsOf(`${p}.self_attn.qkv_proj`, [H + KV, H + 2 * KV]) : lin(`${p}.${names.v}`, c.bias.qkv, true),
        o: lin(`${p}.${names.o}`, c.bias.o, false),
        qNorm: null,
        kNorm: null,
        gate: null,
        up: fusedGateUp ? rowsOf(`${p}.mlp.gate_up_proj`, [c.intermediateSize, 2 * c.intermediateSize]) : lin(`${p}.${names.up}`, c.bias.mlp, true),
        down: lin(`${p}.${names.down}`, c.bias.mlp, false),
        attnShortcut: sliced ? need(`${p}.attn_shortcut_Q`) : null,
        mlpShortcut: sliced && c.block === 'sequential' ? need(`${p}.mlp_shortcut_Q`) : null,
        window: c.layerWindows[l]!,
      };
      if (c.mlp !== 'plain') plan.gate = fusedGateUp ? rowsOf(`${p}.mlp.gate_up_proj`, [0, c.intermediateSize]) : lin(`${p}.${names.gate!}`, c.bias.mlp, true);
      if (c.qkNorm !== 'none') {
        const headNorm = (base: string): NormSpec => ({ name: base, weight: need(`${base}.weight`), bias: c.qkNorm === 'layer' ? need(`${base}.bias`) : null });
        plan.qNorm = headNorm(`${p}.${names.qNorm!}`);
        plan.kNorm = headNorm(`${p}.${names.kNorm!}`);
      }
      this.layers.push(plan);
    }
    this.embed = need(names.embed);
    this.positions = names.positions ? need(names.positions) : null;
    this.finalNorm = norm(names.finalNorm);
    if (c.tieWordEmbeddings) {
      if (has('lm_head.weight')) {
        // transformers ties the head to the embedding; a stored copy must be that copy.
        const a = ckpt.get('lm_head.weight').data;
        const b = ckpt.get(this.embed).data;
        if (a.length !== b.length || a.some((v, i) => v !== b[i])) throw new ReferenceWeightError(`${dir}: tie_word_embeddings is true but lm_head.weight differs from ${this.embed}`);
        used.add('lm_head.weight');
      }
      this.head = { weight: this.embed, bias: null };
    } else {
      this.head = { weight: need('lm_head.weight'), bias: c.bias.head ? need('lm_head.bias') : sliced && layerNorm ? optional('lm_head.bias') : null };
    }
    const unused = ckpt.names().filter((n) => !used.has(n) && !IGNORED.test(n));
    if (unused.length > 0) throw new ReferenceWeightError(`${dir}: tensors the ${c.architecture} forward would not use: ${unused.slice(0, 8).join(', ')}${unused.length > 8 ? ', ...' : ''}`);
  }

  get vocabSize(): number {
    return this.config.vocabSize;
  }

  newCache(): ReferenceCache {
    return { length: 0, keys: this.layers.map(() => []), values: this.layers.map(() => []) };
  }

  private tensor(name: string): ReferenceTensor {
    return this.checkpoint.get(name);
  }

  private linearOf(x: Float64Array, n: number, spec: LinearSpec): Float64Array {
    let w = this.tensor(spec.weight);
    if (spec.rows) {
      const cols = w.shape[1]!;
      if (w.shape[0]! < spec.rows[1]) throw new ReferenceWeightError(`${spec.weight} has ${w.shape[0]} rows, fewer than ${spec.rows[1]}`);
      w = { shape: [spec.rows[1] - spec.rows[0], cols], data: w.data.subarray(spec.rows[0] * cols, spec.rows[1] * cols) };
    }
    return linear(x, n, w, spec.bias ? this.tensor(spec.bias) : null, spec.weight);
  }

  /** The residual-stream norm of every row of x [n, width]. */
  private normRows(x: Float64Array, n: number, spec: NormSpec): Float64Array {
    const width = x.length / n;
    const c = this.config;
    const out = new Float64Array(x.length);
    const w = spec.weight ? this.tensor(spec.weight).data : null;
    const b = spec.bias ? this.tensor(spec.bias).data : null;
    if (w && w.length !== width) throw new ReferenceWeightError(`${spec.weight} has ${w.length} entries for a residual of width ${width}`);
    for (let t = 0; t < n; t++) {
      const row = x.subarray(t * width, (t + 1) * width);
      let y: Float64Array;
      if (c.sliced) y = rmsNorm(row, null, c.normEps, c.sliced.originalHiddenSize);
      else if (c.norm === 'layer') y = layerNorm(row, w, b, c.normEps);
      else y = rmsNorm(row, w, c.normEps);
      out.set(y, t * width);
    }
    return out;
  }

  /** q/k norm over each head_dim slice of x [n, heads * head_dim], in place. */
  private headNorm(x: Float64Array, spec: NormSpec): void {
    const hd = this.config.headDim;
    const w = this.tensor(spec.weight!).data;
    const b = spec.bias ? this.tensor(spec.bias).data : null;
    if (w.length !== hd) throw new ReferenceWeightError(`${spec.weight} has ${w.length} entries, head_dim is ${hd}`);
    for (let s = 0; s < x.length; s += hd) {
      const head = x.subarray(s, s + hd);
      head.set(this.config.qkNorm === 'layer' ? layerNorm(head, w, b, this.config.normEps) : rmsNorm(head, w, this.config.normEps));
    }
  }

  /**
   * Self-attention of one sequence: n [T, width] normed rows at positions cache.length..;
   * appends this layer's keys and values to the cache. Returns o(attn) [T, out].
   */
  private attention(l: number, n: Float64Array, T: number, cache: ReferenceCache): Float64Array {
    const c = this.config;
    const plan = this.layers[l]!;
    const hd = c.headDim;
    const H = c.numHeads;
    const KV = c.numKvHeads;
    const group = H / KV;
    const q = this.linearOf(n, T, plan.q);
    const k = this.linearOf(n, T, plan.k);
    const v = this.linearOf(n, T, plan.v);
    if (q.length !== T * H * hd || k.length !== T * KV * hd || v.length !== T * KV * hd) {
      throw new ReferenceWeightError(`layer ${l}: q/k/v widths ${q.length / T}/${k.length / T}/${v.length / T} do not match ${H}x${hd} and ${KV}x${hd}`);
    }
    if (plan.qNorm && plan.kNorm) {
      this.headNorm(q, plan.qNorm);
      this.headNorm(k, plan.kNorm);
    }
    const start = cache.length;
    if (c.rope) {
      // transformers' dynamic_rope_update: seq_len = max(position_ids) + 1 of this forward.
      const inv = ropeInvFreq(c.rope, start + T);
      for (let t = 0; t < T; t++) {
        for (let h = 0; h < H; h++) applyRotary(q.subarray((t * H + h) * hd, (t * H + h + 1) * hd), inv, start + t);
        for (let h = 0; h < KV; h++) applyRotary(k.subarray((t * KV + h) * hd, (t * KV + h + 1) * hd), inv, start + t);
      }
    }
    const keys = cache.keys[l]!;
    const values = cache.values[l]!;
    for (let t = 0; t < T; t++) {
      keys.push(k.slice(t * KV * hd, (t + 1) * KV * hd));
      values.push(v.slice(t * KV * hd, (t + 1) * KV * hd));
    }
    const scale = 1 / Math.sqrt(hd);
    const out = new Float64Array(T * H * hd);
    for (let t = 0; t < T; t++) {
      const i = start + t;
      const first = plan.window === null ? 0 : Math.max(0, i - plan.window + 1);
      for (let h = 0; h < H; h++) {
        const kvh = Math.floor(h / group);
        const qh = q.subarray((t * H + h) * hd, (t * H + h + 1) * hd);
        const scores = new Float64Array(i - first + 1);
        for (let j = first; j <= i; j++) {
          const kj = keys[j]!;
          let s = 0;
          for (let d = 0; d < hd; d++) s += qh[d]! * kj[kvh * hd + d]!;
          scores[j - first] = s * scale;
        }
        const p = softmax(scores);
        const o = out.subarray((t * H + h) * hd, (t * H + h + 1) * hd);
        for (let j = first; j <= i; j++) {
          const vj = values[j]!;
          const pj = p[j - first]!;
          for (let d = 0; d < hd; d++) o[d] += pj * vj[kvh * hd + d]!;
        }
      }
    }
    return this.linearOf(out, T, plan.o);
  }

  private mlp(l: number, n: Float64Array, T: number): Float64Array {
    const plan = this.layers[l]!;
    const act = activation(this.config.activation);
    const up = this.linearOf(n, T, plan.up);
    if (plan.gate) {
      const gate = this.linearOf(n, T, plan.gate);
      for (let i = 0; i < up.length; i++) up[i] = act(gate[i]!) * up[i]!;
    } else {
      for (let i = 0; i < up.length; i++) up[i] = act(up[i]!);
    }
    return this.linearOf(up, T, plan.down);
  }

  /** The residual entering the layers: token embeddings (+ OPT's learned positions). */
  private embedRows(tokens: readonly number[], start: number): Float64Array {
    const c = this.config;
    const width = this.checkpoint.info(this.embed).shape[1]!;
    const x = new Float64Array(tokens.length * width);
    tokens.forEach((id, t) => {
      if (!(Number.isInteger(id) && id >= 0 && id < c.vocabSize)) throw new RangeError(`token id ${id} is outside the vocabulary of ${c.vocabSize}`);
      x.set(this.checkpoint.row(this.embed, id), t * width);
      if (this.positions) {
        // OPTLearnedPositionalEmbedding: row position + 2 (no padding: positions 0..).
        const row = this.checkpoint.row(this.positions, start + t + 2);
        for (let i = 0; i < width; i++) x[t * width + i] += row[i]!;
      }
    });
    return x;
  }

  /**
   * Runs `tokens` of every sequence after what its cache holds (positions cache.length..),
   * extending the caches, and hands the logits of every new position to `onLogits`
   * (`logits[v]`, float64, length vocab_size). Sequences are independent; they are batched
   * only so that each weight is read once per call.
   * @throws RangeError for a token outside the vocabulary; ReferenceWeightError for a position
   *   past OPT's position table or weights whose shapes do not chain.
   */
  forward(batch: readonly { tokens: readonly number[]; cache: ReferenceCache }[], onLogits: (sequence: number, position: number, logits: Float64Array) => void): void {
    const c = this.config;
    let xs = batch.map((s) => this.embedRows(s.tokens, s.cache.length));
    for (let l = 0; l < c.numLayers; l++) {
      const plan = this.layers[l]!;
      xs = xs.map((x, b) => {
        const T = batch[b]!.tokens.length;
        if (T === 0) return x;
        const cache = batch[b]!.cache;
        const residual = (name: string | null, r: Float64Array) => (name ? matmul(r, T, this.tensor(name), name) : r);
        const add = (a: Float64Array, d: Float64Array, what: string) => {
          if (a.length !== d.length) throw new ReferenceWeightError(`layer ${l}: ${what} has width ${d.length / T}, the residual ${a.length / T}`);
          for (let i = 0; i < a.length; i++) a[i] += d[i]!;
          return a;
        };
        const n1 = this.normRows(x, T, plan.inputNorm);
        if (c.block === 'parallel') {
          const attn = this.attention(l, n1, T, cache);
          const ff = this.mlp(l, n1, T);
          return add(add(residual(plan.attnShortcut, x), attn, 'attention output'), ff, 'MLP output');
        }
        const h = add(residual(plan.attnShortcut, x), this.attention(l, n1, T, cache), 'attention output');
        const n2 = this.normRows(h, T, plan.postAttentionNorm!);
        return add(residual(plan.mlpShortcut, h), this.mlp(l, n2, T), 'MLP output');
      });
    }
    batch.forEach((s) => (s.cache.length += s.tokens.length));
    const w = this.tensor(this.head.weight);
    const bias = this.head.bias ? this.tensor(this.head.bias) : null;
    if (w.shape[0] !== c.vocabSize) throw new ReferenceWeightError(`${this.head.weight} has ${w.shape[0]} rows, vocab_size is ${c.vocabSize}`);
    xs.forEach((x, b) => {
      const T = batch[b]!.tokens.length;
      if (T === 0) return;
      const n = this.normRows(x, T, this.finalNorm);
      const width = n.length / T;
      const V = c.vocabSize;
      // The head over blocks of tokens: one pass over [vocab, width] per block.
      for (let t0 = 0; t0 < T; t0 += HEAD_BLOCK) {
        const rows = Math.min(HEAD_BLOCK, T - t0);
        const logits = linear(n.subarray(t0 * width, (t0 + rows) * width), rows, w, bias, this.head.weight);
        for (let r = 0; r < rows; r++) onLogits(b, t0 + r, logits.slice(r * V, (r + 1) * V));
      }
    });
  }

  /** Logits [T][vocab] of one sequence from position 0 (no cache). */
  logits(tokens: readonly number[]): Float64Array[] {
    const out: Float64Array[] = [];
    this.forward([{ tokens, cache: this.newCache() }], (_b, _t, row) => out.push(row));
    return out;
  }
}
