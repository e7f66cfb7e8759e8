/**
 * The folders import downward only (brief: "folders import downward only"; ARCHITECTURES.md):
 *   models <- runtime <- slicer <- engine <- server <- loadtests <- cli <- scripts (the CLI
 *   also runs the load generator; scripts/ are developer tools over everything).
 * Every relative import of every TypeScript file of the product is read; an import from a
 * higher folder, or any folder-level cycle, fails with the importing file named.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { REPO_ROOT } from '../models/helpers.js';

/** Lowest first. A folder may import itself and any folder before it. */
const LAYERS = ['models', 'runtime', 'slicer', 'engine', 'server', 'loadtests', 'cli', 'scripts'];

function sources(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? sources(p) : e.name.endsWith('.ts') && !e.name.endsWith('.d.ts') ? [p] : [];
  });
}

/** Folder -> folder edges, each with one importing file as evidence. */
function folderEdges(): Map<string, Map<string, string>> {
  const edges = new Map<string, Map<string, string>>();
  for (const top of LAYERS) {
    const root = path.join(REPO_ROOT, top);
    if (!fs.existsSync(root)) continue;
    for (const file of sources(root)) {
      const text = fs.readFileSync(file, 'utf8');
      for (const m of text.matchAll(/(?:^|\n)\s*(?:import|export)[^'"]*?from\s+'(\.{1,2}\/[^']+)'/g)) {
        const target = path.relative(REPO_ROOT, path.resolve(path.dirname(file), m[1])).split(path.sep)[0];
        if (target === top || !LAYERS.includes(target)) continue;
        if (!edges.has(top)) edges.set(top, new Map());
        if (!edges.get(top)!.has(target)) edges.get(top)!.set(target, path.relative(REPO_ROOT, file));
      }
    }
  }
  return edges;
}

test('folders import downward only', () => {
  const edges = folderEdges();
  assert.ok(edges.size > 3, 'the scan found the imports');
  const upward: string[] = [];
  for (const [from, targets] of edges) {
    for (const [to, file] of targets) if (LAYERS.indexOf(to) > LAYERS.indexOf(from)) upward.push(`${file} (${from}/) imports ${to}/`);
  }
  assert.deepEqual(upward, []);
});

test('there is no folder-level import cycle', () => {
  const edges = folderEdges();
  const state = new Map<string, 'open' | 'done'>();
  const cycles: string[] = [];
  const visit = (folder: string, trail: string[]) => {
    if (state.get(folder) === 'done') return;
    if (state.get(folder) === 'open') {
      cycles.push([...trail.slice(trail.indexOf(folder)), folder].join(' -> '));
      return;
    }
    state.set(folder, 'open');
    for (const to of edges.get(folder)?.keys() ?? []) visit(to, [...trail, folder]);
    state.set(folder, 'done');
  };
  for (const folder of LAYERS) visit(folder, []);
  assert.deepEqual(cycles, []);
});
