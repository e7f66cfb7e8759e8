/** `sliceserve generate`: complete a prompt with a (dense or sliced) model. */
import type { Command } from 'commander';
import { generate } from '../../engine/generate.js';
import { loadModel } from '../../models/load.js';
import { parseDeviceRequest } from '../../runtime/device.js';
import { DecoderSession } from '../../runtime/decoder-session.js';
import { quantizeModelWithReport } from '../../slicer/quantize.js';
import { DEFAULT_MODEL_DIR, QUANTIZE_HELP, QUANT_ROTATION_HELP, dtypeOption, intOption, numberAboveOption, numberOption, quantRotationOption, quantizeOption, resolveBundled, safeIntOption } from '../options.js';

export function register(program: Command): void {
  program
    .command('generate')
    .description('complete a prompt; prints only the completion (prompt + output = the full text)')
    .option('--model <dir>', 'model directory (llama2.c, Hugging Face, or a sliced artifact)', DEFAULT_MODEL_DIR)
    .requiredOption('--prompt <text>', 'the prompt')
    .option('--max-tokens <n>', 'tokens to generate at most', intOption(1), 256)
    .option('--temperature <t>', '0 = greedy (0..2, as the API)', numberOption(0, 2, true), 1)
    .option('--top-p <p>', 'nucleus sampling mass, in (0, 1]', numberAboveOption(0, 1), 1)
    .option('--top-k <k>', 'keep the k most likely tokens (0 = all)', intOption(0), 0)
    .option('--seed <n>', 'random seed for reproducible sampling (any integer, as the API\'s seed)', safeIntOption)
    .option('--ignore-eos', 'keep generating after the end-of-sequence token')
    .option('--device <device>', 'cpu | cuda | webgpu | auto', (v) => parseDeviceRequest(v), 'cpu')
    .option('--dtype <dtype>', 'graph precision: float32 | float16 (float16 is for GPUs)', dtypeOption, 'float32')
    .option('--quantize <precision>', `${QUANTIZE_HELP}; quantized in memory`, quantizeOption, 'none')
    .option('--quant-rotation <mode>', QUANT_ROTATION_HELP, quantRotationOption, 'auto')
    .action(async (opts) => {
      let model = await loadModel(resolveBundled(opts.model));
      if (opts.quantize !== 'none') model = (await quantizeModelWithReport(model, { preset: opts.quantize, rotation: opts.quantRotation })).model;
      const session = await DecoderSession.create(model, { device: opts.device, dtype: opts.dtype });
      try {
        const promptIds = model.tokenizer.encode(opts.prompt);
        const context = session.maxContext;
        if (promptIds.length + opts.maxTokens > context) {
          const room = context - promptIds.length;
          throw new Error(
            `--max-tokens ${opts.maxTokens}: the prompt (${promptIds.length} tokens) plus ${opts.maxTokens} exceed the context length ${context} of ${model.id}; ` +
              (room > 0 ? `pass --max-tokens ${room} or less` : 'shorten --prompt'),
          );
        }
        const result = await generate(session, model.tokenizer, promptIds, {
          maxTokens: opts.maxTokens,
          stopAtEos: !opts.ignoreEos,
          sampling: { temperature: opts.temperature, topP: opts.topP, topK: opts.topK, seed: opts.seed, presencePenalty: 0, frequencyPenalty: 0 },
          onText: (delta) => process.stdout.write(delta),
        });
        // stdout holds exactly the completion; the newline that ends the line goes to the
        // terminal (or, when stdout is piped, in front of the stderr summary).
        if (process.stdout.isTTY) process.stdout.write('\n');
        process.stderr.write(`${process.stdout.isTTY ? '' : '\n'}[${result.tokens.length} tokens, finish_reason ${result.finishReason}]\n`);
      } finally {
        await session.release();
      }
    });
}
