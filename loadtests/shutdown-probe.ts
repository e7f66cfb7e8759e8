/**
 * SIGTERM while a slicing job runs (issue 15): starts `sliceserve serve` as a child process on
 * 127.0.0.1 with an empty slice cache, waits until its slicing job (the startup slice, or one
 * queued with `POST /v1/slices`) has reached a given progress, sends SIGTERM, and reports how
 * the process ended: the exit code, whether the log has the "slicing job cancelled by the
 * shutdown" line, and whether it aborted natively (`terminate called ...`, SIGABRT).
 *
 * `npm run probe:shutdown -- --runs 50` repeats it over spread-out progress points of both
 * kinds of job and prints a summary; test/server/sigterm-slicing.test.ts runs a few points.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** Which slicing job is interrupted. */
export type ProbeMode = 'startup' | 'on-demand';

/** One probe's outcome. */
export interface ProbeResult {
  mode: ProbeMode;
  /** Progress (0..1) the job had to reach before SIGTERM; -1 = as soon as the server listens (before the dense model loaded). */
  target: number;
  /** The job as seen just before SIGTERM (null when sent before it existed). */
  job: { status: string; progress: number; phase: string | null } | null;
  /** Milliseconds from spawn to SIGTERM, and from SIGTERM to exit. */
  killAfterMs: number;
  exitMs: number;
  code: number | null;
  signal: NodeJS.Signals | null;
  cancelledLine: boolean;
  /** The log has onnxruntime's / node-addon-api's abort message. */
  nativeAbort: boolean;
  /** The job had finished before SIGTERM could be sent: the probe did not test a running job. */
  missed: boolean;
  /** The server's last log lines, when the probe failed. */
  tail?: string;
}

/** Options of {@link probeShutdown}. */
export interface ProbeOptions {
  mode: ProbeMode;
  target: number;
  /** Repository root (bin/sliceserve.js). */
  root: string;
  /** Sparsity of the on-demand job (default 0.3; the startup slice is the server's default 0.25). */
  sparsity?: number;
  /** Give up after this many seconds (default 120). */
  timeoutS?: number;
}

const CANCELLED = 'slicing job cancelled by the shutdown';
const ABORT = /terminate called|Napi::Error|Aborted|core dumped/;

async function getJson(url: string): Promise<{ status: number; body: unknown } | null> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
    return { status: res.status, body: await res.json() };
  } catch {
    return null;
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Runs one probe. The server binds 127.0.0.1 on a free port and uses a fresh temporary cache
 * (removed afterwards), so that every job really slices.
 * @throws Error when the server does not come up or the job does not appear within the timeout
 */
export async function probeShutdown(opts: ProbeOptions): Promise<ProbeResult> {
  const cacheDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sliceserve-probe-'));
  const args = [path.join(opts.root, 'bin', 'sliceserve.js'), 'serve', '--host', '127.0.0.1', '--port', '0', '--cache-dir', cacheDir, '--shutdown-timeout', '5'];
  if (opts.mode === 'on-demand') args.push('--dense-only');
  const started = performance.now();
  const child = spawn(process.execPath, args, { cwd: opts.root, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LOG_LEVEL: 'info' } });
  let log = '';
  let url: string | null = null;
  const onData = (chunk: Buffer) => {
    log += chunk.toString('utf8');
    if (!url) {
      const m = /"url":"(http:\/\/127\.0\.0\.1:\d+)"/.exec(log);
      if (m) url = m[1];
    }
  };
  child.stdout.on('data', onData);
  child.stderr.on('data', onData);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  let done = false;
  void exited.then(() => (done = true));
  const deadline = Date.now() + (opts.timeoutS ?? 120) * 1000;
  const fail = (why: string): never => {
    child.kill('SIGKILL');
    throw new Error(`${why}; server log:\n${log.trimEnd().split('\n').slice(-15).join('\n')}`);
  };
  try {
    while (!url) {
      if (done) fail('the server exited before listening');
      if (Date.now() > deadline) fail('the server did not listen in time');
      await sleep(5);
    }
    let job: ProbeResult['job'] = null;
    let missed = false;
    if (opts.target >= 0) {
      let jobId: string | null = null;
      if (opts.mode === 'on-demand') {
        while ((await getJson(`${url}/health/ready`))?.status !== 200) {
          if (done) fail('the server exited before it was ready');
          if (Date.now() > deadline) fail('the server was not ready in time');
          await sleep(20);
        }
        const res = await fetch(`${url}/v1/slices`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'stories260K', sparsity: opts.sparsity ?? 0.3 }) });
        if (res.status !== 202) fail(`POST /v1/slices answered ${res.status}`);
        jobId = ((await res.json()) as { id: string }).id;
      }
      for (;;) {
        if (done) fail('the server exited before SIGTERM');
        if (Date.now() > deadline) fail('the slicing job did not reach the target progress in time');
        const r = await getJson(jobId ? `${url}/v1/slices/${jobId}` : `${url}/v1/slices`);
        const seen = r?.status === 200 ? (jobId ? (r.body as ProbeResult['job']) : ((r.body as { data: ProbeResult['job'][] }).data[0] ?? null)) : null;
        if (seen) {
          job = { status: seen.status, progress: seen.progress, phase: seen.phase };
          if (seen.status === 'succeeded' || seen.status === 'failed') {
            missed = true;
            break;
          }
          if (seen.progress >= opts.target) break;
        }
        await sleep(5);
      }
    }
    const killAfterMs = performance.now() - started;
    child.kill('SIGTERM');
    const killedAt = performance.now();
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    const { code, signal } = await exited;
    clearTimeout(timer);
    const result: ProbeResult = {
      mode: opts.mode,
      target: opts.target,
      job,
      killAfterMs: Math.round(killAfterMs),
      exitMs: Math.round(performance.now() - killedAt),
      code,
      signal,
      cancelledLine: log.includes(CANCELLED),
      nativeAbort: ABORT.test(log) || signal === 'SIGABRT',
      missed,
    };
    if (!probePassed(result)) result.tail = log.trimEnd().split('\n').slice(-12).join('\n');
    return result;
  } finally {
    if (!done) child.kill('SIGKILL');
    fs.rmSync(cacheDir, { recursive: true, force: true });
  }
}

/** Exit 0, the cancellation line, no native abort (a missed probe is neither passed nor failed: rerun it). */
export function probePassed(r: ProbeResult): boolean {
  return r.code === 0 && r.signal === null && r.cancelledLine && !r.nativeAbort;
}

/**
 * `runs` probe points spread over both modes: startup ones at targets -1 (before the dense model
 * loaded) and evenly over [0, 0.95], on-demand ones evenly over [0, 0.95].
 */
export function probePlan(runs: number): { mode: ProbeMode; target: number }[] {
  const startup = Math.ceil(runs / 2);
  const onDemand = runs - startup;
  const spread = (n: number) => Array.from({ length: n }, (_, i) => (n === 1 ? 0 : Math.round((0.95 * i * 100) / (n - 1)) / 100));
  return [
    ...[-1, ...spread(Math.max(0, startup - 1))].slice(0, startup).map((target) => ({ mode: 'startup' as const, target })),
    ...spread(onDemand).map((target) => ({ mode: 'on-demand' as const, target })),
  ];
}

async function main(argv: string[]): Promise<number> {
  const at = argv.indexOf('--runs');
  const runs = at >= 0 ? Number(argv[at + 1]) : 50;
  if (!Number.isInteger(runs) || runs < 1 || runs > 1000) {
    console.error('probe:shutdown: --runs must be an integer 1..1000');
    return 2;
  }
  const root = path.resolve(__dirname, '..', '..');
  const results: ProbeResult[] = [];
  const t0 = performance.now();
  for (const point of probePlan(runs)) {
    // A job that finished before SIGTERM tested nothing: retry that point (three times at most).
    let r = await probeShutdown({ ...point, root });
    for (let retry = 0; r.missed && retry < 3; retry++) r = await probeShutdown({ ...point, root });
    results.push(r);
    const job = r.job ? `${r.job.status} ${r.job.phase ?? '-'} ${r.job.progress.toFixed(2)}` : 'not started';
    console.log(`${probePassed(r) ? 'ok  ' : 'FAIL'} ${r.mode.padEnd(9)} target ${r.target.toFixed(2).padStart(5)} job ${job.padEnd(32)} SIGTERM at ${r.killAfterMs} ms, exit ${r.code ?? r.signal} after ${r.exitMs} ms${r.missed ? ' (missed)' : ''}`);
    if (r.tail) console.log(r.tail.replace(/^/gm, '     | '));
  }
  const passed = results.filter(probePassed).length;
  const summary = {
    runs: results.length,
    passed,
    native_aborts: results.filter((r) => r.nativeAbort).length,
    missed: results.filter((r) => r.missed).length,
    max_exit_ms: Math.max(...results.map((r) => r.exitMs)),
    seconds: Math.round((performance.now() - t0) / 100) / 10,
  };
  console.log(`${passed}/${results.length} exited 0 with the cancellation line; ${JSON.stringify(summary)}`);
  return passed === results.length ? 0 : 1;
}

if (require.main === module) {
  void main(process.argv.slice(2)).then((code) => process.exit(code));
}
