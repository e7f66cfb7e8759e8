/**
 * The product against the reference on checkpoints that no fixture has: seeded random weights
 * written here in the layout transformers saves (Phi-3's fused qkv_proj / gate_up_proj, OPT's
 * names without `model.`), with config.json fields the fixtures do not exercise: phi-2's
 * head_dim 80 with partial rotary 0.4, Llama-3.2's llama3 scaling with rope_theta 500000 and
 * a 131072 context, Qwen2.5's 7:1 grouped heads and rope_theta 1e6, Qwen3 with attention_bias,
 * a 4:1 Mistral window of 3, Phi-3 with partial rotary 0.75 and a window, dynamic NTK past
 * max_position_embeddings, transformers 4.x `rope_scaling` {type} with an explicit head_dim,
 * Qwen2 sliding layers derived from max_window_layers. Every logit of 48 positions agrees
 * within 1e-4 (the brief: "build to the semantics, not to a fixture").
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { parseDecoderConfig } from '../../models/registry.js';
import { loadModel } from '../../models/load.js';
import { expectedWeightShapes } from '../../models/validate.js';
import { DecoderSession } from '../../runtime/decoder-session.js';
import { randn, rng } from '../helpers/tiny-model.js';
import { ReferenceModel } from './forward.js';
import { bf16Tensor, f32Tensor, writeSafetensors, type RawTensor } from './write-safetensors.js';

const REPO_ROOT = path.resolve(__dirname, '..', '..', '..');
const TOKENIZER_DIR = path.join(REPO_ROOT, 'test', 'fixtures', 'transformers', 'llama');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sliceserve-cross-'));
process.once('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));
const TOKENS = Array.from({ length: 48 }, (_, i) => ((i * 131 + 7) % 509) + 1);

interface Case {
  name: string;
  config: Record<string, unknown>;
  dtype?: 'F32' | 'BF16';
  /** Renames / fuses the layout's tensors into what the checkpoint stores. */
  store?: (t: Map<string, { shape: number[]; data: Float32Array }>) => void;
}

const common = { vocab_size: 512, bos_token_id: 1, eos_token_id: 2, num_hidden_layers: 2 };

/** Phi-3's checkpoint layout: q, k, v rows in qkv_proj; gate then up rows in gate_up_proj. */
function fusePhi3(t: Map<string, { shape: number[]; data: Float32Array }>): void {
  for (const name of [...t.keys()].filter((n) => n.endsWith('.self_attn.q_proj.weight'))) {
    const p = name.slice(0, -'.self_attn.q_proj.weight'.length);
    const fuse = (parts: string[], to: string) => {
      const ts = parts.map((n) => t.get(n)!);
      t.set(to, { shape: [ts.reduce((a, x) => a + x.shape[0], 0), ts[0].shape[1]], data: Float32Array.from(ts.flatMap((x) => [...x.data])) });
      for (const n of parts) t.delete(n);
    };
    fuse([`${p}.self_attn.q_proj.weight`, `${p}.self_attn.k_proj.weight`, `${p}.self_attn.v_proj.weight`], `${p}.self_attn.qkv_proj.weight`);
    fuse([`${p}.mlp.gate_proj.weight`, `${p}.mlp.up_proj.weight`], `${p}.mlp.gate_up_proj.weight`);
  }
}

const CASES: Case[] = [
  {
    name: 'phi-2 geometry: head_dim 80, partial rotary 0.4 (32 dims), bfloat16',
    dtype: 'BF16',
    config: { ...common, architectures: ['PhiForCausalLM'], model_type: 'phi', hidden_size: 160, intermediate_size: 256, num_attention_heads: 2, num_key_value_heads: 2, partial_rotary_factor: 0.4, rope_theta: 10000, hidden_act: 'gelu_new', layer_norm_eps: 1e-5, max_position_embeddings: 2048, tie_word_embeddings: false },
  },
  {
    name: 'Llama-3.2 geometry: llama3 scaling (factor 32, 8192), rope_theta 500000, tied, head_dim 64',
    config: { ...common, architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: 128, intermediate_size: 256, num_attention_heads: 2, num_key_value_heads: 1, head_dim: 64, rms_norm_eps: 1e-5, max_position_embeddings: 131072, tie_word_embeddings: true, rope_theta: 500000, rope_scaling: { rope_type: 'llama3', factor: 32, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 }, eos_token_id: [2, 5] },
  },
  {
    name: 'Qwen2.5 geometry: 7 heads on 1 KV head of 64, rope_theta 1e6, tied, sliding window off',
    config: { ...common, architectures: ['Qwen2ForCausalLM'], model_type: 'qwen2', hidden_size: 448, intermediate_size: 256, num_attention_heads: 7, num_key_value_heads: 1, rms_norm_eps: 1e-6, max_position_embeddings: 32768, rope_parameters: { rope_type: 'default', rope_theta: 1000000 }, tie_word_embeddings: true, use_sliding_window: false, sliding_window: 4096, max_window_layers: 21 },
  },
  {
    name: 'Qwen3 with attention_bias and head_dim 32 != hidden / heads, bfloat16',
    dtype: 'BF16',
    config: { ...common, architectures: ['Qwen3ForCausalLM'], model_type: 'qwen3', hidden_size: 64, intermediate_size: 96, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 32, attention_bias: true, rms_norm_eps: 1e-6, max_position_embeddings: 4096, rope_theta: 1000000, tie_word_embeddings: false },
  },
  {
    name: 'Mistral: 4 heads on 1 KV head, window 3, rope_theta at the top level (4.x)',
    config: { ...common, architectures: ['MistralForCausalLM'], model_type: 'mistral', hidden_size: 64, intermediate_size: 96, num_attention_heads: 4, num_key_value_heads: 1, head_dim: 16, rms_norm_eps: 1e-5, max_position_embeddings: 4096, rope_theta: 10000, sliding_window: 3, tie_word_embeddings: false },
  },
  {
    name: 'OPT stored without the "model." prefix (facebook/opt-* layout)',
    config: { ...common, architectures: ['OPTForCausalLM'], model_type: 'opt', hidden_size: 64, ffn_dim: 128, num_attention_heads: 4, max_position_embeddings: 64, word_embed_proj_dim: 64, do_layer_norm_before: true, activation_function: 'relu', bos_token_id: 2, tie_word_embeddings: true },
    store: (t) => {
      for (const [name, v] of [...t]) if (name.startsWith('model.decoder.')) { t.delete(name); t.set(name.slice('model.'.length), v); }
    },
  },
  {
    name: 'Phi-3: fused qkv_proj and gate_up_proj, partial rotary 0.75 (12 of 16), window 3',
    config: { ...common, architectures: ['Phi3ForCausalLM'], model_type: 'phi3', hidden_size: 64, intermediate_size: 96, num_attention_heads: 4, num_key_value_heads: 2, rms_norm_eps: 1e-5, max_position_embeddings: 4096, original_max_position_embeddings: 4096, partial_rotary_factor: 0.75, rope_theta: 10000, sliding_window: 3, tie_word_embeddings: false },
    store: fusePhi3,
  },
  {
    name: 'Llama dynamic NTK (factor 4) on 48 positions past max_position_embeddings 32',
    config: { ...common, architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: 64, intermediate_size: 96, num_attention_heads: 4, num_key_value_heads: 2, rms_norm_eps: 1e-6, max_position_embeddings: 32, rope_parameters: { rope_type: 'dynamic', factor: 4, rope_theta: 10000 }, tie_word_embeddings: false },
  },
  {
    name: 'Llama 4.x rope_scaling {type: linear, factor 3}, explicit head_dim 24, attention_bias',
    config: { ...common, architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: 64, intermediate_size: 96, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 24, attention_bias: true, rms_norm_eps: 1e-6, max_position_embeddings: 2048, rope_theta: 10000, rope_scaling: { type: 'linear', factor: 3 }, tie_word_embeddings: false },
  },
  {
    name: 'Qwen2 sliding layers derived from use_sliding_window and max_window_layers 1 (3 layers, window 4)',
    config: { ...common, architectures: ['Qwen2ForCausalLM'], model_type: 'qwen2', hidden_size: 64, intermediate_size: 96, num_hidden_layers: 3, num_attention_heads: 4, num_key_value_heads: 2, rms_norm_eps: 1e-6, max_position_embeddings: 4096, rope_theta: 10000, use_sliding_window: true, sliding_window: 4, max_window_layers: 1, tie_word_embeddings: false },
  },
];

/** Seeded weights of the layout's shapes: linears N(0, 1/in), embeddings N(0, 0.2^2), norms 1 + N(0, 0.1^2), biases N(0, 0.1^2). */
function randomWeights(config: Record<string, unknown>, seed: number): Map<string, { shape: number[]; data: Float32Array }> {
  const r = rng(seed);
  const out = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const [name, shape] of expectedWeightShapes(parseDecoderConfig(config, 'config.json'))) {
    const n = shape.reduce((a, b) => a * b, 1);
    let data: Float32Array;
    if (name.endsWith('bias')) data = randn(n, 0.1, r);
    else if (shape.length === 1) data = randn(n, 0.1, r).map((v) => 1 + v);
    else if (name.includes('embed')) data = randn(n, 0.2, r);
    else data = randn(n, 1 / Math.sqrt(shape[1]), r);
    out.set(name, { shape, data });
  }
  return out;
}

CASES.forEach((c, i) => {
  test(`product = reference on a checkpoint no fixture has: ${c.name}`, async () => {
    const dir = path.join(tmp, `case-${i}`);
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(c.config, null, 2));
    for (const f of ['tokenizer.json', 'tokenizer_config.json']) fs.copyFileSync(path.join(TOKENIZER_DIR, f), path.join(dir, f));
    const weights = randomWeights(c.config, 100 + i);
    c.store?.(weights);
    const tensors: Record<string, RawTensor> = {};
    for (const [name, t] of weights) tensors[name] = c.dtype === 'BF16' ? bf16Tensor(t.shape, t.data) : f32Tensor(t.shape, t.data);
    writeSafetensors(path.join(dir, 'model.safetensors'), tensors);

    const reference = new ReferenceModel(dir).logits(TOKENS);
    const session = await DecoderSession.create(loadModel(dir), { logits: 'all', threads: 1 });
    try {
      const product = (await session.step([{ cache: session.newCache(), tokens: TOKENS }]))[0];
      const V = reference[0].length;
      assert.equal(product.length, TOKENS.length * V);
      let err = 0;
      let scale = 0;
      reference.forEach((row, t) => row.forEach((x, v) => {
        err = Math.max(err, Math.abs(x - product[t * V + v]));
        scale = Math.max(scale, Math.abs(x));
      }));
      assert.ok(scale > 0.5, `logits of a useful scale (max ${scale})`);
      assert.ok(err < 1e-4, `max |product - reference| = ${err}`);
    } finally {
      await session.release();
    }
  });
});
