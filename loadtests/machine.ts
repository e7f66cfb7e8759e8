/**
 * What the report says about the machine a benchmark ran on.
 */
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import * as os from 'node:os';
import type { HugePageStatus } from '../runtime/huge-pages.js';
import type { Report } from './report.js';

/** Installed onnxruntime-node version, or null when it cannot be resolved. */
export function onnxruntimeVersion(): string | null {
  try {
    const req = createRequire(__filename);
    return (req('onnxruntime-node/package.json') as { version: string }).version;
  } catch {
    return null;
  }
}

/**
 * Whether other work competed for the CPU: a 1-minute load average above half the cores at
 * the start or the end of the run (the load generator itself adds well under one).
 */
export function machineWasBusy(m: Report['machine']): boolean {
  const busy = (l: number[] | null): boolean => l !== null && l[0] > m.cores / 2;
  return busy(m.load_average_start) || busy(m.load_average_end);
}

/** `git rev-parse HEAD` of `cwd` (with `-dirty` when tracked files changed), or null outside git. */
export function gitCommit(cwd: string): string | null {
  try {
    const head = execFileSync('git', ['rev-parse', 'HEAD'], { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    return dirty ? `${head}-dirty` : head;
  } catch {
    return null;
  }
}

/**
 * The machine section of a report, with the load average now as `load_average_start`
 * (bandwidth fields and `load_average_end` are filled by the caller).
 *
 * @param executionProvider the onnxruntime execution provider the server used (e.g. "cpu").
 */
export function machineInfo(executionProvider: string): Report['machine'] {
  const cpus = os.cpus();
  return {
    cpu_model: (cpus[0]?.model ?? 'unknown').replace(/\s+/g, ' ').trim(),
    cores: os.availableParallelism?.() ?? cpus.length,
    memory_bytes: os.totalmem(),
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    node: process.versions.node,
    onnxruntime_node: onnxruntimeVersion(),
    execution_provider: executionProvider,
    read_bandwidth_bytes_per_s: null,
    read_bandwidth_method: null,
    load_average_start: os.loadavg(),
    load_average_end: null,
    huge_pages: null,
  };
}

/** The report's `machine.huge_pages` entry for a server started with this status. */
export function hugePagesEntry(status: HugePageStatus): NonNullable<Report['machine']['huge_pages']> {
  return { transparent_hugepage: status.transparentHugePages, malloc_hugetlb: status.mallocHugetlb, active: status.active };
}
