/**
 * A deterministic serving-like scenario for two DecoderSessions over the same model: sequences
 * prefill, decode greedily, join (multi-token step), leave, change order, and one cache is
 * cleared and restarted with a single token; one step gives every sequence two tokens. Used to compare a device-KV session with the host
 * path (test/runtime/device-kv.test.ts on cpu, webgpu-kv.test.ts on webgpu).
 */
import { DecoderSession, type SequenceCache } from '../../runtime/decoder-session.js';
import { rng } from '../helpers/tiny-model.js';

export interface ScenarioResult {
  /** Largest |logit difference| over every sequence of every step. */
  maxDiff: number;
  /** Steps run, and the sequence-steps whose greedy token differed between the sessions. */
  steps: number;
  argmaxMismatches: number;
  /** Per-step wall time of each session's `step` (ms), for information only. */
  msTested: number[];
  msReference: number[];
}

function argmax(a: Float32Array): number {
  let best = 0;
  for (let i = 1; i < a.length; i++) if (a[i] > a[best]) best = i;
  return best;
}

/**
 * Runs `steps` steps on both sessions with identical inputs; the next token of each sequence
 * is the reference's greedy choice. Mostly decode steps over a stable batch (so a device-held
 * past is reused), with a membership or order change about every fifth step.
 */
export async function runJoinLeaveScenario(tested: DecoderSession, reference: DecoderSession, opts: { steps: number; seed: number; vocab: number }): Promise<ScenarioResult> {
  const r = rng(opts.seed);
  const tok = () => 1 + Math.floor(r() * (opts.vocab - 1));
  const n = 5;
  const caches: { t: SequenceCache; ref: SequenceCache; next: number[] }[] = Array.from({ length: n }, (_, i) => ({
    t: tested.newCache(),
    ref: reference.newCache(),
    next: Array.from({ length: 2 + i }, tok), // prompt
  }));
  let active = [0, 1, 2];
  const result: ScenarioResult = { maxDiff: 0, steps: 0, argmaxMismatches: 0, msTested: [], msReference: [] };
  let cleared = false;
  for (let step = 0; step < opts.steps; step++) {
    const event = step > 0 && step % 5 === 0 ? Math.floor(r() * 3) : -1;
    if (event === 0 && active.length < n) {
      // a new sequence joins with its prompt (a multi-token step for the batch)
      active.push([0, 1, 2, 3, 4].find((i) => !active.includes(i))!);
    } else if (event === 1 && active.length > 1) {
      active.splice(Math.floor(r() * active.length), 1); // one leaves
    } else if (event === 2) {
      active = active.slice().reverse(); // same sequences, another input order
    }
    if (!cleared && step === Math.floor(opts.steps / 2) + 2) {
      // a finished sequence's slot reused: its cache restarts with ONE token, same batch shape
      const i = active[0];
      caches[i].t.clear();
      caches[i].ref.clear();
      caches[i].next = [tok()];
      cleared = true;
    }
    const batch = active.map((i) => caches[i]);
    // a multi-token step over an unchanged batch (e.g. a client appends text to every sequence)
    if (step === 12) for (const c of batch) c.next = [...c.next, tok()];
    let t0 = performance.now();
    const got = await tested.step(batch.map((c) => ({ cache: c.t, tokens: c.next })));
    result.msTested.push(performance.now() - t0);
    t0 = performance.now();
    const want = await reference.step(batch.map((c) => ({ cache: c.ref, tokens: c.next })));
    result.msReference.push(performance.now() - t0);
    batch.forEach((c, k) => {
      for (let v = 0; v < want[k].length; v++) result.maxDiff = Math.max(result.maxDiff, Math.abs(got[k][v] - want[k][v]));
      const greedy = argmax(want[k]);
      if (argmax(got[k]) !== greedy) result.argmaxMismatches++;
      c.next = [greedy];
    });
    result.steps++;
  }
  return result;
}
