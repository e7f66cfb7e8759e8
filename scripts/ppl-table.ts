/**
 * `npm run ppl-table`: slices the bundled stories260K at each sparsity of the README table,
 * evaluates perplexity with the protocol of PROTOCOL.md (64 validation windows of 256 tokens,
 * calibration on 128 train windows of 256 tokens) for the float32 model and its int8 and int4
 * quantizations (slicer/quantize.ts, as `--quantize` serves them: a slice is randomly rotated
 * before quantizing; int4 is also measured without that rotation), counts how many of the
 * golden prompts keep their 60-token greedy text under int8 and int4, and rewrites the table
 * between the `<!-- ppl-table:start -->` / `<!-- ppl-table:end -->` markers of README.md. The
 * JSON goes to docs/ppl-table.json.
 *
 * Usage: node dist/scripts/ppl-table.js [--model dir] [--sparsities 0,0.1,...] [--no-readme]
 */
import fs from 'node:fs';
import path from 'node:path';
import { generate } from '../engine/generate.js';
import { perplexity } from '../runtime/perplexity.js';
import { loadModel } from '../models/load.js';
import { buildTokenStream, cutWindows } from '../models/tokenizer/index.js';
import type { LoadedModel } from '../models/types.js';
import { DecoderSession } from '../runtime/decoder-session.js';
import { countParameters, sliceModelWithReport } from '../slicer/index.js';
import { quantizeModelWithReport } from '../slicer/quantize.js';
import { DEFAULT_CALIBRATION_FILE, DEFAULT_EVAL_FILE, DEFAULT_MODEL_DIR } from '../cli/options.js';

/** Perplexity and greedy agreement of one quantization of a model. */
interface Quantized {
  perplexity: number;
  /** Golden prompts whose 60 greedy tokens equal the float32 model's. */
  greedy_identical: number;
  /** Mean over the golden prompts of the greedy tokens that equal float32's before the first difference (60 when identical). */
  greedy_common_prefix_mean: number;
}

interface Row {
  sparsity: number | null;
  hidden_size: number;
  parameters: number;
  perplexity: number;
  slicing_s: number;
  int8: Quantized;
  int4: Quantized;
  /** int4 without the random residual rotation (equal to int4 for the dense model, which is not rotated). */
  int4_no_rotation: Quantized;
}

/** The golden prompts: the repository's greedy-test prompts and the first six words of the first 20 validation stories. */
function goldenPrompts(): string[] {
  const stories = fs.readFileSync(DEFAULT_EVAL_FILE, 'utf8').split('<|endoftext|>').map((x) => x.trim()).filter(Boolean);
  return ['Once upon a time', 'The cat', 'Tom had a dog', 'Lily and Ben went to the park', ...stories.slice(0, 20).map((x) => x.split(/\s+/).slice(0, 6).join(' '))];
}

async function greedyTexts(model: LoadedModel, prompts: string[]): Promise<{ text: string; tokens: number[] }[]> {
  const session = await DecoderSession.create(model);
  const sampling = { temperature: 0, topP: 1, topK: 0, presencePenalty: 0, frequencyPenalty: 0 };
  try {
    const out: { text: string; tokens: number[] }[] = [];
    for (const p of prompts) {
      const r = await generate(session, model.tokenizer, model.tokenizer.encode(p), { maxTokens: 60, sampling });
      out.push({ text: r.text, tokens: r.tokens });
    }
    return out;
  } finally {
    await session.release();
  }
}

/** How many of `got` equal `want` and, on average, how many leading tokens agree. */
function agreement(got: { text: string; tokens: number[] }[], want: { text: string; tokens: number[] }[]): Pick<Quantized, 'greedy_identical' | 'greedy_common_prefix_mean'> {
  let prefix = 0;
  got.forEach((g, i) => {
    let k = 0;
    while (k < g.tokens.length && g.tokens[k] === want[i].tokens[k]) k++;
    prefix += k;
  });
  return { greedy_identical: got.filter((g, i) => g.text === want[i].text).length, greedy_common_prefix_mean: prefix / got.length };
}

/** "+12.3 %" style relative change, "+0.0 %" for changes below 0.05 %. */
function relativeChange(value: number, base: number): string {
  const pct = (value / base - 1) * 100;
  return `${pct >= 0 || pct > -0.05 ? '+' : ''}${(Math.abs(pct) < 0.05 ? 0 : pct).toFixed(1)} %`;
}

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

async function evaluate(model: LoadedModel, windows: number[][]): Promise<number> {
  const session = await DecoderSession.create(model, { logits: 'all' });
  try {
    return (await perplexity(session, windows, 8)).perplexity;
  } finally {
    await session.release();
  }
}

async function main(): Promise<void> {
  const modelDir = arg('--model') ?? DEFAULT_MODEL_DIR;
  const sparsities = (arg('--sparsities') ?? '0,0.1,0.2,0.25,0.3,0.4,0.5').split(',').map(Number);
  const dense = await loadModel(modelDir);
  const windows = cutWindows(Array.from(buildTokenStream(fs.readFileSync(DEFAULT_EVAL_FILE), dense.tokenizer).tokens), 256, 64);
  const prompts = goldenPrompts();
  /** Quantizes a copy of `model` (its float weights are consumed) and measures it against the float texts. */
  const measure = async (make: () => Promise<LoadedModel>, preset: 'int8' | 'int4', rotation: 'auto' | 'none', reference: { text: string; tokens: number[] }[]): Promise<Quantized> => {
    const { model } = await quantizeModelWithReport(await make(), { preset, rotation });
    return { perplexity: await evaluate(model, windows), ...agreement(await greedyTexts(model, prompts), reference) };
  };
  const rowOf = async (sparsity: number | null, make: () => Promise<LoadedModel>, slicingS: number): Promise<Row> => {
    const model = await make();
    const reference = await greedyTexts(model, prompts);
    const int4 = await measure(make, 'int4', 'auto', reference);
    return {
      sparsity,
      hidden_size: model.config.sliceserve?.sliced_hidden_size ?? model.config.hidden_size,
      parameters: countParameters(model.weights),
      perplexity: await evaluate(model, windows),
      slicing_s: slicingS,
      int8: await measure(make, 'int8', 'auto', reference),
      int4,
      int4_no_rotation: sparsity === null ? int4 : await measure(make, 'int4', 'none', reference),
    };
  };
  const rows: Row[] = [await rowOf(null, async () => loadModel(modelDir), 0)];
  for (const s of sparsities) {
    const { model, report } = await sliceModelWithReport(dense, { sparsity: s, calibrationFile: DEFAULT_CALIBRATION_FILE });
    // Each quantization consumes its input: give it a fresh copy of the slice's weights.
    const copy = async () => ({ ...model, weights: new Map(model.weights) });
    const row = await rowOf(s, copy, report.timings.total_s);
    rows.push(row);
    process.stderr.write(`sparsity ${s}: d'=${row.hidden_size} ppl f32 ${row.perplexity.toFixed(4)} int8 ${row.int8.perplexity.toFixed(4)} int4 ${row.int4.perplexity.toFixed(4)} (no rotation ${row.int4_no_rotation.perplexity.toFixed(4)})\n`);
  }
  const q = (x: Quantized, base: number) => `${x.perplexity.toFixed(4)} (${relativeChange(x.perplexity, base)})`;
  const lines = [
    `| sparsity | d' (hidden) | parameters | perplexity f32 | vs dense | int8 | int4 | int4 without rotation | greedy = f32: identical (common tokens), int8 / int4 | slicing time (s) |`,
    `|---|---|---|---|---|---|---|---|---|---|`,
    ...rows.map((r) =>
      `| ${r.sparsity === null ? 'dense' : r.sparsity} | ${r.hidden_size} | ${r.parameters.toLocaleString('en-US')} | ${r.perplexity.toFixed(4)} | ${r.sparsity === null ? '' : relativeChange(r.perplexity, rows[0].perplexity)} | ${q(r.int8, r.perplexity)} | ${q(r.int4, r.perplexity)} | ${r.sparsity === null ? '(not rotated)' : q(r.int4_no_rotation, r.perplexity)} | ${r.int8.greedy_identical} (${r.int8.greedy_common_prefix_mean.toFixed(0)}) / ${r.int4.greedy_identical} (${r.int4.greedy_common_prefix_mean.toFixed(0)}) of ${prompts.length} | ${r.sparsity === null ? '' : r.slicing_s.toFixed(1)} |`,
    ),
  ];
  const table = lines.join('\n');
  console.log(table);
  fs.mkdirSync('docs', { recursive: true });
  fs.writeFileSync(path.join('docs', 'ppl-table.json'), JSON.stringify({ model: dense.id, eval: DEFAULT_EVAL_FILE, calibration: DEFAULT_CALIBRATION_FILE, golden_prompts: prompts, rows, generated: new Date().toISOString() }, null, 2) + '\n');
  if (!process.argv.includes('--no-readme')) {
    const readme = fs.readFileSync('README.md', 'utf8');
    const start = '<!-- ppl-table:start -->';
    const end = '<!-- ppl-table:end -->';
    const i = readme.indexOf(start);
    const j = readme.indexOf(end);
    if (i < 0 || j < i) throw new Error(`README.md has no ${start} ... ${end} markers`);
    fs.writeFileSync('README.md', readme.slice(0, i + start.length) + '\n' + table + '\n' + readme.slice(j));
  }
}

main().catch((err) => {
  console.error(`ppl-table: ${err instanceof Error ? err.message : err}`);
  process.exit(1);
});
