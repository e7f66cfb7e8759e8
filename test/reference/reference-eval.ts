/**
 * `npm run reference-eval -- --model <dir>`: the protocol perplexity and the greedy text of a
 * Hugging Face model directory (dense, or a SliceServe SliceGPT artifact) from the independent
 * float64 reference alone (test/reference/forward.ts, eval.ts), to cross-check
 * `sliceserve eval --seq-len 128 --windows 16` and `sliceserve generate --temperature 0` on a
 * checkpoint the tests are not given. Same data, same windows, same prompt encoding; prints
 * the windows' sha256 so that a tokenization difference is not mistaken for a forward one.
 *
 * Cost: about 2 x parameters x tokens float64 multiply-adds on one core (a 0.5B model:
 * 16 x 128 tokens take tens of minutes); memory: one layer's weights at a time for models over
 * 512 MiB.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import { ReferenceModel } from './forward.js';
import { encode, endOfSequenceIds, loadTokenizer, protocolWindows, referenceGreedy, referencePerplexity } from './eval.js';

const REPO_ROOT = path.resolve(__dirname, '..', '..', '..');

function positiveInt(min: number) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) throw new InvalidArgumentError(`expected an integer >= ${min}`);
    return n;
  };
}

const program = new Command('reference-eval')
  .description('protocol perplexity and greedy text of a model directory, from the float64 reference forward alone')
  .requiredOption('--model <dir>', 'Hugging Face model directory (config.json, safetensors, tokenizer.json)')
  .option('--data <file>', 'stories separated by <|endoftext|>', path.join(REPO_ROOT, 'data', 'tinystories-valid-sample.txt'))
  .option('--seq-len <n>', 'tokens per window', positiveInt(2), 128)
  .option('--windows <n>', 'number of windows (0: no perplexity)', positiveInt(0), 16)
  .option('--prompt <text>', 'prompt of the greedy continuation', 'Once upon a time')
  .option('--prompt-ids <ids>', 'prompt as comma-separated token ids (instead of --prompt)', (v: string) => {
    const ids = v.split(',').map((x) => Number(x.trim()));
    if (ids.length === 0 || !ids.every((x) => Number.isInteger(x) && x >= 0)) throw new InvalidArgumentError('expected comma-separated token ids');
    return ids;
  })
  .option('--max-tokens <n>', 'greedy tokens to generate (0: none)', positiveInt(0), 16)
  .option('--ignore-eos', 'keep generating after an end-of-sequence token')
  .option('--json', 'print one JSON object as the last line')
  .action((opts: { model: string; data: string; seqLen: number; windows: number; prompt: string; promptIds?: number[]; maxTokens: number; ignoreEos?: boolean; json?: boolean }) => {
    if (!fs.existsSync(path.join(opts.model, 'config.json'))) throw new Error(`--model ${opts.model}: no config.json there`);
    const model = new ReferenceModel(opts.model);
    const tokenizer = loadTokenizer(opts.model);
    const result: Record<string, unknown> = { model: opts.model, architecture: model.config.architecture, sliced: model.config.sliced !== null };
    if (opts.windows > 0) {
      if (!fs.existsSync(opts.data)) throw new Error(`--data ${opts.data}: no such file`);
      const { windows, sha256 } = protocolWindows(fs.readFileSync(opts.data), tokenizer, opts.seqLen, opts.windows);
      const t0 = performance.now();
      const r = referencePerplexity(model, windows, 4, (done, total) => process.stderr.write(`\rperplexity: ${done}/${total} windows`));
      process.stderr.write('\n');
      Object.assign(result, { perplexity: r.perplexity, mean_nll: r.meanNll, tokens: r.tokens, windows: opts.windows, seq_len: opts.seqLen, windows_sha256: sha256, perplexity_s: (performance.now() - t0) / 1000 });
      if (!opts.json) console.log(`perplexity ${r.perplexity.toFixed(6)} over ${r.tokens} predicted tokens (${opts.windows} windows of ${opts.seqLen}; windows sha256 ${sha256.slice(0, 16)})`);
    }
    if (opts.maxTokens > 0) {
      const prompt = opts.promptIds ?? encode(tokenizer, opts.prompt);
      const g = referenceGreedy(model, prompt, opts.maxTokens, opts.ignoreEos ? [] : endOfSequenceIds(opts.model));
      // The completion as the text the new tokens add after the prompt's own decoding.
      const before = tokenizer.decode(prompt);
      const all = tokenizer.decode([...prompt, ...g.tokens]);
      const text = all.startsWith(before) ? all.slice(before.length) : tokenizer.decode(g.tokens);
      Object.assign(result, { prompt_ids: prompt, greedy_ids: g.tokens, greedy_text: text, finish_reason: g.finishReason });
      if (!opts.json) {
        console.log(`greedy ids ${JSON.stringify(g.tokens)} (finish_reason ${g.finishReason})`);
        console.log(`greedy text ${JSON.stringify(text)}`);
      }
    }
    if (opts.json) console.log(JSON.stringify(result));
  });

try {
  program.parse();
} catch (err) {
  console.error(`reference-eval: ${(err as Error).message}`);
  process.exit(1);
}
