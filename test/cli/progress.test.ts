/**
 * The CLI progress bar (cli/progress.ts) on a fake TTY with mocked clocks: it shows the
 * percentage, the time elapsed, an ETA from the recent rate of progress (`--` before there is
 * one) and the phase; it draws nothing where no one sees it.
 */
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { afterEach, mock, test } from 'node:test';
import { formatSeconds, progressBar } from '../../cli/progress.js';

/** A Writable that says it is a 200-column TTY and keeps what was drawn. */
class FakeTty extends Writable {
  readonly isTTY = true;
  readonly columns = 200;
  text = '';
  override _write(chunk: Buffer | string, _enc: BufferEncoding, done: () => void): void {
    this.text += String(chunk);
    done();
  }
  /** The bar lines drawn so far, without terminal escapes. */
  lines(): string[] {
    // eslint-disable-next-line no-control-regex
    const plain = this.text.replace(/\x1B\[[0-9;?]*[A-Za-z]|\x1B[78]/g, '\n');
    return plain.split('\n').map((l) => l.trimEnd()).filter((l) => l.length > 0);
  }
}

afterEach(() => mock.timers.reset());

test('the bar shows elapsed time and an ETA from the rate of progress', () => {
  mock.timers.enable({ apis: ['Date', 'setTimeout'], now: 0 });
  const tty = new FakeTty();
  const bar = progressBar('slicing', { stream: tty, enabled: true });
  mock.timers.tick(10_000);
  assert.match(tty.lines().at(-1)!, /^slicing \[░+\] 0% \| 10s elapsed \| ETA -- \|$/, 'no ETA before any progress');

  // 25% after 10 s: 750 of 1000 steps left at 25 steps/s -> 30 s.
  bar.update(0.25, 'layer 1/4 pca');
  mock.timers.tick(100);
  assert.match(tty.lines().at(-1)!, /^slicing \[█+░+\] 25% \| 10s elapsed \| ETA 30s \| layer 1\/4 pca$/);

  // 50% at 30.1 s: the rate over the buffered updates is 500 steps / 30.1 s -> ceil(30.1) = 31 s.
  mock.timers.tick(20_000);
  bar.update(0.5, 'layer 2/4 rotate');
  mock.timers.tick(100);
  assert.match(tty.lines().at(-1)!, /^slicing \[█+░+\] 50% \| 30s elapsed \| ETA 31s \| layer 2\/4 rotate$/);

  // Over a minute: minutes and seconds.
  mock.timers.tick(60_000);
  bar.update(0.75, 'layer 3/4');
  mock.timers.tick(100);
  assert.match(tty.lines().at(-1)!, /^slicing \[█+░+\] 75% \| 1m30s elapsed \| ETA 31s \| layer 3\/4$/);
  bar.stop();
});

test('nothing is drawn on a stream that is not a TTY, or when disabled', () => {
  const pipe = new FakeTty();
  Object.defineProperty(pipe, 'isTTY', { value: false });
  const a = progressBar('x', { stream: pipe });
  a.update(0.5, 'p');
  a.stop();
  const tty = new FakeTty();
  const b = progressBar('x', { stream: tty, enabled: false });
  b.update(0.5, 'p');
  b.stop();
  assert.equal(pipe.text + tty.text, '');
});

test('formatSeconds: seconds, minutes, hours; -- for no estimate', () => {
  assert.equal(formatSeconds(0), '0s');
  assert.equal(formatSeconds(7.4), '7s');
  assert.equal(formatSeconds(59.4), '59s');
  assert.equal(formatSeconds(185), '3m05s');
  assert.equal(formatSeconds(3600 + 125), '1h02m');
  assert.equal(formatSeconds('INF'), '--');
  assert.equal(formatSeconds('NULL'), '--');
  assert.equal(formatSeconds(Number.NaN), '--');
  assert.equal(formatSeconds(-1), '--');
});
