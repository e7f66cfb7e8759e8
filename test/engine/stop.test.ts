import assert from 'node:assert/strict';
import { test } from 'node:test';
import { StopStringMatcher } from '../../engine/stop.js';

/** Feeds deltas; returns the released pieces and whether/where it stopped. */
function run(stops: string[], deltas: string[]): { released: string[]; stoppedAt: number } {
  const m = new StopStringMatcher(stops);
  const released: string[] = [];
  for (let i = 0; i < deltas.length; i++) {
    const r = m.push(deltas[i]);
    released.push(r.text);
    if (r.stopped) return { released, stoppedAt: i };
  }
  released.push(m.flush());
  return { released, stoppedAt: -1 };
}

test('holds back a possible stop-string prefix and releases it when it diverges', () => {
  const { released, stoppedAt } = run(['END'], ['the E', 'N', 'ding']);
  assert.equal(stoppedAt, -1);
  assert.deepEqual(released, ['the ', '', 'ENding', '']);
});

test('a stop string split over deltas ends the text right before it', () => {
  const { released, stoppedAt } = run(['END'], ['abc E', 'N', 'D tail']);
  assert.equal(stoppedAt, 2);
  assert.equal(released.join(''), 'abc ');
  assert.deepEqual(released, ['abc ', '', '']);
});

test('the earliest of several stop strings wins', () => {
  const { released, stoppedAt } = run(['world', 'lo'], ['hello world']);
  assert.equal(stoppedAt, 0);
  assert.equal(released.join(''), 'hel');
});

test('flush releases held text at the end; no stops passes text through', () => {
  assert.deepEqual(run(['\n\n'], ['a\n']).released, ['a', '\n']);
  assert.deepEqual(run([], ['x', 'y']).released, ['x', 'y', '']);
  const m = new StopStringMatcher(['STOP']);
  assert.deepEqual(m.push('ST'), { text: '', stopped: false });
  assert.deepEqual(m.push('OP', false), { text: 'STOP', stopped: false }, 'match=false releases everything');
});
