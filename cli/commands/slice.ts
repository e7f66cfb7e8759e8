/** `sliceserve slice`: SliceGPT a model and write the sliced artifact. */
import fs from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { contextLength } from '../../models/config.js';
import { hashModelWeights, loadModel } from '../../models/load.js';
import { saveQuantizedArtifact } from '../../models/quant/artifact.js';
import { largestUsableSparsity, sliceModelWithReport, slicedWidth } from '../../slicer/index.js';
import { quantizeModelWithReport } from '../../slicer/quantize.js';
import { progressBar } from '../progress.js';
import { DEFAULT_CALIBRATION_FILE, DEFAULT_EVAL_FILE, DEFAULT_MODEL_DIR, QUANTIZE_HELP, QUANT_ROTATION_HELP, intOption, numberOption, quantRotationOption, quantizeOption, resolveBundled } from '../options.js';
import { makeDirectories } from '../../models/dirs.js';

export function register(program: Command): void {
  program
    .command('slice')
    .description('compress a model with SliceGPT (delete rows and columns after PCA rotations), optionally quantize the slice, and write it to --out')
    .option('--model <dir>', 'dense model directory', DEFAULT_MODEL_DIR)
    .requiredOption('--sparsity <s>', 'fraction of hidden_size to remove, in [0, 1)', numberOption(0, 1))
    .option('--calibration <file>', 'calibration text (stories separated by <|endoftext|>)', DEFAULT_CALIBRATION_FILE)
    .option('--cal-windows <n>', 'calibration windows', intOption(1), 128)
    .option('--cal-seq-len <n>', 'tokens per calibration window', intOption(2), 256)
    .option('--round-interval <n>', "round the sliced width d' down to a multiple of this", intOption(1), 8)
    .option('--slice-head', 'also slice the input of the head (default: the last layer keeps full width)')
    .option('--quantize <precision>', `${QUANTIZE_HELP}; the slice is quantized after slicing and --out holds the quantized artifact`, quantizeOption, 'none')
    .option('--quant-rotation <mode>', QUANT_ROTATION_HELP, quantRotationOption, 'auto')
    .option('--held-out <file>', 'held-out text (not the calibration text) on which the slice\'s and the dense model\'s perplexity are measured and recorded', DEFAULT_EVAL_FILE)
    .option('--held-out-windows <n>', 'held-out windows of --cal-seq-len tokens (0 = do not measure)', intOption(0), 16)
    .requiredOption('--out <dir>', 'output directory (must not exist or be empty)')
    .option('--overwrite', 'replace an existing --out directory')
    .action(async (opts) => {
      const out = path.resolve(opts.out);
      if (fs.existsSync(out) && !fs.statSync(out).isDirectory()) {
        throw new Error(`--out ${opts.out} is a file; --out must be a directory that is empty or does not exist yet`);
      }
      if (fs.existsSync(out) && fs.readdirSync(out).length > 0 && !opts.overwrite) {
        throw new Error(`--out ${opts.out} exists and is not empty; choose another directory or pass --overwrite`);
      }
      const parent = path.dirname(out);
      try {
        makeDirectories(parent);
        fs.accessSync(parent, fs.constants.W_OK);
      } catch {
        throw new Error(`--out ${opts.out}: cannot write to ${parent}`);
      }
      const calibrationFile = resolveBundled(opts.calibration);
      const heldOutFile = opts.heldOutWindows > 0 ? resolveBundled(opts.heldOut) : null;
      if (heldOutFile && !fs.existsSync(heldOutFile)) throw new Error(`--held-out ${opts.heldOut}: no such file; pass a text file of stories, or --held-out-windows 0`);
      if (heldOutFile && fs.existsSync(calibrationFile) && fs.realpathSync(heldOutFile) === fs.realpathSync(calibrationFile)) {
        throw new Error(`--held-out ${opts.heldOut} is the calibration text: the quality cost is measured on text the slice was not calibrated on; pass another --held-out file, or --held-out-windows 0`);
      }
      const t0 = performance.now();
      const model = await loadModel(resolveBundled(opts.model));
      const context = contextLength(model.config);
      if (opts.calSeqLen > context) {
        throw new Error(`--cal-seq-len ${opts.calSeqLen} exceeds the context length ${context} of ${model.id}; pass --cal-seq-len ${context} or less`);
      }
      const d = model.config.hidden_size;
      try {
        slicedWidth(opts.sparsity, d, opts.roundInterval);
      } catch {
        const largest = largestUsableSparsity(d, opts.roundInterval);
        const fix = largest !== null ? `the largest usable --sparsity is ${largest}` : `${model.id} cannot be sliced with --round-interval ${opts.roundInterval}: lower it`;
        throw new Error(`--sparsity ${opts.sparsity} with --round-interval ${opts.roundInterval} leaves no columns of ${model.id}'s hidden size ${d}; ${fix}`);
      }
      if (model.quantization) throw new Error(`--model ${opts.model} is quantized (${model.quantization.preset}); slice its float model and pass --quantize ${model.quantization.preset}`);
      const loadS = (performance.now() - t0) / 1000;
      const bar = progressBar('slicing');
      // The artifact is written to --out as the slicer goes (each tensor once final); with
      // --quantize the float slice goes to a directory beside --out and is quantized from there.
      const floatDir = opts.quantize === 'none' ? out : `${out}.float-${process.pid}`;
      const { model: sliced, report } = await sliceModelWithReport(
        model,
        {
          sparsity: opts.sparsity,
          calibrationFile,
          calWindows: opts.calWindows,
          calSeqLen: opts.calSeqLen,
          roundInterval: opts.roundInterval,
          sliceHead: !!opts.sliceHead,
          heldOutFile,
          heldOutWindows: opts.heldOutWindows,
          outDir: floatDir,
          overwrite: opts.quantize === 'none' ? !!opts.overwrite : true,
          warn: (message) => process.stderr.write(`sliceserve: note: ${message}\n`),
        },
        (p) => bar.update(p.fraction, p.phase),
      );
      bar.stop();
      let quantLine = '';
      let quantizeS = 0;
      if (opts.quantize !== 'none') {
        // The slice's float tensors are read from floatDir one at a time as they are rotated and quantized.
        const t1 = performance.now();
        try {
          const sourceSha256 = hashModelWeights(sliced);
          const q = await quantizeModelWithReport(sliced, { preset: opts.quantize, rotation: opts.quantRotation });
          saveQuantizedArtifact({ ...q.model, id: path.basename(out) }, out, { overwrite: !!opts.overwrite, sourceSha256 });
          quantLine = `quantized to ${opts.quantize}${q.report.rotation ? ` after a random residual rotation (seed ${q.report.rotation.seed})` : ''}: ${(q.report.quantizedBytes / 2 ** 20).toFixed(2)} MiB of quantized weights in ${q.report.seconds.toFixed(2)} s`;
        } finally {
          fs.rmSync(floatDir, { recursive: true, force: true });
        }
        quantizeS = (performance.now() - t1) / 1000;
      }
      const change = report.parametersAfter / report.parametersBefore - 1;
      const pct = `${Math.abs(100 * change).toFixed(1)}% ${change > 0 ? 'more: the untied head and the shortcut matrices outweigh the deleted rows and columns' : 'fewer'}`;
      console.log(`sliced ${model.id}: hidden_size ${report.originalWidth} -> d' = ${report.width} (sparsity ${opts.sparsity}, round interval ${opts.roundInterval})`);
      console.log(`parameters: ${report.parametersBefore.toLocaleString('en-US')} -> ${report.parametersAfter.toLocaleString('en-US')} (${pct})`);
      const t = report.timings;
      const q = sliced.config.sliceserve?.quality;
      if (q) {
        const cost = 100 * (q.perplexity / q.dense_perplexity - 1);
        console.log(
          `held-out perplexity (${q.file}, ${q.windows} windows x ${q.seq_len} tokens): dense ${q.dense_perplexity.toFixed(4)} -> sliced ${q.perplexity.toFixed(4)} (${cost >= 0 ? '+' : ''}${cost.toFixed(1)}%)`,
        );
      }
      if (quantLine) console.log(quantLine);
      console.log(
        `time: load ${loadS.toFixed(2)} s, calibration ${t.calibration_s.toFixed(2)} s, pca ${t.pca_s.toFixed(2)} s, rotation ${t.rotation_s.toFixed(2)} s, held-out perplexity ${t.held_out_s.toFixed(2)} s${quantLine ? `, quantize ${quantizeS.toFixed(2)} s` : ''}, total ${(t.total_s + quantizeS).toFixed(2)} s`,
      );
      console.log(`wrote ${out}`);
    });
}
