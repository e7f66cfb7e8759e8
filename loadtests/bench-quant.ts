/**
 * `npm run bench:quant`: the measurements behind docs/quantization.md.
 *
 *   ops:   op-level speed and accuracy of MatMulNBits / DynamicQuantizeMatMul vs float32
 *          MatMul on the linear shapes of bench-110m and a 1B model (bench-quant-ops.ts);
 *   model: dense vs SliceGPT-rotated vs sliced weights of a trained model (stories260K):
 *          per-layer weight/output errors on real calibration activations and perplexity
 *          with dequantized weights (bench-quant-model.ts).
 *
 * Usage: npm run bench:quant [-- options]
 *   --part ops|model|all      what to run (default all)
 *   --shapes 110m,1b          shape sets of the ops part (default both)
 *   --bits 4,8  --blocks 32,64,128  --levels 0,1,4
 *   --batches 1,16            batch sizes (rows of A)
 *   --rounds 7                interleaved timing rounds per variant
 *   --threads 2               intra-op threads
 *   --model models/stories260K  --sparsity 0.25   (model part)
 *   --tokens 2048  --cal-windows 128  --no-ppl   (model part: activation rows, slicing windows, skip perplexity)
 *   --rotation-seeds 1234     seeds of the random residual rotations tried on top of PCA (model part)
 *   --json FILE               also write every number as JSON (default loadtests/reports/quant-<time>.json)
 * Speed figures are comparable only within one run (the machine is shared).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { QUANT_PRESETS, type AccuracyLevel, type BlockQuantOptions, type QuantBits } from '../models/quant/index.js';
import { measureShape, variantName, type LinearShape, type OpResult, type OpVariant } from './bench-quant-ops.js';
import { configName, measureModels } from './bench-quant-model.js';

const { values: args } = parseArgs({
  options: {
    part: { type: 'string', default: 'all' },
    shapes: { type: 'string', default: '110m,1b' },
    bits: { type: 'string', default: '4,8' },
    blocks: { type: 'string', default: '32,64,128' },
    levels: { type: 'string', default: '0,1,4' },
    batches: { type: 'string', default: '1,16' },
    rounds: { type: 'string', default: '7' },
    threads: { type: 'string', default: '2' },
    model: { type: 'string', default: 'models/stories260K' },
    sparsity: { type: 'string', default: '0.25' },
    json: { type: 'string' },
    tokens: { type: 'string', default: '2048' },
    'cal-windows': { type: 'string', default: '128' },
    'no-ppl': { type: 'boolean', default: false },
    'rotation-seeds': { type: 'string', default: '1234' },
  },
});

function intList(text: string, flag: string, allowed?: number[]): number[] {
  const list = text.split(',').map((s) => Number(s.trim()));
  for (const v of list) {
    if (!Number.isInteger(v) || v < 0 || (allowed && !allowed.includes(v))) throw new Error(`--${flag} must be a comma-separated list of ${allowed ? allowed.join('/') : 'integers'}, got "${text}"`);
  }
  return list;
}

/** Linear shapes [N = out, K = in] per model (Llama: q/o d x d, gate/up ffn x d, down d x ffn, head vocab x d). */
const SHAPE_SETS: Record<string, LinearShape[]> = {
  '110m': [
    { label: '110m q/o', N: 768, K: 768 },
    { label: '110m gate/up', N: 2048, K: 768 },
    { label: '110m down', N: 768, K: 2048 },
    { label: '110m head', N: 32000, K: 768 },
  ],
  '1b': [
    { label: '1b q/o', N: 2048, K: 2048 },
    { label: '1b gate/up', N: 8192, K: 2048 },
    { label: '1b down', N: 2048, K: 8192 },
    { label: '1b head', N: 32000, K: 2048 },
  ],
};

const pct = (x: number) => (Number.isNaN(x) ? '-' : `${(x * 100).toFixed(x < 0.001 ? 4 : 2)} %`);

/** Bits read per weight: codes + float32 scales + zero points (DynamicQuantizeMatMul: one scale per output). */
function bitsPerWeight(v: OpVariant, K: number): number {
  if (v.kind === 'f32') return 32;
  if (v.kind === 'dqmm') return 8 + 32 / K;
  return v.bits! + 32 / v.blockSize! + (v.symmetric ? 0 : v.bits! / v.blockSize!);
}

const geomean = (xs: number[]) => Math.exp(xs.reduce((a, x) => a + Math.log(x), 0) / xs.length);

function opsTables(results: OpResult[], batches: number[]): string {
  const variants = [...new Map(results.map((r) => [variantName(r), r])).values()];
  const shapes = [...new Set(results.map((r) => r.shape))];
  const lines: string[] = ['\n#### Summary: geometric mean of the speed-ups over the shapes (min-max), mean relative error\n'];
  lines.push(`| variant | bits/weight (K=2048) | ${batches.map((b) => `batch ${b}`).join(' | ')} | rel. error |`, `|---|---|${batches.map(() => '---').join('|')}|---|`);
  for (const v of variants.filter((x) => x.kind !== 'f32')) {
    const name = variantName(v);
    const cells = batches.map((b) => {
      const s = results.filter((x) => x.batch === b && variantName(x) === name).map((x) => x.speedup);
      return `${geomean(s).toFixed(2)}x (${Math.min(...s).toFixed(2)}-${Math.max(...s).toFixed(2)})`;
    });
    const errs = results.filter((x) => variantName(x) === name).map((x) => x.relError);
    lines.push(`| ${name} | ${bitsPerWeight(v, 2048).toFixed(2)} | ${cells.join(' | ')} | ${pct(errs.reduce((a, b) => a + b, 0) / errs.length)} |`);
  }
  for (const batch of batches) {
    lines.push(`\n#### Batch ${batch}: speed-up over f32 MatMul (f32 ms in the first row)\n`);
    lines.push(`| variant | ${shapes.join(' | ')} | rel. error (mean) |`);
    lines.push(`|---|${shapes.map(() => '---').join('|')}|---|`);
    for (const v of variants) {
      const name = variantName(v);
      const cells = shapes.map((s) => {
        const r = results.find((x) => x.shape === s && x.batch === batch && variantName(x) === name);
        if (!r) return '';
        return r.kind === 'f32' ? `${r.ms.toFixed(3)} ms` : `${r.speedup.toFixed(2)}x`;
      });
      const errs = results.filter((x) => x.batch === batch && variantName(x) === name).map((x) => x.relError);
      lines.push(`| ${name} | ${cells.join(' | ')} | ${pct(errs.reduce((a, b) => a + b, 0) / errs.length)} |`);
    }
  }
  return lines.join('\n');
}

async function main(): Promise<void> {
  const part = args.part!;
  if (!['ops', 'model', 'all'].includes(part)) throw new Error(`--part must be ops, model or all, got "${part}"`);
  const bits = intList(args.bits!, 'bits', [4, 8]) as QuantBits[];
  const blocks = intList(args.blocks!, 'blocks', [16, 32, 64, 128, 256]);
  const levels = intList(args.levels!, 'levels', [0, 1, 2, 3, 4]) as AccuracyLevel[];
  const batches = intList(args.batches!, 'batches');
  const rounds = intList(args.rounds!, 'rounds')[0];
  const threads = intList(args.threads!, 'threads')[0];
  const log = (s: string) => process.stderr.write(`${s}\n`);
  const report: Record<string, unknown> = { generated: new Date().toISOString(), cpu: os.cpus()[0]?.model, threads, args };
  const md: string[] = [];

  if (part !== 'model') {
    const shapes = args.shapes!.split(',').flatMap((s) => {
      const set = SHAPE_SETS[s.trim()];
      if (!set) throw new Error(`--shapes: unknown set "${s}" (known: ${Object.keys(SHAPE_SETS).join(', ')})`);
      return set;
    });
    const results: OpResult[] = [];
    for (const shape of shapes) {
      for (const b of bits) {
        const variants: OpVariant[] = [];
        for (const blockSize of blocks) for (const accuracyLevel of levels) for (const symmetric of [true, false]) variants.push({ kind: 'nbits', bits: b, blockSize, accuracyLevel, symmetric });
        if (b === 8) variants.push({ kind: 'dqmm' });
        log(`ops: ${shape.label} [${shape.N}x${shape.K}], ${b}-bit group (${variants.length} variants + f32)`);
        const group = await measureShape(shape, variants, batches, rounds, threads, log);
        // The f32 baseline is measured in every group; keep the first group's row only.
        results.push(...group.filter((r) => r.kind !== 'f32' || !results.some((x) => x.kind === 'f32' && x.shape === r.shape && x.batch === r.batch)));
      }
    }
    report.ops = results;
    md.push(`### Op level (${threads} threads, median of ${rounds} interleaved rounds; error vs float64 with unquantized weights)`, opsTables(results, batches));
  }

  if (part !== 'ops') {
    const configs: BlockQuantOptions[] = [];
    for (const b of bits) for (const blockSize of blocks) for (const symmetric of [true, false]) configs.push({ bits: b, blockSize, symmetric });
    // Scopes (head, shortcuts, embedding) are evaluated at the block size of each preset.
    const presetBlock = (b: QuantBits) => (b === 8 ? QUANT_PRESETS.int8 : QUANT_PRESETS.int4).linear.blockSize;
    let scopeConfigs = configs.filter((c) => c.blockSize === presetBlock(c.bits));
    if (scopeConfigs.length === 0) scopeConfigs = configs.filter((c) => c.blockSize === blocks[0]);
    const sparsity = Number(args.sparsity);
    const m = await measureModels({ modelDir: args.model!, sparsity, configs, scopeConfigs, tokens: intList(args.tokens!, 'tokens')[0], calWindows: intList(args['cal-windows']!, 'cal-windows')[0], perplexity: !args['no-ppl'], rotationSeeds: intList(args['rotation-seeds']!, 'rotation-seeds'), log });
    report.model = m;
    const models = [...new Set(m.layers.map((r) => r.model))];
    md.push(`\n### ${path.basename(args.model!)}: output error per layer type on real calibration activations (acc0 / acc4), mean over layers\n`);
    const layerTypes = [...new Set(m.layers.map((r) => r.layer))];
    for (const c of configs.map(configName)) {
      md.push(`\n${c}\n`, `| layer | ${models.join(' | ')} |`, `|---|${models.map(() => '---').join('|')}|`);
      for (const layer of layerTypes) {
        const cells = models.map((mod) => {
          const r = m.layers.find((x) => x.model === mod && x.config === c && x.layer === layer)!;
          return Number.isNaN(r.outputError0) ? `w ${pct(r.weightError)}` : `${pct(r.outputError0)} / ${pct(r.outputError4)} (w ${pct(r.weightError)})`;
        });
        md.push(`| ${layer} | ${cells.join(' | ')} |`);
      }
    }
    if (m.ppl.length) {
      md.push(`\n### ${path.basename(args.model!)}: perplexity with dequantized weights (64 x 256 validation tokens)\n`);
      const pplModels = [...new Set(m.ppl.map((r) => r.model))];
      const keys = [...new Set(m.ppl.map((r) => `${r.config}|${r.scope}`))];
      md.push(`| config | scope | ${pplModels.join(' | ')} |`, `|---|---|${pplModels.map(() => '---').join('|')}|`);
      for (const k of keys) {
        const [config, scope] = k.split('|');
        const cells = pplModels.map((mod) => {
          const r = m.ppl.find((x) => x.model === mod && x.config === config && x.scope === scope);
          const base = m.ppl.find((x) => x.model === mod && x.config === 'f32')!;
          return r ? (config === 'f32' ? r.perplexity.toFixed(4) : `${r.perplexity.toFixed(4)} (${((r.perplexity / base.perplexity - 1) * 100).toFixed(2)} %)`) : '';
        });
        md.push(`| ${config} | ${scope} | ${cells.join(' | ')} |`);
      }
    }
  }

  const jsonPath = args.json ?? path.join('loadtests', 'reports', `quant-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  fs.mkdirSync(path.dirname(jsonPath), { recursive: true });
  fs.writeFileSync(jsonPath, JSON.stringify(report, null, 1) + '\n');
  console.log(md.join('\n'));
  log(`JSON: ${jsonPath}`);
}

main().catch((err) => {
  process.stderr.write(`bench:quant: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
