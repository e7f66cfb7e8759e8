#!/usr/bin/env node
'use strict';
// Prints the load test's figures (loadtests/ report.json) as plain lines for the GPU check:
// output tokens/s, TTFT and TPOT (p50/p90, ms) per model and concurrency, errors, and the
// measured vs theoretical speedup of each sliced variant. Exit code 1 when the report is
// missing, has no runs, or counts errors.
// Usage: node scripts/gpu/summarize-bench.js <report.json>
const fs = require('node:fs');

const file = process.argv[2];
if (!file || !fs.existsSync(file)) {
  console.log(`bench report not found: ${file || '(no path given)'}`);
  process.exit(1);
}
const report = JSON.parse(fs.readFileSync(file, 'utf8'));
const runs = Array.isArray(report.runs) ? report.runs : [];
if (runs.length === 0) {
  console.log(`bench report ${file} has no runs`);
  process.exit(1);
}
const ms = (s) => (typeof s === 'number' ? `${(s * 1000).toFixed(1)}` : '-');
const pct = (o, k) => (o && typeof o[k] === 'number' ? o[k] : undefined);
const m = report.machine || {};
console.log(
  `machine: ${m.execution_provider || m.executionProvider || '?'} | onnxruntime-node ${m.onnxruntime_node || '?'} | ${m.cpu_model || m.cpu || ''}`.trim(),
);
let errors = 0;
for (const r of runs) {
  errors += r.errors || 0;
  const label = r.sparsity ? `sliced ${r.sparsity}` : 'dense';
  console.log(
    [
      `${label.padEnd(12)} c=${String(r.concurrency).padEnd(3)}`,
      `out tok/s ${typeof r.output_tokens_per_s === 'number' ? r.output_tokens_per_s.toFixed(1) : '-'}`,
      `TTFT p50/p90 ${ms(pct(r.ttft_s, 'p50'))}/${ms(pct(r.ttft_s, 'p90'))} ms`,
      `TPOT p50/p90 ${ms(pct(r.tpot_s, 'p50'))}/${ms(pct(r.tpot_s, 'p90'))} ms`,
      `errors ${r.errors || 0}/${r.requests ?? '?'}`,
      r.model ? `(${r.model})` : '',
    ].join('  '),
  );
}
for (const s of Array.isArray(report.speedup) ? report.speedup : []) {
  const f = (x) => (typeof x === 'number' ? `${x.toFixed(2)}x` : '-');
  console.log(`speedup sliced ${s.sparsity} c=${s.concurrency}: measured ${f(s.measured)}, theoretical ${f(s.theoretical)}`);
}
console.log(`errors: ${errors}`);
process.exit(errors === 0 ? 0 : 1);
