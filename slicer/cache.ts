/**
 * Integrity of the slicer's on-disk cache (issue 15). A cache entry is a sliced model directory
 * (slicer/artifact.ts) plus `sliceserve-manifest.json`, written last, which records the size and
 * SHA-256 of every file of the entry at write time. An entry is
 * - written in a private staging directory (`<cache>/.staging/<entry>.<pid>.<random>`), every
 *   file and the directory fsync'ed, then renamed into place in one step, so that a process
 *   killed at any point (`kill -9`, power loss) leaves either nothing or a whole entry under the
 *   entry's name; staging directories of dead processes are removed by the next writer;
 * - checked on load: the manifest must exist and parse, every file it lists must have the size
 *   and SHA-256 it records, and the directory must load as a sliced model. An entry that fails
 *   is moved aside to `<cache>/.corrupt/<entry>-<time>` (with a REASON.txt) and the caller
 *   slices again: a corrupt entry is never used and never stops the other models.
 */
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { LoadedModel } from '../models/types.js';
import { loadSlicedArtifact, saveSlicedArtifact } from './artifact.js';
import { makeDirectories } from '../models/dirs.js';

/** The manifest's file name inside an entry. */
export const MANIFEST_FILE = 'sliceserve-manifest.json';
/** Folders inside the cache root: writers' staging area, entries moved aside. */
export const STAGING_DIR = '.staging';
export const CORRUPT_DIR = '.corrupt';

/** `sliceserve-manifest.json`: format 1. */
export interface CacheManifest {
  format: 1;
  /** ISO time of the write. */
  written: string;
  /** Every file of the entry but the manifest, by name: size in bytes and SHA-256 (hex). */
  files: Record<string, { bytes: number; sha256: string }>;
}

/** SHA-256 (hex) and size of a file, read in 8 MiB chunks (files of any size). */
export function hashFile(file: string): { bytes: number; sha256: string } {
  const hash = createHash('sha256');
  const fd = fs.openSync(file, 'r');
  const chunk = Buffer.allocUnsafe(8 << 20);
  let bytes = 0;
  try {
    for (;;) {
      const n = fs.readSync(fd, chunk, 0, chunk.length, null);
      if (n === 0) break;
      hash.update(chunk.subarray(0, n));
      bytes += n;
    }
  } finally {
    fs.closeSync(fd);
  }
  return { bytes, sha256: hash.digest('hex') };
}

function fsyncPath(p: string): void {
  const fd = fs.openSync(p, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** Whether process `pid` exists (signal 0; EPERM means it exists under another user). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Removes staging directories left by writers that are no longer running (killed mid-write).
 * A staging directory's name ends with `.<pid>.<random>`; one whose pid is alive is kept.
 * @returns the directories removed.
 */
export function sweepStaging(cacheRoot: string): string[] {
  const staging = path.join(cacheRoot, STAGING_DIR);
  let names: string[];
  try {
    names = fs.readdirSync(staging);
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const name of names) {
    const pid = Number(/\.(\d+)\.[0-9a-f]+$/.exec(name)?.[1]);
    if (Number.isInteger(pid) && pid !== process.pid && alive(pid)) continue;
    if (pid === process.pid) continue; // a write of this process in progress
    fs.rmSync(path.join(staging, name), { recursive: true, force: true });
    removed.push(path.join(staging, name));
  }
  return removed;
}

/**
 * A private staging directory for writing the cache entry `entryDir` (stale ones of dead
 * writers are swept first). Build the entry in `<staging>/entry`, then {@link sealCacheEntry}.
 * @returns the staging directory; remove it when done, whatever happened.
 */
export function stageCacheEntry(entryDir: string): string {
  const root = path.dirname(entryDir);
  const stagingRoot = path.join(root, STAGING_DIR);
  makeDirectories(stagingRoot);
  sweepStaging(root);
  const staging = path.join(stagingRoot, `${path.basename(entryDir)}.${process.pid}.${randomBytes(4).toString('hex')}`);
  makeDirectories(staging); // with its parent: a writer finishing meanwhile may have removed the empty staging area
  return staging;
}

/** Removes a staging directory of {@link stageCacheEntry}, and the staging area when it is left empty. */
export function releaseStaging(staging: string): void {
  fs.rmSync(staging, { recursive: true, force: true });
  try {
    fs.rmdirSync(path.dirname(staging)); // only when empty: another writer's staging keeps it
  } catch {
    /* not empty, or already gone */
  }
}

/**
 * Records the manifest of the complete entry built in `built` (every file fsync'ed and hashed)
 * and renames it to `entryDir` in one step. When another writer has put the entry in place
 * meanwhile, theirs is kept.
 */
export function sealCacheEntry(built: string, entryDir: string): void {
  const root = path.dirname(entryDir);
  const manifest: CacheManifest = { format: 1, written: new Date().toISOString(), files: {} };
  for (const name of fs.readdirSync(built).sort()) {
    const file = path.join(built, name);
    fsyncPath(file);
    manifest.files[name] = hashFile(file);
  }
  const manifestFile = path.join(built, MANIFEST_FILE);
  fs.writeFileSync(manifestFile, JSON.stringify(manifest, null, 2) + '\n');
  fsyncPath(manifestFile);
  fsyncPath(built);
  try {
    fs.renameSync(built, entryDir);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw err;
    // Another writer finished the same entry first: keep theirs.
  }
  fsyncPath(root);
}

/**
 * Writes `model` (a sliced model) as the cache entry `entryDir`, with its manifest.
 * When another writer has put the entry in place meanwhile, theirs is kept and this one dropped.
 * @throws Error when the cache cannot be written (the message names the directory).
 */
export async function writeCacheEntry(model: LoadedModel, entryDir: string): Promise<void> {
  let staging: string | null = null;
  try {
    staging = stageCacheEntry(entryDir);
    const built = path.join(staging, 'entry');
    await saveSlicedArtifact(model, built);
    sealCacheEntry(built, entryDir);
  } catch (err) {
    throw new Error(`cannot write the slice cache entry ${entryDir}: ${err instanceof Error ? err.message : String(err)}`);
  } finally {
    if (staging) releaseStaging(staging);
  }
}

/**
 * Checks a cache entry against its manifest.
 * @returns null when every listed file has its recorded size and SHA-256; otherwise why not
 *   (missing or unreadable manifest, a missing, resized or changed file).
 */
export function verifyCacheEntry(entryDir: string): string | null {
  let manifest: CacheManifest;
  try {
    manifest = JSON.parse(fs.readFileSync(path.join(entryDir, MANIFEST_FILE), 'utf8')) as CacheManifest;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return code === 'ENOENT' ? `no ${MANIFEST_FILE} (an unfinished write, or an entry from before integrity checks)` : `${MANIFEST_FILE} is unreadable (${(err as Error).message})`;
  }
  if (manifest?.format !== 1 || typeof manifest.files !== 'object' || manifest.files === null || Object.keys(manifest.files).length === 0) {
    return `${MANIFEST_FILE} is not a format-1 manifest listing files`;
  }
  for (const [name, want] of Object.entries(manifest.files)) {
    if (name.includes('/') || name.includes('\\') || name === '..') return `${MANIFEST_FILE} names a file outside the entry: ${JSON.stringify(name)}`;
    const file = path.join(entryDir, name);
    let got: { bytes: number; sha256: string };
    try {
      got = hashFile(file);
    } catch (err) {
      return `${name}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`;
    }
    if (got.bytes !== want.bytes) return `${name} has ${got.bytes} bytes, ${want.bytes} were written`;
    if (got.sha256 !== want.sha256) return `${name} has SHA-256 ${got.sha256.slice(0, 16)}..., ${want.sha256.slice(0, 16)}... was written`;
  }
  return null;
}

/**
 * Opens a cache entry: verified against its manifest, then loaded as a sliced model (or with
 * `load`: the quantized cache loads its artifacts, slicer/quantize.ts).
 * @returns the model, or the reason the entry cannot be used.
 */
export async function openCacheEntry(
  entryDir: string,
  id: string,
  load: (dir: string, id: string) => LoadedModel | Promise<LoadedModel> = loadSlicedArtifact,
): Promise<{ model: LoadedModel } | { problem: string }> {
  const problem = verifyCacheEntry(entryDir);
  if (problem) return { problem };
  try {
    return { model: await load(entryDir, id) };
  } catch (err) {
    return { problem: err instanceof Error ? err.message : String(err) };
  }
}

/**
 * Moves an unusable entry aside to `<cache>/.corrupt/<entry>-<time>`, with REASON.txt saying why.
 * @returns where it went (the entry is removed instead when it cannot be moved).
 */
export function quarantineCacheEntry(entryDir: string, reason: string): string {
  const root = path.dirname(entryDir);
  const target = path.join(root, CORRUPT_DIR, `${path.basename(entryDir)}-${new Date().toISOString().replace(/[:.]/g, '-')}-${randomBytes(2).toString('hex')}`);
  try {
    makeDirectories(path.dirname(target));
    fs.renameSync(entryDir, target);
    fs.writeFileSync(path.join(target, 'REASON.txt'), `${reason}\n`);
    return target;
  } catch {
    fs.rmSync(entryDir, { recursive: true, force: true });
    return '(removed)';
  }
}
