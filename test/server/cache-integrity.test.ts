/**
 * A corrupt cached slice does not stop the server (issue 15): at startup the entry fails its
 * integrity check (slicer/cache.ts), is moved aside with a warning naming the model, the model
 * is sliced again, and both models serve the same text as before.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { CORRUPT_DIR, MANIFEST_FILE } from '../../slicer/cache.js';
import { DENSE, post, startTestServer } from './helpers.js';

const SLICED = `${DENSE}-sliced-0.25`;
let cacheDir: string;
before(() => {
  cacheDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sliceserve-corrupt-'));
});
after(() => fs.rmSync(cacheDir, { recursive: true, force: true }));

async function greedy(url: string, model: string): Promise<string> {
  const res = await post(`${url}/v1/completions`, { model, prompt: 'Once upon a time', max_tokens: 20, temperature: 0 }, {});
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return res.body.choices[0].text;
}

function entryDir(): string {
  const names = fs.readdirSync(cacheDir).filter((n) => n.startsWith(SLICED));
  assert.equal(names.length, 1, `entries: ${names.join(', ')}`);
  return path.join(cacheDir, names[0]);
}

for (const [what, damage] of [
  ['a changed byte in the weights', (e: string) => {
    const file = path.join(e, 'model.safetensors');
    const bytes = fs.readFileSync(file);
    bytes[bytes.length - 7] ^= 0x55;
    fs.writeFileSync(file, bytes);
  }],
  ['a truncated weights file and no manifest (a partial write of an older version)', (e: string) => {
    fs.truncateSync(path.join(e, 'model.safetensors'), 100);
    fs.rmSync(path.join(e, MANIFEST_FILE));
  }],
] as const) {
  test(`startup with ${what} in the cached slice: warned, sliced again, both models serve`, { timeout: 120_000 }, async () => {
    const first = await startTestServer({ sparsities: [0.25], calWindows: 4, cacheDir });
    const text = await greedy(first.url, SLICED);
    const denseText = await greedy(first.url, DENSE);
    await first.server.shutdown(1000);
    const before = fs.existsSync(path.join(cacheDir, CORRUPT_DIR)) ? fs.readdirSync(path.join(cacheDir, CORRUPT_DIR)).length : 0;

    damage(entryDir());
    const second = await startTestServer({ sparsities: [0.25], calWindows: 4, cacheDir });
    try {
      const warning = second.logs.find((l) => l.level === 40 && /cannot be used/.test(String(l.msg)));
      assert.ok(warning, `no warning; logged: ${second.logs.map((l) => l.msg).join(' | ')}`);
      assert.equal(warning.model, SLICED);
      assert.ok(second.logs.some((l) => l.msg === 'slicing job succeeded' && l.model === SLICED));
      assert.equal(await greedy(second.url, SLICED), text, 'the recomputed slice generates the same text');
      assert.equal(await greedy(second.url, DENSE), denseText);
      assert.equal(fs.readdirSync(path.join(cacheDir, CORRUPT_DIR)).length, before + 1, 'moved aside');
    } finally {
      await second.server.shutdown(1000);
    }
    // The recomputed entry is whole: a third start takes it from the cache without a warning.
    const third = await startTestServer({ sparsities: [0.25], calWindows: 4, cacheDir });
    try {
      assert.ok(!third.logs.some((l) => l.level === 40), 'no warning the third time');
      const jobs = (await (await fetch(`${third.url}/v1/slices`)).json()) as { data: { phase: string }[] };
      assert.equal(jobs.data[0].phase, 'loaded from cache');
    } finally {
      await third.server.shutdown(1000);
    }
  });
}
