/**
 * Progress on stderr while a benchmark runs: a cli-progress bar on a terminal, one line per
 * finished block otherwise (CI logs, pipes).
 */
import { MultiBar, Presets, type SingleBar } from 'cli-progress';
import type { RunListener } from './runner.js';
import type { Block } from './schedule.js';
import { summarize } from './stats.js';

/** A {@link RunListener} that reports progress, plus `log` for other messages and `stop`. */
export interface Progress extends RunListener {
  log(message: string): void;
  stop(): void;
}

function blockLine(block: Block, index: number, total: number, records: { ok: boolean; output_tokens: number; ttft_s: number | null }[], wall_s: number): string {
  const ok = records.filter((r) => r.ok);
  const tokens = ok.reduce((s, r) => s + r.output_tokens, 0);
  const ttft = summarize(ok.map((r) => r.ttft_s).filter((v): v is number => v !== null));
  return (
    `[bench] block ${index + 1}/${total}: c=${block.concurrency} round ${block.round + 1} ${block.model}: ` +
    `${records.length} requests, ${records.length - ok.length} errors, ${(tokens / Math.max(wall_s, 1e-9)).toFixed(1)} output tok/s, ` +
    `TTFT p50 ${ttft ? (ttft.p50 * 1000).toFixed(0) : '-'} ms, ${wall_s.toFixed(1)} s`
  );
}

/**
 * Progress for a run of `totalRequests` requests (null when the run is timed, not counted).
 *
 * @param tty whether stderr is a terminal (default `process.stderr.isTTY`).
 */
export function createProgress(totalRequests: number | null, tty = Boolean(process.stderr.isTTY)): Progress {
  const write = (m: string): void => void process.stderr.write(m + '\n');
  if (!tty) {
    return {
      log: write,
      stop: () => undefined,
      onBlockDone: (r, i, n) => write(blockLine(r.block, i, n, r.records, r.wall_s)),
    };
  }
  const multi = new MultiBar(
    {
      stream: process.stderr,
      format: ' {bar} {value}/{total} | block {block}/{blocks} | c={concurrency} {model} | errors {errors} | ETA {eta_formatted}',
      hideCursor: true,
      clearOnComplete: false,
      etaBuffer: 50,
    },
    Presets.shades_classic,
  );
  let bar: SingleBar | null = null;
  let errors = 0;
  let done = 0;
  return {
    log: (m) => {
      if (!bar) return write(m);
      multi.log(m + '\n');
      multi.update();
    },
    stop: () => {
      if (bar) multi.stop(); // stopping a MultiBar that never drew prints an empty line
      bar = null;
    },
    onBlockStart: (block, i, n) => {
      const payload = { block: i + 1, blocks: n, concurrency: block.concurrency, model: block.model, errors };
      if (!bar) bar = multi.create(totalRequests ?? n, totalRequests === null ? i : done, payload);
      else bar.update(totalRequests === null ? i : done, payload);
    },
    onRequestDone: (rec) => {
      done++;
      if (!rec.ok) errors++;
      if (totalRequests !== null) bar?.update(done, { errors });
    },
    onBlockDone: (r, i, n) => {
      if (totalRequests === null) bar?.update(i + 1, { errors });
      multi.log(blockLine(r.block, i, n, r.records, r.wall_s) + '\n');
      multi.update(); // flush the log line now (the last one would otherwise be lost on stop)
    },
  };
}
