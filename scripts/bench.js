#!/usr/bin/env node
'use strict';
// `npm run bench -- [options]`: the load generator (loadtests/). `npm run bench -- --help` lists
// the options. The package.json script compiles the TypeScript sources first.
const path = require('node:path');
const fs = require('node:fs');
const entry = path.join(__dirname, '..', 'dist', 'loadtests', 'main.js');
if (!fs.existsSync(entry)) {
  console.error('bench: dist/ is missing; run `npm run build` first');
  process.exit(1);
}
require(entry).benchMain(process.argv.slice(2)).catch((err) => {
  console.error(`bench: ${err && err.message ? err.message : err}`);
  process.exit(1);
});
