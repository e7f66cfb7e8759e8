/**
 * Directory creation for output and cache folders.
 *
 * - Node 20's `fs.mkdirSync(dir, { recursive: true })` never returns where mkdir answers ENOENT
 *   for a parent that does exist (any path under /proc): it retries the parent for ever, at
 *   100 % CPU. {@link makeDirectories} creates one component at a time and fails instead.
 * - `fs.mkdtempSync` makes mode 0700 directories; a folder renamed into place from one (a
 *   `slice --out` directory, a cache entry) would stay unreadable to other users, such as
 *   replicas running under another uid on a shared cache. {@link makeTempDirectory} uses the
 *   default mode (0777 minus the umask), as `mkdir` does.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

/** Times {@link makeDirectories} starts over when a parent it found is removed meanwhile. */
const MAKE_DIRECTORIES_RETRIES = 5;

/**
 * Creates `dir` and whichever of its parents are missing (`mkdir -p`). A parent that another
 * process removes meanwhile (a cache's empty staging area, cleaned up by a writer that just
 * finished) is made again; a mkdir that answers ENOENT while its parent exists (/proc) fails.
 * @throws Error naming `dir` and the component that could not be created (its errno message:
 *   ENOENT, EACCES, ENOTDIR...), or that exists and is not a directory (a file, a dangling link).
 */
export function makeDirectories(dir: string): void {
  const target = path.resolve(dir);
  const fail = (reason: string): never => {
    throw new Error(`cannot create ${target}: ${reason}`);
  };
  for (let attempt = 0; ; attempt++) {
    const missing: string[] = [];
    for (let p = target; ; p = path.dirname(p)) {
      let stat: fs.Stats | undefined;
      try {
        stat = fs.statSync(p);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') fail((err as Error).message);
      }
      if (stat) {
        if (!stat.isDirectory()) fail(`${p} is not a directory`);
        break;
      }
      if (path.dirname(p) === p) break; // a root that does not exist: mkdir below reports it
      missing.push(p);
    }
    let vanished = false;
    for (const p of missing.reverse()) {
      try {
        fs.mkdirSync(p);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'EEXIST') {
          // Made meanwhile by another process (fine), or a file or dangling link in the way.
          let isDir = false;
          try {
            isDir = fs.statSync(p).isDirectory();
          } catch {
            /* a dangling link */
          }
          if (isDir) continue;
          fail(`${p} exists and is not a directory`);
        }
        if (code === 'ENOENT' && !fs.existsSync(path.dirname(p)) && attempt < MAKE_DIRECTORIES_RETRIES) {
          vanished = true; // its parent was removed after we saw it: start over
          break;
        }
        fail((err as Error).message);
      }
    }
    if (!vanished) return;
  }
}

/**
 * A new empty directory `<prefix><12 hex digits>` with the default mode (0777 minus the umask).
 * The prefix's directory must exist.
 * @throws Error from mkdir (other than a name already taken, which is retried).
 */
export function makeTempDirectory(prefix: string): string {
  for (;;) {
    const dir = `${prefix}${randomBytes(6).toString('hex')}`;
    try {
      fs.mkdirSync(dir);
      return dir;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
  }
}
