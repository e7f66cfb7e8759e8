/** A progress bar on a TTY (cli-progress), silent otherwise (CI, pipes). */
import cliProgress from 'cli-progress';

export interface Progress {
  /** fraction in [0, 1] */
  update(fraction: number, phase: string): void;
  stop(): void;
}

/** A progress bar on stderr when it is a TTY; a no-op otherwise. */
export function progressBar(label: string): Progress {
  if (!process.stderr.isTTY || process.env.CI) return { update: () => undefined, stop: () => undefined };
  const bar = new cliProgress.SingleBar(
    { format: `${label} [{bar}] {percentage}% {phase}`, stream: process.stderr, hideCursor: true, clearOnComplete: true },
    cliProgress.Presets.shades_classic,
  );
  bar.start(1000, 0, { phase: '' });
  return {
    update: (fraction, phase) => bar.update(Math.round(fraction * 1000), { phase }),
    stop: () => bar.stop(),
  };
}
