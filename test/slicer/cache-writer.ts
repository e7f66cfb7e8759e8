/**
 * Child process of test/slicer/cache.test.ts: loads a sliced artifact, then writes it as cache
 * entries `entry-0`, `entry-1`, ... under a cache root until it is killed (`kill -9` at a random
 * moment lands in the middle of a write). Prints "writing" once it starts the loop.
 * Usage: node cache-writer.js <sliced artifact dir> <cache root>
 */
import path from 'node:path';
import { loadSlicedArtifact } from '../../slicer/artifact.js';
import { writeCacheEntry } from '../../slicer/cache.js';

async function main(): Promise<void> {
  const [source, root] = process.argv.slice(2);
  const model = await loadSlicedArtifact(source);
  process.stdout.write('writing\n');
  for (let i = 0; ; i++) await writeCacheEntry(model, path.join(root, `entry-${process.pid}-${i}`));
}

void main();
