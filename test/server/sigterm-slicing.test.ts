/**
 * SIGTERM while a slicing job runs ends the server with exit 0 and the "slicing job cancelled
 * by the shutdown" line, never a native abort (issue 15: `terminate called after throwing an
 * instance of 'Napi::Error'` when the process exited while a cancelled job's worker thread was
 * still inside onnxruntime). Real server processes on 127.0.0.1 (loadtests/shutdown-probe.ts),
 * each with an empty slice cache, signalled at spread-out progress points of the startup slice
 * and of an on-demand `POST /v1/slices` job. `npm run probe:shutdown -- --runs 50` runs 50.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { probePassed, probePlan, probeShutdown, type ProbeMode } from '../../loadtests/shutdown-probe.js';
import { REPO_ROOT } from '../models/helpers.js';

const POINTS: { mode: ProbeMode; target: number }[] = [
  { mode: 'startup', target: -1 },
  { mode: 'startup', target: 0.05 },
  { mode: 'startup', target: 0.5 },
  { mode: 'startup', target: 0.9 },
  { mode: 'on-demand', target: 0.2 },
  { mode: 'on-demand', target: 0.7 },
];

for (const point of POINTS) {
  const name = point.target < 0 ? 'before the dense model loaded' : `at ${point.target * 100}% of the job`;
  test(`SIGTERM during ${point.mode} slicing, ${name}: exit 0, the cancellation line, no native abort`, { timeout: 180_000 }, async () => {
    let r = await probeShutdown({ ...point, root: REPO_ROOT });
    // The job finished before the signal (a fast machine): that tested nothing, try again.
    for (let retry = 0; r.missed && retry < 3; retry++) r = await probeShutdown({ ...point, root: REPO_ROOT });
    assert.equal(r.missed, false, 'the job always finished before SIGTERM could be sent');
    if (point.target >= 0) assert.equal(r.job?.status, 'running');
    assert.ok(probePassed(r), `exit ${r.code ?? r.signal}, cancellation line ${r.cancelledLine}, native abort ${r.nativeAbort}\n${r.tail ?? ''}`);
  });
}

test('probePlan spreads points over both kinds of job', () => {
  const plan = probePlan(50);
  assert.equal(plan.length, 50);
  assert.equal(plan.filter((p) => p.mode === 'startup').length, 25);
  assert.deepEqual(plan[0], { mode: 'startup', target: -1 });
  assert.deepEqual(plan.at(-1), { mode: 'on-demand', target: 0.95 });
  assert.equal(new Set(plan.map((p) => `${p.mode}${p.target}`)).size, 50);
});
