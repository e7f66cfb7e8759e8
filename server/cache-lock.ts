/**
 * Replicas share one slice cache (`SLICESERVE_CACHE_DIR`, a ReadWriteMany volume on
 * Kubernetes): a lock per sliced model in the cache directory makes the replicas that are asked
 * for the same slice at once compute it once. The first takes the lock and slices (the slicer
 * writes the artifact atomically: a temporary directory, then a rename); the others wait, then
 * find the artifact and load it. The lock is proper-lockfile's (an atomic `mkdir` of
 * `<cache>/<model>.lock`, works on network file systems), held from the main thread, whose event
 * loop stays free while a worker thread slices, so its heartbeat (the lock directory's mtime,
 * every {@link LOCK_UPDATE_MS}) never stalls; a lock whose holder died goes stale after
 * {@link LOCK_STALE_MS} and is taken over.
 */
import fs from 'node:fs';
import path from 'node:path';
import lockfile from 'proper-lockfile';
import { makeDirectories } from '../models/dirs.js';

/** A lock not refreshed for this long belongs to a dead holder (ms). */
export const LOCK_STALE_MS = 30_000;
/** How often a holder refreshes its lock (ms). */
export const LOCK_UPDATE_MS = 5_000;
/** How often a waiting replica tries again (ms). */
const RETRY_MS = 250;

/** Options of {@link acquireSliceLock}. */
export interface SliceLockOptions {
  /** Aborting it stops waiting (the promise rejects with an Error). */
  signal?: AbortSignal;
  /** Called once when the lock is held by someone else and the caller starts waiting. */
  onWait?: () => void;
  /** The lock was lost while held (its heartbeat failed, or another process took it over as stale). */
  onCompromised?: (err: Error) => void;
}

/**
 * Takes the cache lock of sliced model `model` in `cacheDir` (created if missing), waiting as
 * long as another process holds it.
 * @returns the function that releases it
 * @throws Error when `signal` aborts the wait, or when the cache directory cannot be written
 */
export async function acquireSliceLock(cacheDir: string, model: string, options: SliceLockOptions = {}): Promise<() => Promise<void>> {
  makeDirectories(cacheDir);
  const target = path.join(cacheDir, model);
  let waiting = false;
  for (;;) {
    if (options.signal?.aborted) throw new Error('cancelled: the server is shutting down');
    try {
      return await lockfile.lock(target, {
        realpath: false,
        lockfilePath: `${target}.lock`,
        stale: LOCK_STALE_MS,
        update: LOCK_UPDATE_MS,
        retries: 0,
        // proper-lockfile's default throws from a timer, which would end the process.
        onCompromised: (err) => options.onCompromised?.(err),
      });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ELOCKED') throw err;
      if (!waiting) {
        waiting = true;
        options.onWait?.();
      }
      await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
    }
  }
}
