/** `sliceserve bench`: the load generator (same options as `npm run bench --`); see loadtests/. */
import type { Command } from 'commander';
import { benchAction } from '../../loadtests/main.js';
import { addBenchOptions } from '../../loadtests/options.js';

export function register(program: Command): void {
  const cmd = program
    .command('bench')
    .description('load-test the server: dense vs sliced, interleaved, over a concurrency sweep; ' +
      'writes loadtests/reports/<timestamp>/ (report.json, report.md, chart.svg)');
  addBenchOptions(cmd).action(async (opts: Record<string, unknown>) => {
    await benchAction(opts, process.argv.slice(process.argv.indexOf('bench') + 1));
  });
}
