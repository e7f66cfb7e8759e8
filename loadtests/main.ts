/**
 * Entry points of `npm run bench` (scripts/bench.js) and `npm run bench:md`
 * (scripts/bench-md.js), and the action shared with `sliceserve bench`.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Command, CommanderError } from 'commander';
import { REPO_ROOT, runBench } from './bench.js';
import { renderChartSvg } from './chart.js';
import { renderMarkdown } from './markdown.js';
import { addBenchOptions, resolveBenchOptions } from './options.js';
import { ReportSchema, type Report } from './report.js';

/**
 * Runs a benchmark from parsed options, with Ctrl-C handling: the first SIGINT/SIGTERM stops
 * the run (the server is stopped and a partial report written), a second one kills the
 * server and exits at once.
 *
 * @throws Error (one line) when the run fails.
 */
export async function benchAction(raw: Record<string, unknown>, argv: string[]): Promise<void> {
  const opts = resolveBenchOptions(raw, argv);
  const controller = new AbortController();
  let interrupts = 0;
  const onSignal = (sig: NodeJS.Signals): void => {
    interrupts++;
    if (interrupts === 1) {
      process.stderr.write(`\n[bench] ${sig}: stopping (the server is being shut down; press Ctrl-C again to force)\n`);
      controller.abort();
    } else {
      process.exit(130); // the server is SIGKILLed by its process 'exit' hook
    }
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const { dir, report } = await runBench(opts, controller.signal);
    const rel = path.relative(process.cwd(), dir) || dir;
    const failed = report.runs.reduce((s, r) => s + r.errors, 0);
    process.stderr.write(`[bench] report: ${rel}/report.md (also report.json, chart.svg; latest/ points there)${failed ? `; ${failed} requests failed` : ''}\n`);
    process.stdout.write(path.join(rel, 'report.md') + '\n');
    if (controller.signal.aborted) process.exitCode = 130;
  } finally {
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
  }
}

/** `npm run bench -- [options]`. */
export async function benchMain(argv: string[]): Promise<void> {
  const program = addBenchOptions(new Command('npm run bench --'))
    .description('Load-test SliceServe: dense vs sliced, interleaved, over a concurrency sweep; writes loadtests/reports/<timestamp>/')
    .exitOverride()
    .showHelpAfterError('(run with --help for usage)');
  try {
    program.parse(argv, { from: 'user' });
  } catch (err) {
    if (err instanceof CommanderError) {
      process.exitCode = err.exitCode;
      return;
    }
    throw err;
  }
  await benchAction(program.opts(), argv);
}

/**
 * Reads and validates a report.json.
 *
 * @throws Error naming the file when it is missing or does not match the schema.
 */
export function readReport(file: string): Report {
  let json: unknown;
  try {
    json = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    throw new Error(`cannot read ${file}: ${(err as Error).message}; run \`npm run bench\` first`);
  }
  const parsed = ReportSchema.safeParse(json);
  if (!parsed.success) throw new Error(`${file} is not a SliceServe load-test report: ${parsed.error.issues[0]?.message ?? 'schema mismatch'}`);
  return parsed.data;
}

/**
 * Writes BENCHMARKS.md at the repository root from a report.json (default:
 * loadtests/reports/latest/report.json), with its chart (loadtests/benchmarks-chart.svg) and a
 * copy of the report (loadtests/benchmarks-report.json, committed with BENCHMARKS.md so that
 * `npm run bench:md -- loadtests/benchmarks-report.json` regenerates it exactly).
 *
 * @returns the files written.
 * @throws Error when the report is missing or invalid (see {@link readReport}).
 */
export async function writeBenchmarksMd(reportFile: string, root = REPO_ROOT): Promise<string[]> {
  const report = readReport(reportFile);
  const dir = path.join(root, 'loadtests');
  const chart = path.join(dir, 'benchmarks-chart.svg');
  const copy = path.join(dir, 'benchmarks-report.json');
  const md = path.join(root, 'BENCHMARKS.md');
  fs.mkdirSync(dir, { recursive: true });
  if (path.resolve(reportFile) !== copy) fs.writeFileSync(copy, JSON.stringify(report, null, 2) + '\n');
  fs.writeFileSync(chart, await renderChartSvg(report));
  fs.writeFileSync(md, renderMarkdown(report, { title: 'SliceServe benchmarks: dense vs SliceGPT-sliced, float32 / int8 / int4 weights, CPU', chartPath: 'loadtests/benchmarks-chart.svg', source: 'loadtests/benchmarks-report.json' }));
  return [md, chart, copy];
}

/** `npm run bench:md [-- report.json]`. */
export async function benchMdMain(argv: string[]): Promise<void> {
  const file = argv[0] ?? path.join(REPO_ROOT, 'loadtests', 'reports', 'latest', 'report.json');
  const written = await writeBenchmarksMd(file);
  process.stderr.write(`[bench:md] wrote ${written.map((f) => path.relative(process.cwd(), f)).join(', ')} from ${file}\n`);
}
