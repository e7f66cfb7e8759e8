/**
 * Chunked prefill (engine/scheduler.ts `maxPrefillTokens`) on the real stories260K session: a
 * prompt fed in chunks, alongside other requests, gives the tokens and logprobs of the same
 * prompt fed whole.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { EngineRequest, SequenceOutput } from '../../engine/protocol.js';
import { Sampler } from '../../engine/sampler.js';
import { Scheduler, type StepSession } from '../../engine/scheduler.js';
import { loadModel } from '../../models/load.js';
import type { LoadedModel } from '../../models/types.js';
import { DecoderSession, type SequenceCache } from '../../runtime/decoder-session.js';

let model: LoadedModel;
let session: DecoderSession;
before(async () => {
  model = loadModel('models/stories260K');
  session = await DecoderSession.create(model, { threads: 1 });
});
after(async () => session.release());

const greedy = { temperature: 0, topP: 1, topK: 0, presencePenalty: 0, frequencyPenalty: 0 };
const STORY =
  'Once upon a time, there was a little boy named Tim. Tim had a big red ball. He liked to play with his ball in the park every day. One day, Tim saw a small dog near the trees. The dog was sad because it was lost.';

function request(id: string, text: string, fields: Partial<EngineRequest> = {}): EngineRequest {
  return { requestId: id, prompts: [{ text }], n: 1, maxTokens: 16, minTokens: 0, stop: [], stopTokenIds: [], ignoreEos: true, logprobs: null, echo: false, sampling: greedy, arrivalTime: 0, ...fields };
}

/**
 * Runs the requests (the long one arrives while the short ones decode); outputs by request id,
 * and the positions (rows x longest row, as the session pads them) of each prefill call.
 */
async function run(maxPrefillTokens?: number): Promise<{ outputs: Map<string, SequenceOutput[]>; positions: number[] }> {
  let last = 0;
  const padded = (inputs: { tokens: number[] }[]) => (last = inputs.length * Math.max(...inputs.map((i) => i.tokens.length)));
  const counting: StepSession<SequenceCache> = {
    maxContext: session.maxContext,
    vocabSize: session.vocabSize,
    newCache: () => session.newCache(),
    step: (inputs) => (padded(inputs), session.step(inputs)),
    stepGreedy: (inputs) => (padded(inputs), session.stepGreedy(inputs)),
  };
  const scheduler = new Scheduler<SequenceCache>(counting, model.tokenizer, (p) => new Sampler(p), { maxBatchSize: 4, maxPrefillTokens });
  const arrivals: EngineRequest[][] = [
    [request('short', 'Tom had a dog', { maxTokens: 40 }), request('scored', 'The sun was hot', { maxTokens: 30, logprobs: 2 })],
    [],
    [request('long', STORY, { maxTokens: 12 }), request('echo', 'Lily went to the park', { maxTokens: 4, echo: true, logprobs: 1 })],
  ];
  const outputs = new Map<string, SequenceOutput[]>();
  const positions: number[] = [];
  for (let k = 0; k < 500 && (scheduler.hasWork() || k < arrivals.length); k++) {
    for (const r of arrivals[k] ?? []) scheduler.add(r);
    const step = await scheduler.step();
    if (!step) continue;
    assert.deepEqual(step.failed, []);
    if (step.phase === 'prefill' && step.batchSize > 0) positions.push(last);
    for (const o of step.outputs) outputs.set(o.requestId, [...(outputs.get(o.requestId) ?? []), o]);
  }
  return { outputs, positions };
}

test('a prompt fed in chunks of 7 or 32 positions gives the tokens and logprobs of the whole prompt', async () => {
  assert.ok(model.tokenizer.encode(STORY).length > 50);
  const whole = await run();
  for (const budget of [7, 32]) {
    const chunked = await run(budget);
    assert.ok(chunked.positions.length > whole.positions.length, `budget ${budget}: prompts were split`);
    assert.ok(chunked.positions.every((p) => p <= budget), `budget ${budget}: ${chunked.positions.join(',')}`);
    for (const [id, outs] of whole.outputs) {
      const got = chunked.outputs.get(id)!;
      assert.equal(got.map((o) => o.text).join(''), outs.map((o) => o.text).join(''), `budget ${budget}, ${id}: text`);
      assert.deepEqual(got.map((o) => o.token?.tokenId), outs.map((o) => o.token?.tokenId), `budget ${budget}, ${id}: tokens`);
      const lp = (o: SequenceOutput[]) => o.flatMap((x) => [...(x.echo?.tokens ?? []).map((t) => t.logprob), x.token?.logprob ?? null]);
      lp(got).forEach((v, i) => {
        const want = lp(outs)[i];
        if (want === null) assert.equal(v, null);
        else assert.ok(Math.abs((v as number) - want) < 1e-4, `budget ${budget}, ${id}: logprob ${i} ${v} vs ${want}`);
      });
    }
  }
});
