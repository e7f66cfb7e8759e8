#!/usr/bin/env node
'use strict';
// Entry point of the `sliceserve` CLI. The TypeScript sources are compiled to dist/ by
// `npm ci` (the `prepare` script) or `npm run build`.
const path = require('node:path');
const fs = require('node:fs');
const main = path.join(__dirname, '..', 'dist', 'cli', 'main.js');
if (!fs.existsSync(main)) {
  console.error('sliceserve: dist/ is missing; run `npm run build` (or `npm ci`) in ' + path.join(__dirname, '..'));
  process.exit(1);
}
require(main).main(process.argv).catch((err) => {
  console.error(`sliceserve: ${err && err.message ? err.message : err}`);
  process.exit(1);
});
