/**
 * The WebSocket message drain: arrival order across sources, a bounded slice of each event-loop
 * turn, pause/resume of a source by its unhandled count, dropping a closed source, and a throwing
 * handler that does not stop the queue.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type DrainSource, MessageDrain } from '../../server/message-drain.js';

const turn = () => new Promise<void>((r) => setImmediate(r));

/** Waits until the drain has handled everything (or fails after `turns` turns). */
async function settle(drain: MessageDrain, turns = 10_000): Promise<void> {
  for (let i = 0; i < turns && drain.length > 0; i++) await turn();
  assert.equal(drain.length, 0, 'the drain did not empty');
}

function recordingSource(log: string[], name: string): DrainSource {
  return { pause: () => log.push(`pause ${name}`), resume: () => log.push(`resume ${name}`) };
}

function busyWait(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end);
}

test('handlers run later, never inside push, in push order across sources', async () => {
  const drain = new MessageDrain();
  const events: string[] = [];
  const a = recordingSource(events, 'a');
  const b = recordingSource(events, 'b');
  drain.push(a, () => events.push('a1'));
  drain.push(b, () => events.push('b1'));
  drain.push(a, () => events.push('a2'));
  assert.equal(events.length, 0, 'push ran a handler synchronously');
  assert.equal(drain.length, 3);
  await settle(drain);
  assert.deepEqual(events, ['a1', 'b1', 'a2']);
});

test('a turn stops once its time budget is spent, and the rest runs in later turns', async () => {
  const drain = new MessageDrain({ budgetMs: 5, pauseAt: 1000, resumeAt: 10 });
  const source = recordingSource([], 's');
  const turnOf: number[] = [];
  let currentTurn = 0;
  for (let i = 0; i < 10; i++) {
    drain.push(source, () => {
      turnOf.push(currentTurn);
      busyWait(2);
    });
  }
  while (drain.length > 0) {
    await turn();
    currentTurn++;
  }
  assert.equal(turnOf.length, 10);
  const perTurn = new Map<number, number>();
  for (const t of turnOf) perTurn.set(t, (perTurn.get(t) ?? 0) + 1);
  // 2 ms handlers against a 5 ms budget: at most 3 per turn, so at least 4 turns.
  assert.ok(perTurn.size >= 4, `10 handlers ran in ${perTurn.size} turns: ${JSON.stringify([...perTurn])}`);
  for (const [t, n] of perTurn) assert.ok(n <= 3, `turn ${t} ran ${n} handlers of 2 ms with a 5 ms budget`);
});

test('a source is paused at pauseAt unhandled messages and resumed at resumeAt', async () => {
  const drain = new MessageDrain({ budgetMs: 1000, pauseAt: 4, resumeAt: 1 });
  const events: string[] = [];
  const s = recordingSource(events, 's');
  for (let i = 0; i < 3; i++) drain.push(s, () => events.push(`m${i}`));
  assert.equal(events.length, 0);
  drain.push(s, () => events.push('m3'));
  assert.deepEqual(events, ['pause s'], 'the 4th unhandled message pauses');
  drain.push(s, () => events.push('m4'));
  assert.deepEqual(events, ['pause s'], 'a paused source is not paused twice');
  await settle(drain);
  // 5 unhandled; handling m0..m3 brings the count to 4, 3, 2, 1: resumed when it reaches 1.
  assert.deepEqual(events, ['pause s', 'm0', 'm1', 'm2', 'resume s', 'm3', 'm4']);
});

test('dropping a source forgets its queued messages and keeps the others', async () => {
  const drain = new MessageDrain({ budgetMs: 1000, pauseAt: 2, resumeAt: 0 });
  const events: string[] = [];
  const a = recordingSource(events, 'a');
  const b = recordingSource(events, 'b');
  drain.push(a, () => events.push('a1'));
  drain.push(b, () => events.push('b1'));
  drain.push(a, () => events.push('a2')); // pauses a
  drain.drop(a);
  assert.equal(drain.length, 1);
  await settle(drain);
  assert.deepEqual(events, ['pause a', 'b1'], 'a dropped source is neither handled nor resumed');
});

test('dropping the only source before its turn leaves an empty, reusable drain', async () => {
  const drain = new MessageDrain();
  const events: string[] = [];
  const a = recordingSource(events, 'a');
  drain.push(a, () => events.push('a1'));
  drain.drop(a);
  await turn();
  await turn();
  assert.equal(drain.length, 0);
  drain.push(a, () => events.push('a2'));
  await settle(drain);
  assert.deepEqual(events, ['a2']);
});

test('a handler that throws is reported and the queue goes on', async () => {
  const errors: unknown[] = [];
  const drain = new MessageDrain(undefined, (err) => errors.push(err));
  const events: string[] = [];
  const s = recordingSource(events, 's');
  drain.push(s, () => {
    throw new Error('boom');
  });
  drain.push(s, () => events.push('after'));
  await settle(drain);
  assert.deepEqual(events, ['after']);
  assert.equal(errors.length, 1);
  assert.equal((errors[0] as Error).message, 'boom');
});

test('invalid settings are refused', () => {
  assert.throws(() => new MessageDrain({ budgetMs: 0, pauseAt: 4, resumeAt: 1 }), /budgetMs > 0/);
  assert.throws(() => new MessageDrain({ budgetMs: 1, pauseAt: 4, resumeAt: 4 }), /pauseAt > resumeAt/);
  assert.throws(() => new MessageDrain({ budgetMs: 1, pauseAt: 4, resumeAt: -1 }), /resumeAt >= 0/);
});
