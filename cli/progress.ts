/**
 * A progress bar on a TTY (cli-progress), silent otherwise (CI, pipes): the percentage done, the
 * time elapsed, an ETA and the current phase, e.g.
 * `slicing [████░░░░] 42% | 12s elapsed | ETA 17s | layer 3/8 pca`.
 * The ETA is cli-progress' estimate from the rate of the last updates (its `etaBuffer`), shown
 * as `--` until there is a rate (nothing done yet, or no progress over that window).
 */
import cliProgress from 'cli-progress';

export interface Progress {
  /** fraction in [0, 1]; phase is shown after the timings. */
  update(fraction: number, phase: string): void;
  stop(): void;
}

/** Where and whether {@link progressBar} draws (tests pass a stream). */
export interface ProgressBarOptions {
  /** Where to draw (default process.stderr). cli-progress draws only on a stream with `isTTY` true. */
  stream?: NodeJS.WritableStream & { isTTY?: boolean; columns?: number };
  /** Draw at all (default: when the stream is a TTY and the env var CI is unset). */
  enabled?: boolean;
}

/** The bar's layout (cli-progress placeholders; {@link formatSeconds} formats both times). */
export const PROGRESS_FORMAT = '{label} [{bar}] {percentage}% | {duration_formatted} elapsed | ETA {eta_formatted} | {phase}';

/**
 * Seconds as the bar shows them: `7s`, `42s`, `3m05s`, `1h02m`; `--` for what is not a finite,
 * non-negative number (cli-progress' ETA is the string `NULL` or `INF` while it has no rate).
 */
export function formatSeconds(t: unknown): string {
  const s = typeof t === 'number' ? t : Number(t);
  if (!Number.isFinite(s) || s < 0) return '--';
  const whole = Math.round(s);
  if (whole < 60) return `${whole}s`;
  if (whole < 3600) return `${Math.floor(whole / 60)}m${String(whole % 60).padStart(2, '0')}s`;
  return `${Math.floor(whole / 3600)}h${String(Math.floor((whole % 3600) / 60)).padStart(2, '0')}m`;
}

/**
 * A progress bar labelled `label`, or a no-op where it would not be seen (see
 * {@link ProgressBarOptions.enabled}).
 */
export function progressBar(label: string, options: ProgressBarOptions = {}): Progress {
  const stream = options.stream ?? process.stderr;
  const enabled = options.enabled ?? (stream.isTTY === true && !process.env.CI);
  if (!enabled) return { update: () => undefined, stop: () => undefined };
  const bar = new cliProgress.SingleBar(
    {
      // A function format: the library's formatter, with no ETA before the first progress
      // (its estimator starts at "0").
      format: (opts, params, payload) =>
        cliProgress.Format.Formatter({ ...opts, format: PROGRESS_FORMAT }, params.value > 0 ? params : { ...params, eta: Number.NaN }, payload),
      formatTime: (t) => formatSeconds(t),
      stream: stream as NodeJS.WritableStream,
      hideCursor: true,
      clearOnComplete: true,
      etaBuffer: 20,
    },
    cliProgress.Presets.shades_classic,
  );
  bar.start(1000, 0, { label, phase: '' });
  return {
    update: (fraction, phase) => bar.update(Math.round(Math.min(1, Math.max(0, fraction)) * 1000), { phase }),
    stop: () => bar.stop(),
  };
}
