#!/usr/bin/env node
'use strict';
// `npm run bench:md [-- path/to/report.json]`: regenerates BENCHMARKS.md (and
// loadtests/benchmarks-chart.svg) from a load-test report, by default
// loadtests/reports/latest/report.json.
const path = require('node:path');
const fs = require('node:fs');
const entry = path.join(__dirname, '..', 'dist', 'loadtests', 'main.js');
if (!fs.existsSync(entry)) {
  console.error('bench:md: dist/ is missing; run `npm run build` first');
  process.exit(1);
}
require(entry).benchMdMain(process.argv.slice(2)).catch((err) => {
  console.error(`bench:md: ${err && err.message ? err.message : err}`);
  process.exit(1);
});
