/**
 * `npm run ppl-table`: slices the bundled stories260K at each sparsity of the README table,
 * evaluates perplexity with the protocol of PROTOCOL.md (64 validation windows of 256 tokens,
 * calibration on 128 train windows of 256 tokens), and rewrites the table between the
 * `<!-- ppl-table:start -->` / `<!-- ppl-table:end -->` markers of README.md. The JSON goes to
 * docs/ppl-table.json.
 *
 * Usage: node dist/scripts/ppl-table.js [--model dir] [--sparsities 0,0.1,...] [--no-readme]
 */
import fs from 'node:fs';
import path from 'node:path';
import { perplexity } from '../runtime/perplexity.js';
import { loadModel } from '../models/load.js';
import { buildTokenStream, cutWindows } from '../models/tokenizer/index.js';
import type { LoadedModel } from '../models/types.js';
import { DecoderSession } from '../runtime/decoder-session.js';
import { countParameters, sliceModelWithReport } from '../slicer/index.js';
import { DEFAULT_CALIBRATION_FILE, DEFAULT_EVAL_FILE, DEFAULT_MODEL_DIR } from '../cli/options.js';

interface Row {
  sparsity: number | null;
  hidden_size: number;
  parameters: number;
  perplexity: number;
  slicing_s: number;
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
  const rows: Row[] = [{ sparsity: null, hidden_size: dense.config.hidden_size, parameters: countParameters(dense.weights), perplexity: await evaluate(dense, windows), slicing_s: 0 }];
  for (const s of sparsities) {
    const { model, report } = await sliceModelWithReport(dense, { sparsity: s, calibrationFile: DEFAULT_CALIBRATION_FILE });
    rows.push({ sparsity: s, hidden_size: report.width, parameters: report.parametersAfter, perplexity: await evaluate(model, windows), slicing_s: report.timings.total_s });
    process.stderr.write(`sparsity ${s}: d'=${report.width} ppl=${rows[rows.length - 1].perplexity.toFixed(4)}\n`);
  }
  const lines = [
    `| sparsity | d' (hidden) | parameters | perplexity | vs dense | slicing time (s) |`,
    `|---|---|---|---|---|---|`,
    ...rows.map((r) =>
      `| ${r.sparsity === null ? 'dense' : r.sparsity} | ${r.hidden_size} | ${r.parameters.toLocaleString('en-US')} | ${r.perplexity.toFixed(4)} | ${r.sparsity === null ? '' : relativeChange(r.perplexity, rows[0].perplexity)} | ${r.sparsity === null ? '' : r.slicing_s.toFixed(1)} |`,
    ),
  ];
  const table = lines.join('\n');
  console.log(table);
  fs.mkdirSync('docs', { recursive: true });
  fs.writeFileSync(path.join('docs', 'ppl-table.json'), JSON.stringify({ model: dense.id, eval: DEFAULT_EVAL_FILE, calibration: DEFAULT_CALIBRATION_FILE, rows, generated: new Date().toISOString() }, null, 2) + '\n');
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
