/**
 * Huge pages for the weights. onnxruntime keeps every (pre-packed) weight in memory it gets
 * from glibc malloc. On Linux with transparent huge pages in `madvise` mode (the usual default)
 * that memory sits on 4 KiB pages unless malloc is told to advise huge pages, which glibc
 * >= 2.35 does with the tunable `glibc.malloc.hugetlb=1`. A batch-1 decode step streams every
 * weight once (400 MB for bench-110m), so on 4 KiB pages it takes ~100,000 TLB misses per
 * token. Measured on this project's 2-core machines: dense bench-110m batch-1 decode 20.96 ->
 * 18.96 ms per step (-9.5 %), sliced 0.5 15.0 -> 13.65 ms; no change at batch 16, where the
 * step is not bound by memory bandwidth (docs/loadtests.md).
 *
 * A glibc tunable is read when the process starts, so it cannot be set from JavaScript:
 * `npm start` (scripts/start.sh), the Docker image and the load tests' server set it in the
 * environment, and the server logs {@link hugePageStatus} at startup.
 */
import * as fs from 'node:fs';

/** The glibc tunable that makes malloc advise transparent huge pages (glibc >= 2.35). */
export const MALLOC_HUGETLB_TUNABLE = 'glibc.malloc.hugetlb';

export interface HugePageStatus {
  /**
   * The kernel's transparent-huge-page mode (`/sys/kernel/mm/transparent_hugepage/enabled`):
   * 'always', 'madvise' or 'never'; null where the file is missing (not Linux, or no THP).
   */
  transparentHugePages: 'always' | 'madvise' | 'never' | null;
  /** The value of `glibc.malloc.hugetlb` in GLIBC_TUNABLES, or null when it is not set. */
  mallocHugetlb: string | null;
  /**
   * Whether malloc'd weight memory gets transparent huge pages: THP 'always', or 'madvise'
   * with the tunable at 1. (The tunable at 2 asks for reserved hugetlbfs pages instead, which
   * depends on the system's configuration and is not judged here.)
   */
  active: boolean;
}

/**
 * Whether this process's weights can sit on huge pages.
 * @param env the environment the process was started with (GLIBC_TUNABLES is read at startup)
 * @param thpFile the kernel's THP mode file (a parameter for tests)
 * @returns the status; never throws (an unreadable file counts as no THP)
 */
export function hugePageStatus(env: NodeJS.ProcessEnv = process.env, thpFile = '/sys/kernel/mm/transparent_hugepage/enabled'): HugePageStatus {
  let transparentHugePages: HugePageStatus['transparentHugePages'] = null;
  try {
    // The active mode is the bracketed word: "always [madvise] never".
    const mode = /\[(always|madvise|never)\]/.exec(fs.readFileSync(thpFile, 'utf8'))?.[1] as HugePageStatus['transparentHugePages'] | undefined;
    transparentHugePages = mode ?? null;
  } catch {
    // No such file: not Linux, or a kernel without THP.
  }
  const mallocHugetlb = tunableValue(env.GLIBC_TUNABLES, MALLOC_HUGETLB_TUNABLE);
  return { transparentHugePages, mallocHugetlb, active: transparentHugePages === 'always' || (transparentHugePages === 'madvise' && mallocHugetlb === '1') };
}

/**
 * `env` with `glibc.malloc.hugetlb=1` added to GLIBC_TUNABLES (a colon-separated list),
 * for a child process. A GLIBC_TUNABLES that already sets the tunable is kept as it is, so
 * an explicit `glibc.malloc.hugetlb=0` wins. Other C libraries ignore the variable.
 * @returns a new environment object; `env` is not modified
 */
export function withMallocHugePages(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const current = env.GLIBC_TUNABLES;
  if (tunableValue(current, MALLOC_HUGETLB_TUNABLE) !== null) return { ...env };
  const entry = `${MALLOC_HUGETLB_TUNABLE}=1`;
  return { ...env, GLIBC_TUNABLES: current ? `${current}:${entry}` : entry };
}

/**
 * The value of `name` in a GLIBC_TUNABLES string (`a.b=1:c.d=2`), or null. glibc applies the
 * entries in order, so the last one of a name is the one in effect.
 */
function tunableValue(tunables: string | undefined, name: string): string | null {
  let value: string | null = null;
  for (const item of (tunables ?? '').split(':')) {
    const eq = item.indexOf('=');
    if (eq > 0 && item.slice(0, eq).trim() === name) value = item.slice(eq + 1).trim();
  }
  return value;
}

/**
 * One log line about {@link HugePageStatus}: what is in effect and, when the weights are on
 * 4 KiB pages, how to change that.
 */
export function hugePageAdvice(status: HugePageStatus): string {
  if (status.active) return 'weights on transparent huge pages';
  if (status.transparentHugePages === null) return 'transparent huge pages unavailable (not Linux, or no THP in this kernel)';
  if (status.transparentHugePages === 'never') return 'transparent huge pages are off in the kernel (/sys/kernel/mm/transparent_hugepage/enabled is "never"): weights on 4 KiB pages';
  if (status.mallocHugetlb === '2') return 'glibc.malloc.hugetlb=2: malloc uses reserved hugetlbfs pages where the system has them (see /proc/meminfo HugePages_Total)';
  if (status.mallocHugetlb !== null) return `weights on 4 KiB pages (GLIBC_TUNABLES sets ${MALLOC_HUGETLB_TUNABLE}=${status.mallocHugetlb}); ${MALLOC_HUGETLB_TUNABLE}=1 makes batch-1 decode on the CPU ~9 % faster`;
  return `weights on 4 KiB pages: start with GLIBC_TUNABLES=${MALLOC_HUGETLB_TUNABLE}=1 (npm start and the Docker image do) for ~9 % faster batch-1 decode on the CPU`;
}
