/** `sliceserve convert`: write any loadable model (e.g. a llama2.c checkpoint) as a Hugging Face directory. */
import fs from 'node:fs';
import path from 'node:path';
import { Option, type Command } from 'commander';
import { SAVE_DTYPES, saveHuggingFaceModel, type SaveDtype } from '../../models/huggingface.js';
import { loadModel } from '../../models/load.js';
import { countParameters } from '../../models/parameters.js';
import { DEFAULT_MODEL_DIR, resolveBundled } from '../options.js';

/** Human-readable byte count. */
function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 ** 2) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 ** 3) return `${(n / 1024 ** 2).toFixed(1)} MiB`;
  return `${(n / 1024 ** 3).toFixed(2)} GiB`;
}

export function register(program: Command): void {
  program
    .command('convert')
    .description('write a model as a Hugging Face directory (config.json, model.safetensors, tokenizer.json); ' +
      'llama2.c checkpoints get their wq/wk rows permuted to the Hugging Face RoPE layout')
    .option('--model <path>', 'model to convert: a llama2.c directory (checkpoint *.bin + tok*.bin) or a Hugging Face directory', DEFAULT_MODEL_DIR)
    .requiredOption('--out <dir>', 'output directory (must not exist or be empty, unless --overwrite)')
    .addOption(new Option('--dtype <dtype>', 'dtype of the saved weights (rounded to nearest even)').choices(SAVE_DTYPES).default('float32'))
    .option('--overwrite', 'replace a non-empty output directory')
    .action((opts: { model: string; out: string; dtype: SaveDtype; overwrite?: boolean }) => {
      const out = path.resolve(opts.out);
      if (!opts.overwrite && fs.existsSync(out) && (!fs.statSync(out).isDirectory() || fs.readdirSync(out).length > 0)) {
        throw new Error(`--out ${opts.out} exists and is not empty; pass --overwrite to replace it, or choose another directory`);
      }
      const model = loadModel(resolveBundled(opts.model));
      const files = saveHuggingFaceModel(model, out, { dtype: opts.dtype, overwrite: opts.overwrite === true });
      const c = model.config;
      const parameters = countParameters(model.weights);
      console.log(`converted ${model.id} (${model.format}) to a Hugging Face directory, ${opts.dtype}: ${out}`);
      console.log(`  ${c.num_hidden_layers} layers, hidden_size ${c.hidden_size}, ${c.num_attention_heads}/${c.num_key_value_heads} heads, ` +
        `intermediate_size ${c.intermediate_size}, vocab ${c.vocab_size}, ${parameters.toLocaleString('en-US')} parameters` +
        (c.tie_word_embeddings ? ', tied embeddings' : ''));
      for (const f of files) console.log(`  ${f.name.padEnd(36)} ${formatBytes(f.bytes).padStart(10)}`);
    });
}
