/** `sliceserve eval`: perplexity with the protocol of PROTOCOL.md (stories, BOS, windows). */
import fs from 'node:fs';
import type { Command } from 'commander';
import { perplexity } from '../../runtime/perplexity.js';
import { contextLength } from '../../models/config.js';
import { loadModel } from '../../models/load.js';
import { buildTokenStream, cutWindows } from '../../models/tokenizer/index.js';
import { parseDeviceRequest } from '../../runtime/device.js';
import { DecoderSession } from '../../runtime/decoder-session.js';
import { quantizeModelWithReport } from '../../slicer/quantize.js';
import { DEFAULT_EVAL_FILE, DEFAULT_MODEL_DIR, QUANTIZE_HELP, QUANT_ROTATION_HELP, dtypeOption, intOption, quantRotationOption, quantizeOption, resolveBundled } from '../options.js';

export function register(program: Command): void {
  program
    .command('eval')
    .description('perplexity on non-overlapping windows of a story file (split on <|endoftext|>, BOS per story)')
    .option('--model <dir>', 'model directory (llama2.c, Hugging Face, or a sliced artifact)', DEFAULT_MODEL_DIR)
    .option('--data <file>', 'text file of stories separated by <|endoftext|>', DEFAULT_EVAL_FILE)
    .option('--seq-len <n>', 'tokens per window', intOption(2), 256)
    .option('--windows <n>', 'number of windows', intOption(1), 64)
    .option('--batch-size <n>', 'windows per forward pass', intOption(1), 8)
    .option('--device <device>', 'cpu | cuda | webgpu | auto', (v) => parseDeviceRequest(v), 'cpu')
    .option('--dtype <dtype>', 'graph precision: float32 | float16 (float16 is for GPUs)', dtypeOption, 'float32')
    .option('--quantize <precision>', `${QUANTIZE_HELP}; quantized in memory`, quantizeOption, 'none')
    .option('--quant-rotation <mode>', QUANT_ROTATION_HELP, quantRotationOption, 'auto')
    .option('--json', 'print a JSON object as the last line of stdout')
    .action(async (opts) => {
      const data = resolveBundled(opts.data);
      if (!fs.existsSync(data)) throw new Error(`--data ${opts.data}: no such file`);
      if (!fs.statSync(data).isFile()) throw new Error(`--data ${opts.data} is not a file; pass a text file of stories separated by <|endoftext|>`);
      let model = await loadModel(resolveBundled(opts.model));
      if (opts.quantize !== 'none') model = (await quantizeModelWithReport(model, { preset: opts.quantize, rotation: opts.quantRotation })).model;
      const context = contextLength(model.config);
      if (opts.seqLen > context) throw new Error(`--seq-len ${opts.seqLen} exceeds the context length ${context} of ${model.id}; pass --seq-len ${context} or less`);
      const stream = buildTokenStream(fs.readFileSync(data), model.tokenizer);
      const windows = cutWindows(Array.from(stream.tokens), opts.seqLen, opts.windows, `--data ${opts.data}`);
      const session = await DecoderSession.create(model, { logits: 'all', device: opts.device, dtype: opts.dtype });
      try {
        const t0 = performance.now();
        const r = await perplexity(session, windows, opts.batchSize);
        const seconds = (performance.now() - t0) / 1000;
        const result = { model: model.id, data: opts.data, perplexity: r.perplexity, mean_nll: r.meanNll, tokens: r.tokens, windows: r.windows, seq_len: r.seqLen, sparsity: model.config.sliceserve?.sparsity ?? 0, quantize: model.quantization?.preset ?? 'none', seconds };
        if (opts.json) console.log(JSON.stringify(result));
        else console.log(`perplexity ${r.perplexity.toFixed(6)} over ${r.tokens} predicted tokens (${r.windows} windows of ${r.seqLen}) in ${seconds.toFixed(1)} s`);
      } finally {
        await session.release();
      }
    });
}
