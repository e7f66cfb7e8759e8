/**
 * The slicing job manager's memory bound: finished jobs beyond MAX_FINISHED_JOBS are forgotten
 * (oldest first), so retried failing requests cannot grow the server without bound; queued and
 * running jobs are never dropped.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import pino from 'pino';
import type { ServerMetrics } from '../../server/metrics.js';
import { ModelRegistry } from '../../server/models.js';
import { MAX_FINISHED_JOBS, SliceJobManager } from '../../server/slices.js';

const metrics = { sliceStarted() {}, sliceProgressed() {}, sliceEnded() {}, addModel() {} } as unknown as ServerMetrics;

test(`finished slicing jobs beyond ${MAX_FINISHED_JOBS} are forgotten, oldest first`, async () => {
  let started = 0;
  const jobs = new SliceJobManager({
    models: new ModelRegistry(),
    metrics,
    logger: pino({ level: 'silent' }),
    startWorker: async () => {
      started++;
      throw new Error('no worker in this test');
    },
    calibrationFile: '/nonexistent',
  });
  const made = Array.from({ length: MAX_FINISHED_JOBS + 40 }, (_, i) => jobs.enqueue({ id: 'dense', path: '/nonexistent' }, 0.1 + i / 1000));
  await jobs.idle();
  assert.equal(started, made.length, 'every job ran');
  assert.ok(made.every((j) => j.status === 'failed' && j.error?.message === 'no worker in this test'));
  const kept = jobs.list();
  assert.equal(kept.length, MAX_FINISHED_JOBS);
  assert.deepEqual(kept.map((j) => j.id), made.slice(40).map((j) => j.id), 'the newest are kept');
  assert.throws(() => jobs.get(made[0].id), /Slicing job '.*' not found|not found/i);
  assert.equal(jobs.get(made.at(-1)!.id).status, 'failed');
});
