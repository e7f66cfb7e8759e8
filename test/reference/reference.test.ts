/**
 * The reference forward's own checks (its agreement with the product and with transformers'
 * logits on every fixture, dense and sliced, is in the family contract suite,
 * test/models/arch/contract.test.ts):
 * - on every transformers fixture, its protocol perplexity and greedy continuation equal
 *   transformers' (scripts/transformers-goldens.py), also through the reference-eval CLI;
 * - its pieces against values derived by hand: float16 / bfloat16 decoding, safetensors and
 *   shard reading, erf and the GELUs, the four RoPE frequency rules, rotate-half, the sliding
 *   window edges, config resolution and refusals;
 * - it imports nothing from SliceServe's product code.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { decodeBfloat16, decodeFloat16, ReferenceCheckpoint } from './checkpoint.js';
import { resolveReferenceConfig, type JsonConfig, type RopeSpec } from './config.js';
import { loadTokenizer, protocolWindows, referenceGreedy, referencePerplexity, splitStories } from './eval.js';
import { ReferenceModel } from './forward.js';
import { activation, erf, ReferenceUnsupportedError, ReferenceWeightError } from './math.js';
import { applyRotary, defaultInvFreq, ropeInvFreq } from './rope.js';
import { writeSafetensors } from './write-safetensors.js';

const REPO_ROOT = path.resolve(__dirname, '..', '..', '..');
const FIXTURES = path.join(REPO_ROOT, 'test', 'fixtures', 'transformers');
const EVAL_FILE = path.join(REPO_ROOT, 'data', 'tinystories-valid-sample.txt');
const variants = fs.readdirSync(FIXTURES).filter((d) => fs.existsSync(path.join(FIXTURES, d, 'expected.json'))).sort();
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sliceserve-reference-'));
process.once('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));

interface Expected {
  prompt: number[];
  greedy: number[];
  perplexity: { seq_len: number; windows: number; value: number };
}

const expectedOf = (variant: string) => JSON.parse(fs.readFileSync(path.join(FIXTURES, variant, 'expected.json'), 'utf8')) as Expected;

for (const variant of variants) {
  test(`${variant}: the reference's protocol perplexity and greedy continuation equal transformers'`, () => {
    const dir = path.join(FIXTURES, variant);
    const expected = expectedOf(variant);
    const model = new ReferenceModel(dir);
    const { windows } = protocolWindows(fs.readFileSync(EVAL_FILE), loadTokenizer(dir), expected.perplexity.seq_len, expected.perplexity.windows);
    const ppl = referencePerplexity(model, windows).perplexity;
    // Measured: at most 1.5e-8 relative (transformers' float32 RoPE tables).
    assert.ok(Math.abs(ppl / expected.perplexity.value - 1) < 1e-6, `perplexity ${ppl} vs transformers ${expected.perplexity.value}`);
    assert.deepEqual(referenceGreedy(model, expected.prompt, expected.greedy.length).tokens, expected.greedy);
  });
}

test('reference-eval prints the perplexity and greedy ids of transformers for a fixture, and refuses a bad --model in one line', () => {
  const cli = path.join(__dirname, 'reference-eval.js');
  const variant = 'qwen3';
  const expected = expectedOf(variant);
  const r = spawnSync(process.execPath, [cli, '--model', path.join(FIXTURES, variant), '--windows', String(expected.perplexity.windows), '--prompt-ids', expected.prompt.join(','), '--max-tokens', String(expected.greedy.length), '--ignore-eos', '--json'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as { perplexity: number; greedy_ids: number[]; tokens: number; architecture: string };
  assert.ok(Math.abs(out.perplexity / expected.perplexity.value - 1) < 1e-6, `${out.perplexity}`);
  assert.deepEqual(out.greedy_ids, expected.greedy);
  assert.equal(out.tokens, expected.perplexity.windows * (expected.perplexity.seq_len - 1));
  assert.equal(out.architecture, 'Qwen3ForCausalLM');
  const bad = spawnSync(process.execPath, [cli, '--model', path.join(tmp, 'nothing-here')], { encoding: 'utf8' });
  assert.equal(bad.status, 1);
  assert.match(bad.stderr.trim(), /^reference-eval: --model .*nothing-here: no config\.json there$/);
});

test('float16 and bfloat16 decode to the values their bit fields define', () => {
  const f16: [number, number][] = [
    [0x0000, 0], [0x3c00, 1], [0xc000, -2], [0x3555, 0.333251953125], [0x7bff, 65504],
    [0x0001, 2 ** -24], [0x03ff, 1023 * 2 ** -24], [0x0400, 2 ** -14], [0x7c00, Infinity], [0xfc00, -Infinity],
  ];
  for (const [bits, value] of f16) assert.equal(decodeFloat16(bits), value, `f16 0x${bits.toString(16)}`);
  assert.ok(Object.is(decodeFloat16(0x8000), -0));
  assert.ok(Number.isNaN(decodeFloat16(0x7e00)));
  const bf16: [number, number][] = [[0x3f80, 1], [0x4049, 3.140625], [0xc2f7, -123.5], [0x7f80, Infinity], [0x0001, 2 ** -133]];
  for (const [bits, value] of bf16) assert.equal(decodeBfloat16(bits), value, `bf16 0x${bits.toString(16)}`);
});

const u16 = (...v: number[]) => Buffer.from(Uint16Array.from(v).buffer);

test('the checkpoint reader decodes F32/F16/BF16/F64 tensors and rows, reads shards, and refuses malformed files', () => {
  const dir = path.join(tmp, 'ckpt');
  fs.mkdirSync(dir);
  writeSafetensors(path.join(dir, 'a.safetensors'), {
    half: { dtype: 'F16', shape: [2, 2], bytes: u16(0x3c00, 0xc000, 0x3555, 0x0001) },
    brain: { dtype: 'BF16', shape: [3], bytes: u16(0x3f80, 0x4049, 0xc2f7) },
  });
  writeSafetensors(path.join(dir, 'b.safetensors'), {
    single: { dtype: 'F32', shape: [2], bytes: Buffer.from(Float32Array.from([0.1, -7]).buffer) },
    double: { dtype: 'F64', shape: [1], bytes: Buffer.from(Float64Array.from([0.1]).buffer) },
  });
  const index = { metadata: {}, weight_map: { half: 'a.safetensors', brain: 'a.safetensors', single: 'b.safetensors', double: 'b.safetensors' } };
  fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify(index));
  for (const keep of [true, false]) {
    const c = new ReferenceCheckpoint(dir, keep);
    assert.deepEqual(c.names().sort(), ['brain', 'double', 'half', 'single']);
    assert.deepEqual([...c.get('half').data], [1, -2, 0.333251953125, 2 ** -24]);
    assert.deepEqual(c.get('half').shape, [2, 2]);
    assert.deepEqual([...c.row('half', 1)], [0.333251953125, 2 ** -24]);
    assert.deepEqual([...c.get('brain').data], [1, 3.140625, -123.5]);
    assert.deepEqual([...c.get('single').data], [Math.fround(0.1), -7]);
    assert.deepEqual([...c.get('double').data], [Math.fround(0.1)]);
    assert.throws(() => c.get('missing'), ReferenceWeightError);
    assert.throws(() => c.row('half', 2), /row 2 of half/);
  }
  fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { ...index.weight_map, half: 'b.safetensors' } }));
  assert.throws(() => new ReferenceCheckpoint(dir), /puts half in b\.safetensors, which does not hold it/);
  const bad = path.join(tmp, 'bad');
  fs.mkdirSync(bad);
  writeSafetensors(path.join(bad, 'model.safetensors'), { x: { dtype: 'F32', shape: [3], bytes: Buffer.alloc(8) } });
  assert.throws(() => new ReferenceCheckpoint(bad), /does not match its data offsets/);
  writeSafetensors(path.join(bad, 'model.safetensors'), { x: { dtype: 'I8', shape: [1], bytes: Buffer.alloc(1) } });
  assert.throws(() => new ReferenceCheckpoint(bad), /dtype I8/);
});

test('erf and the GELU variants equal their closed forms', () => {
  const values: [number, number][] = [[0, 0], [0.5, 0.5204998778130465], [1, 0.8427007929497149], [-1.5, -0.9661051464753108], [2, 0.9953222650189527], [3, 0.9999779095030014], [5, 0.9999999999984626]];
  for (const [x, want] of values) assert.ok(Math.abs(erf(x) - want) < 1e-15, `erf(${x}) = ${erf(x)}`);
  assert.ok(Math.abs(activation('gelu')(1) - 0.8413447460685429) < 1e-15);
  // gelu_new(1) = 0.5 (1 + tanh(sqrt(2/pi) 1.044715)).
  assert.ok(Math.abs(activation('gelu_new')(1) - 0.5 * (1 + Math.tanh(0.7978845608028654 * 1.044715))) < 1e-15);
  assert.ok(Math.abs(activation('gelu_fast')(1) - activation('gelu_new')(1)) < 1e-11);
  assert.equal(activation('relu')(-2), 0);
  assert.ok(Math.abs(activation('silu')(1) - 1 / (1 + Math.exp(-1))) < 1e-16);
});

const rope = (over: Partial<RopeSpec>): RopeSpec => ({
  type: 'default', theta: 10000, rotaryDim: 4, partialRotaryFactor: 1, factor: 1, lowFreqFactor: NaN, highFreqFactor: NaN, originalMaxPositionEmbeddings: NaN, maxPositionEmbeddings: 64, ...over,
});

test('RoPE frequencies: default, linear, dynamic NTK from the sequence length, llama3 bands', () => {
  assert.deepEqual([...defaultInvFreq(10000, 4)], [1, 0.01]);
  assert.deepEqual([...ropeInvFreq(rope({ type: 'linear', factor: 2 }), 10)], [0.5, 0.005]);
  // dynamic: up to max_position_embeddings (64) the default; at 128 tokens the base is
  // 10000 * (2 * 128 / 64 - 1)^(4 / 2) = 90000.
  assert.deepEqual([...ropeInvFreq(rope({ type: 'dynamic', factor: 2 }), 64)], [1, 0.01]);
  const dyn = ropeInvFreq(rope({ type: 'dynamic', factor: 2 }), 128);
  assert.equal(dyn[0], 1);
  assert.ok(Math.abs(dyn[1]! - 1 / 300) < 1e-17);
  // llama3 with L0 = 1000, low 1, high 4, factor 8 over inv = 1, 0.1, 0.01, 0.001
  // (wavelengths 6.3, 63, 628, 6283): kept, kept, smoothed, divided by 8.
  const l3 = ropeInvFreq(rope({ type: 'llama3', rotaryDim: 8, factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 1000 }), 1);
  const s = ((1000 * 0.01) / (2 * Math.PI) - 1) / 3;
  const want = [1, 0.1, 0.01 * (s + (1 - s) / 8), 0.001 / 8];
  want.forEach((w, i) => assert.ok(Math.abs(l3[i]! - w) < 1e-15 * w, `llama3 inv_freq[${i}] ${l3[i]} vs ${w}`));
});

test('rotate-half RoPE turns (x_i, x_{i+half}) by pos * inv_freq_i and leaves the non-rotary dims alone', () => {
  const head = Float64Array.from([1, 0, 5, 7]);
  applyRotary(head, Float64Array.from([Math.PI / 2]), 1); // rotary_dim 2 of head_dim 4
  assert.ok(Math.abs(head[0]!) < 1e-15 && Math.abs(head[1]! - 1) < 1e-15);
  assert.deepEqual([...head.subarray(2)], [5, 7]);
  const full = Float64Array.from([1, 2, 3, 4]);
  applyRotary(full, Float64Array.from([0.3, 0.02]), 5);
  const [c0, s0, c1, s1] = [Math.cos(1.5), Math.sin(1.5), Math.cos(0.1), Math.sin(0.1)];
  const want = [1 * c0 - 3 * s0, 2 * c1 - 4 * s1, 3 * c0 + 1 * s0, 4 * c1 + 2 * s1];
  want.forEach((w, i) => assert.ok(Math.abs(full[i]! - w) < 1e-15));
});

/** A copy of a fixture directory with config.json changed. */
function variantWith(fixture: string, name: string, change: (c: JsonConfig) => void): string {
  const dir = path.join(tmp, name);
  fs.cpSync(path.join(FIXTURES, fixture), dir, { recursive: true });
  const config = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')) as JsonConfig;
  change(config);
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
  return dir;
}

test('sliding window edges: query i sees keys j with i - W < j <= i', () => {
  const last = (dir: string, tokens: number[]) => new ReferenceModel(dir).logits(tokens).pop()!;
  // W = 1: each token attends to itself only, so the last logits depend on the last token alone.
  const w1 = variantWith('mistral', 'mistral-w1', (c) => (c.sliding_window = 1));
  assert.deepEqual(last(w1, [5, 9, 300]), last(w1, [77, 12, 300]));
  // W = 2 over the fixture's 2 layers: position 3 sees positions 2-3 in layer 1, which saw
  // 1-3 in layer 0; position 0 is out of reach, position 1 is not.
  const w2 = variantWith('mistral', 'mistral-w2', (c) => (c.sliding_window = 2));
  assert.deepEqual(last(w2, [5, 9, 300, 41]), last(w2, [77, 9, 300, 41]));
  assert.notDeepEqual(last(w2, [5, 9, 300, 41]), last(w2, [5, 10, 300, 41]));
  // null: full attention, the first token matters.
  const full = variantWith('mistral', 'mistral-full', (c) => (c.sliding_window = null));
  assert.notDeepEqual(last(full, [5, 9, 300]), last(full, [77, 9, 300]));
});

test('the checkpoint and the config must agree: a missing or an unused tensor is refused', () => {
  const unused = variantWith('llama', 'llama-unused', (c) => (c.tie_word_embeddings = true));
  assert.throws(() => new ReferenceModel(unused), /lm_head\.weight differs from model\.embed_tokens\.weight/);
  const biased = variantWith('llama', 'llama-bias', (c) => (c.attention_bias = true));
  assert.throws(() => new ReferenceModel(biased), /tensor model\.layers\.0\.self_attn\.q_proj\.bias is missing/);
  const extra = variantWith('llama-llama3', 'llama3-nobias', (c) => { c.attention_bias = false; c.mlp_bias = false; });
  assert.throws(() => new ReferenceModel(extra), /tensors the LlamaForCausalLM forward would not use: .*bias/);
  const sliced = variantWith('llama', 'llama-fake-slice', (c) => (c.sliceserve = { original_hidden_size: 32, sliced_hidden_size: 24, sparsity: 0.25 }));
  assert.throws(() => new ReferenceModel(sliced), /a sliced model has weightless norms/);
});

const base = { architectures: ['LlamaForCausalLM'], hidden_size: 32, intermediate_size: 48, num_hidden_layers: 3, num_attention_heads: 4, num_key_value_heads: 2, vocab_size: 512, max_position_embeddings: 128 };

test('config resolution follows each family\'s configuration defaults', () => {
  const qwen = resolveReferenceConfig({ ...base, architectures: ['Qwen2ForCausalLM'], use_sliding_window: true, sliding_window: 7, max_window_layers: 1 });
  assert.deepEqual(qwen.layerWindows, [null, 7, 7]);
  assert.deepEqual(qwen.bias, { qkv: true, o: false, mlp: false, head: false });
  assert.deepEqual(resolveReferenceConfig({ ...base, architectures: ['Qwen2ForCausalLM'], sliding_window: 7 }).layerWindows, [null, null, null]);
  assert.deepEqual(resolveReferenceConfig({ ...base, architectures: ['MistralForCausalLM'] }).layerWindows, [4096, 4096, 4096]);
  assert.equal(resolveReferenceConfig({ ...base, architectures: ['Qwen3ForCausalLM'] }).headDim, 128);
  const phi = resolveReferenceConfig({ ...base, architectures: ['PhiForCausalLM'] });
  assert.equal(phi.rope!.rotaryDim, 4); // partial_rotary_factor 0.5 of head_dim 8
  assert.equal(phi.block, 'parallel');
  const legacy = resolveReferenceConfig({ ...base, rope_theta: 500000, rope_scaling: { type: 'linear', factor: 4 } });
  assert.deepEqual([legacy.rope!.type, legacy.rope!.factor, legacy.rope!.theta], ['linear', 4, 500000]);
  const opt = resolveReferenceConfig({ architectures: ['OPTForCausalLM'], hidden_size: 32, ffn_dim: 48, num_hidden_layers: 2, num_attention_heads: 4, vocab_size: 512 });
  assert.deepEqual([opt.positions, opt.tieWordEmbeddings, opt.normEps, opt.activation], ['learned', true, 1e-5, 'relu']);
});

test('config resolution refuses what the reference does not implement, naming it', () => {
  const refuse = (c: JsonConfig, pattern: RegExp) => assert.throws(() => resolveReferenceConfig(c), (e: Error) => e instanceof ReferenceUnsupportedError && pattern.test(e.message));
  refuse({ ...base, architectures: ['GemmaForCausalLM'] }, /GemmaForCausalLM is not implemented by the reference; supported: LlamaForCausalLM, /);
  refuse({ ...base, rope_scaling: { rope_type: 'yarn', factor: 4, original_max_position_embeddings: 32 } }, /rope type "yarn" is not supported/);
  refuse({ ...base, architectures: ['Phi3ForCausalLM'], rope_scaling: { type: 'su', short_factor: [1], long_factor: [1] } }, /"longrope"/);
  refuse({ ...base, rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 16 }, original_max_position_embeddings: 32 }, /at the top level but 16 in the rope dict/);
  refuse({ ...base, architectures: ['Qwen2ForCausalLM'], layer_types: ['full_attention', 'sliding_attention', 'full_attention'] }, /layer 1 is sliding_attention but the config has no sliding window/);
  refuse({ architectures: ['OPTForCausalLM'], hidden_size: 32, ffn_dim: 48, num_hidden_layers: 2, num_attention_heads: 4, do_layer_norm_before: false }, /do_layer_norm_before false/);
  refuse({ ...base, hidden_act: 'quick_gelu' }, /hidden_act "quick_gelu" is not supported/);
});

test('story splitting strips ASCII whitespace and drops empty pieces (PROTOCOL.md §3)', () => {
  assert.deepEqual(splitStories(Buffer.from(' a b\n<|endoftext|>\n\n<|endoftext|>\tc\r\n<|endoftext|>')), ['a b', 'c']);
});

test('the reference imports nothing from SliceServe\'s product code', () => {
  const allowed = /^(\.\/[\w-]+\.js|node:\w+|@huggingface\/tokenizers|commander)$/;
  let scanned = 0;
  for (const file of fs.readdirSync(path.join(REPO_ROOT, 'test', 'reference')).filter((f) => f.endsWith('.ts') && !f.endsWith('.test.ts'))) {
    const text = fs.readFileSync(path.join(REPO_ROOT, 'test', 'reference', file), 'utf8');
    const specifiers = [...text.matchAll(/(?:^|\n)\s*(?:import|export)[^'"]*?from\s+'([^']+)'/g)].map((m) => m[1]!);
    scanned += specifiers.length;
    for (const s of specifiers) assert.match(s, allowed, `${file} imports ${s}`);
  }
  assert.ok(scanned >= 10, `the scan found ${scanned} imports`);
});
