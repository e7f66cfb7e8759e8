import assert from 'node:assert/strict';
import { test } from 'node:test';
import { EngineRequestError } from '../../engine/input.js';
import { logSumExp, topLogprobs } from '../../runtime/logprobs.js';
import type { EngineRequest, SequenceOutput } from '../../engine/protocol.js';
import { Scheduler } from '../../engine/scheduler.js';
import { Sampler } from '../../engine/sampler.js';
import { FakeCache, FakeGreedySession, FakeSession, FakeTokenizer, GreedySampler, hashNext, type NextToken } from './fakes.js';

const tok = new FakeTokenizer();
let nextId = 0;

function request(prompt: string | number[], fields: Partial<EngineRequest> = {}): EngineRequest {
  return {
    requestId: `r${nextId++}`,
    prompts: [typeof prompt === 'string' ? { text: prompt } : { tokens: prompt }],
    n: 1,
    maxTokens: 12,
    minTokens: 0,
    stop: [],
    stopTokenIds: [],
    ignoreEos: false,
    logprobs: null,
    echo: false,
    sampling: { temperature: 0, topP: 1, topK: 0, presencePenalty: 0, frequencyPenalty: 0 },
    arrivalTime: 0,
    ...fields,
  };
}

function setup(next: NextToken = hashNext(tok.vocabSize), maxBatchSize = 16, kvCacheTokens?: number, maxContext = 64) {
  const session = new FakeSession(tok.vocabSize, maxContext, next);
  const scheduler = new Scheduler<FakeCache>(session, tok, () => new GreedySampler(), { maxBatchSize, kvCacheTokens });
  return { session, scheduler };
}

/** Result of a finished choice. */
interface Choice {
  text: string;
  tokens: number[];
  finishReason?: string;
  outputs: SequenceOutput[];
}

/**
 * Steps until idle; `arrivals[k]` are added before step k. Returns choices by `${requestId}/${index}`.
 * `phases` receives the phase of every step that ran a forward pass (one per session call).
 */
async function drain(scheduler: Scheduler<FakeCache>, arrivals: EngineRequest[][] = [], phases: string[] = []): Promise<Map<string, Choice>> {
  const choices = new Map<string, Choice>();
  for (let k = 0; k < 1000; k++) {
    for (const r of arrivals[k] ?? []) scheduler.add(r);
    if (!scheduler.hasWork() && k >= arrivals.length) break;
    const res = await scheduler.step();
    if (!res) continue;
    if (res.batchSize > 0) phases.push(res.phase);
    assert.deepEqual(res.failed, []);
    for (const out of res.outputs) {
      const key = `${out.requestId}/${out.index}`;
      const c = choices.get(key) ?? { text: '', tokens: [], outputs: [] };
      c.text += (out.echo?.text ?? '') + out.text;
      if (out.token) c.tokens.push(out.token.tokenId);
      c.finishReason = out.finishReason;
      c.outputs.push(out);
      choices.set(key, c);
    }
  }
  return choices;
}

test('greedy outputs under continuous batching equal each request run alone', async () => {
  const prompts = ['Once upon a time', 'a girl', 'the end', 'Once', 'abcd was', 'upon a time, there'];
  const alone: Choice[] = [];
  for (const p of prompts) {
    const { scheduler } = setup();
    const r = request(p, { maxTokens: 9 + (p.length % 5) });
    alone.push((await drain(scheduler, [[r]])).get(`${r.requestId}/0`) as Choice);
  }
  const { session, scheduler } = setup(undefined, 4);
  const reqs = prompts.map((p) => request(p, { maxTokens: 9 + (p.length % 5) }));
  // Staggered arrivals: two at once, then one per step.
  const batched = await drain(scheduler, [[reqs[0], reqs[1]], [reqs[2]], [], [reqs[3], reqs[4]], [reqs[5]]]);
  reqs.forEach((r, i) => {
    const c = batched.get(`${r.requestId}/0`) as Choice;
    assert.deepEqual(c.tokens, alone[i].tokens, `tokens of prompt ${i}`);
    assert.equal(c.text, alone[i].text);
    assert.equal(c.finishReason, 'length');
    assert.equal(c.tokens.length, r.maxTokens);
  });
  assert.ok(session.calls.every((c) => c.sizes.length <= 4), 'batch never exceeds maxBatchSize');
  assert.equal(session.caches.length, prompts.length);
  assert.ok(session.caches.every((c) => c.released), 'every finished sequence released its KV cache');
  assert.ok(session.calls.some((c) => c.sizes.length > 1), 'sequences were batched');
  // Never two prefills in a row while sequences are decoding: a prefill call feeds whole prompts.
  const phases = session.calls.map((c) => (c.sizes.some((s) => s > 1) ? 'P' : 'D'));
  assert.ok(!phases.join('').includes('PP'), phases.join(''));
  assert.deepEqual(scheduler.stats().runningSequences, 0);
});

test('steps where every sequence is plain greedy fetch greedy tokens only; outputs equal the logits path', async () => {
  const greedy = { temperature: 0, topP: 1, topK: 0, presencePenalty: 0, frequencyPenalty: 0 };
  // Two plain greedy requests arrive first; later, one that needs logits joins (logprobs), then
  // one with min_tokens (EOS masked at first), one sampled at temperature 0.8, one with a penalty.
  const make = () => {
    nextId = 1000;
    return [
      [request('Once upon a time', { maxTokens: 10, sampling: greedy }), request('a girl', { maxTokens: 14, sampling: greedy })],
      [],
      [],
      [request('the end', { maxTokens: 3, logprobs: 2, sampling: greedy })],
      [],
      [],
      [],
      [],
      [request('Once', { maxTokens: 6, minTokens: 4, sampling: greedy })],
      [request('abcd', { maxTokens: 5, sampling: { ...greedy, temperature: 0.8, seed: 3 } })],
      [request('upon', { maxTokens: 5, sampling: { ...greedy, frequencyPenalty: 0.5 } })],
    ];
  };
  const run = async (session: FakeSession) => {
    const scheduler = new Scheduler<FakeCache>(session, tok, (p) => new Sampler(p), { maxBatchSize: 8 });
    return drain(scheduler, make());
  };
  const plain = await run(new FakeSession(tok.vocabSize, 64, hashNext(tok.vocabSize)));
  const fast = new FakeGreedySession(tok.vocabSize, 64, hashNext(tok.vocabSize));
  const viaGreedy = await run(fast);
  assert.deepEqual([...viaGreedy.keys()], [...plain.keys()]);
  for (const [key, c] of plain) {
    const g = viaGreedy.get(key) as Choice;
    assert.deepEqual(g.tokens, c.tokens, key);
    assert.equal(g.text, c.text, key);
    assert.equal(g.finishReason, c.finishReason, key);
    assert.deepEqual(g.outputs, c.outputs, `${key}: every output, logprobs and offsets included`);
  }
  // The first steps (two plain greedy requests) and the end (only greedy ones left) used
  // stepGreedy; the steps with the logprobs / min_tokens / sampled / penalised sequences did not.
  assert.deepEqual(fast.methods.slice(0, 3), ['stepGreedy', 'stepGreedy', 'stepGreedy']);
  assert.ok(fast.methods.includes('step'), fast.methods.join(','));
  assert.equal(fast.methods.at(-1), 'stepGreedy');
  assert.equal(fast.methods.length, fast.calls.length);
});

test('the stats reported with a step already exclude the sequences that finished in it', async () => {
  const { scheduler } = setup();
  scheduler.add(request('Once', { maxTokens: 2 }));
  const prefill = await scheduler.step();
  assert.equal(prefill?.stats.runningRequests, 1);
  assert.ok((prefill?.stats.kvUsedTokens ?? 0) > 0);
  const last = await scheduler.step();
  assert.equal(last?.outputs[0].finishReason, 'length');
  assert.equal(last?.stats.runningRequests, 0);
  assert.equal(last?.stats.kvUsedTokens, 0);
  assert.equal(last?.stats.kvReservedTokens, 0);
});

test('text is decode(prompt + tokens) minus decode(prompt); EOS ends with "stop"', async () => {
  const eosAfter = 5;
  const next: NextToken = (h) => (h.length >= 3 + eosAfter ? 2 : FakeTokenizer.piece(' time'));
  const { scheduler } = setup(next);
  const r = request('Once upon', { maxTokens: 20 }); // prompt = BOS + 2 tokens
  const c = (await drain(scheduler, [[r]])).get(`${r.requestId}/0`) as Choice;
  assert.equal(c.finishReason, 'stop');
  assert.equal(c.tokens.length, eosAfter + 1, 'the EOS token is counted');
  assert.equal(c.tokens.at(-1), 2);
  assert.equal(c.text, ' time'.repeat(eosAfter));

  const { scheduler: s2 } = setup(next);
  const r2 = request('Once upon', { maxTokens: 10, ignoreEos: true });
  const c2 = (await drain(s2, [[r2]])).get(`${r2.requestId}/0`) as Choice;
  assert.equal(c2.finishReason, 'length');
  assert.equal(c2.tokens.length, 10);
});

test('every end-of-sequence id ends a choice (a llama2.c model ends at BOS too); ignore_eos and min_tokens cover them all', async () => {
  const llama2cTok = new FakeTokenizer([2, 1]);
  const bosAfter = 4;
  const next: NextToken = (h) => (h.length >= 3 + bosAfter ? 1 : FakeTokenizer.piece(' time'));
  const run = async (fields: Partial<EngineRequest>, tokenizer = llama2cTok) => {
    const scheduler = new Scheduler<FakeCache>(new FakeSession(tokenizer.vocabSize, 64, next), tokenizer, () => new GreedySampler(), { maxBatchSize: 4 });
    const r = request('Once upon', { maxTokens: 10, ...fields });
    return (await drain(scheduler, [[r]])).get(`${r.requestId}/0`) as Choice;
  };
  const stopped = await run({});
  assert.deepEqual([stopped.finishReason, stopped.tokens.length, stopped.tokens.at(-1), stopped.text], ['stop', bosAfter + 1, 1, ' time'.repeat(bosAfter)]);
  const ignored = await run({ ignoreEos: true });
  assert.deepEqual([ignored.finishReason, ignored.tokens.length], ['length', 10]);
  // min_tokens masks BOS like EOS: the 5th token is not BOS, so the choice runs past it.
  const masked = await run({ minTokens: bosAfter + 2 });
  assert.notEqual(masked.tokens[bosAfter], 1);
  assert.ok(masked.tokens.length >= bosAfter + 2);
  // A tokenizer whose only end id is EOS (2) does not stop at BOS.
  const plain = await run({}, new FakeTokenizer());
  assert.deepEqual([plain.finishReason, plain.tokens.length], ['length', 10]);
});

test('text offsets count code points: an emoji moves later offsets by 1, as Python indexes the text', async () => {
  const { scheduler } = setup(() => FakeTokenizer.piece(' the'));
  const r = request('a🎉 the', { echo: true, logprobs: 0, maxTokens: 2 });
  const c = (await drain(scheduler, [[r]])).get(`${r.requestId}/0`) as Choice;
  const entries = [...(c.outputs[0].echo?.tokens ?? []), ...c.outputs.flatMap((o) => (o.token ? [o.token] : []))];
  const chars = [...c.text]; // code points
  assert.equal(c.text, 'a🎉 the the the');
  // Whole-character tokens sit at their offset (the emoji's 4 byte tokens show U+FFFD until it is complete).
  for (const e of entries.filter((x) => !x.token.includes('\uFFFD') && x.token !== '')) {
    assert.equal(chars.slice(e.textOffset, e.textOffset + [...e.token].length).join(''), e.token, JSON.stringify(e));
  }
  // ' the' after the emoji starts at code point 2 (a, 🎉), UTF-16 index 3.
  const the = entries.filter((e) => e.tokenId === FakeTokenizer.piece(' the')).map((e) => e.textOffset);
  assert.deepEqual(the, [2, 6, 10]);
});

test('stop strings, stop_token_ids and min_tokens', async () => {
  const script = [' there', ' was', ' STOP', ' the', ' end'].map(FakeTokenizer.piece);
  const next: NextToken = (h) => script[(h.length - 2) % script.length];
  const { scheduler } = setup(next);
  const a = request('Once', { stop: ['STOP', 'zzz'], maxTokens: 10 });
  const b = request('Once', { stopTokenIds: [FakeTokenizer.piece(' the')], maxTokens: 10 });
  const c = request('Once', { stop: ['was'], minTokens: 4, stopTokenIds: [FakeTokenizer.piece(' was')], maxTokens: 10 });
  const out = await drain(scheduler, [[a, b, c]]);
  const ca = out.get(`${a.requestId}/0`) as Choice;
  assert.equal(ca.text, ' there was ');
  assert.equal(ca.finishReason, 'stop');
  assert.equal(ca.tokens.length, 3);
  // Held-back text: the output of the ' STOP' step releases nothing past ' was '.
  const cb = out.get(`${b.requestId}/0`) as Choice;
  assert.equal(cb.text, ' there was STOP');
  assert.equal(cb.finishReason, 'stop');
  assert.equal(cb.tokens.length, 4);
  // min_tokens 4: ' was' (token 2) is masked as a stop token, so the masked logits pick the next best
  // token; the stop string "was" is not matched before 4 tokens.
  const cc = out.get(`${c.requestId}/0`) as Choice;
  assert.ok(cc.tokens.length >= 4);
  assert.notEqual(cc.tokens[1], FakeTokenizer.piece(' was'));
});

test('echo with logprobs scores the prompt; offsets point into the text', async () => {
  const { session, scheduler } = setup();
  const r = request('Once upon a time', { echo: true, logprobs: 2, maxTokens: 4 });
  const c = (await drain(scheduler, [[r]])).get(`${r.requestId}/0`) as Choice;
  const first = c.outputs[0];
  assert.ok(first.echo);
  assert.equal(first.echo.text, 'Once upon a time');
  const prompt = tok.encode('Once upon a time');
  const entries = first.echo.tokens ?? [];
  assert.deepEqual(entries.map((e) => e.tokenId), prompt);
  assert.equal(entries[0].logprob, null);
  for (let i = 1; i < prompt.length; i++) {
    const logits = session.logitsFor(prompt.slice(0, i));
    assert.ok(Math.abs((entries[i].logprob as number) - (logits[prompt[i]] - logSumExp(logits))) < 1e-9);
    // The 2 most likely tokens, plus the prompt token itself when it is not one of them.
    const top = entries[i].top ?? [];
    const best2 = topLogprobs(logits, 2).map((t) => t.token);
    assert.deepEqual(top.slice(0, 2).map((t) => t.tokenId), best2);
    assert.equal(top.length, best2.includes(prompt[i]) ? 2 : 3);
    assert.ok(top.some((t) => t.tokenId === prompt[i] && Math.abs(t.logprob - (entries[i].logprob as number)) < 1e-12));
  }
  const gen = c.outputs.flatMap((o) => (o.token ? [o.token] : []));
  assert.equal(gen.length, 4);
  for (const e of [...entries, ...gen]) assert.equal(c.text.slice(e.textOffset, e.textOffset + e.token.length), e.token);
  assert.equal(gen[0].textOffset, 'Once upon a time'.length);
  assert.ok(gen.every((g) => g.top?.length === 2 && (g.top[0].logprob >= g.top[1].logprob)));
  assert.equal(gen[0].top?.[0].tokenId, gen[0].tokenId, 'greedy token is the top alternative');

  // max_tokens 0 with echo and no logprobs: the prompt alone, no forward pass.
  const calls = session.calls.length;
  const r0 = request('Once upon', { echo: true, maxTokens: 0 });
  const c0 = (await drain(scheduler, [[r0]])).get(`${r0.requestId}/0`) as Choice;
  assert.equal(c0.text, 'Once upon');
  assert.equal(c0.finishReason, 'length');
  assert.equal(session.calls.length, calls);
});

test('n choices and several prompts get their own indices and identical greedy text', async () => {
  const { scheduler } = setup(undefined, 3);
  const r = request('x', { prompts: [{ text: 'Once' }, { tokens: [1, FakeTokenizer.piece(' a')] }], n: 2, maxTokens: 5 });
  const out = await drain(scheduler, [[r]]);
  assert.deepEqual([...out.keys()].sort(), [0, 1, 2, 3].map((i) => `${r.requestId}/${i}`));
  assert.deepEqual(out.get(`${r.requestId}/0`)?.tokens, out.get(`${r.requestId}/1`)?.tokens);
  assert.deepEqual(out.get(`${r.requestId}/2`)?.tokens, out.get(`${r.requestId}/3`)?.tokens);
  assert.notDeepEqual(out.get(`${r.requestId}/0`)?.tokens, out.get(`${r.requestId}/2`)?.tokens);
});

test('abort frees the slot of running and waiting requests', async () => {
  const { scheduler, session } = setup(undefined, 1);
  const a = request('Once', { maxTokens: 30 });
  const b = request('upon', { maxTokens: 30 });
  scheduler.add(a);
  scheduler.add(b);
  await scheduler.step();
  await scheduler.step();
  assert.equal(scheduler.stats().runningRequests, 1);
  assert.equal(scheduler.stats().waitingRequests, 1);
  assert.ok(scheduler.abort(b.requestId));
  assert.equal(scheduler.stats().waitingSequences, 0);
  assert.equal(session.caches.length, 1);
  assert.equal(session.caches[0].released, false, 'a running sequence keeps its KV cache');
  assert.ok(scheduler.abort(a.requestId));
  assert.equal(session.caches[0].released, true, 'the cancelled sequence released its KV cache');
  assert.deepEqual(
    { ...scheduler.stats(), kvCapacityTokens: 0 },
    { runningRequests: 0, waitingRequests: 0, runningSequences: 0, waitingSequences: 0, kvUsedTokens: 0, kvReservedTokens: 0, kvCapacityTokens: 0 },
  );
  assert.equal(scheduler.hasWork(), false);
  assert.equal(scheduler.abort(a.requestId), false);
});

test('the KV budget limits admission; requests that cannot fit are refused', async () => {
  const { session, scheduler } = setup(undefined, 8, 40);
  const reqs = [request('Once', { maxTokens: 16 }), request('upon', { maxTokens: 16 }), request('a', { maxTokens: 16 })];
  for (const r of reqs) scheduler.add(r); // each reserves 2 + 16 = 18 tokens: two fit in 40
  await scheduler.step();
  assert.equal(session.calls[0].sizes.length, 2);
  assert.equal(scheduler.stats().waitingRequests, 1);
  assert.equal(scheduler.stats().kvReservedTokens, 36);
  const out = await drain(scheduler);
  assert.equal(out.size, 3);
  assert.throws(() => scheduler.add(request('Once', { maxTokens: 39 })), (e: unknown) => e instanceof EngineRequestError && e.param === 'max_tokens');
});

test('admission reserves the KV cache for the prompt and up to 256 outputs in one call', async () => {
  const { session, scheduler } = setup(hashNext(tok.vocabSize), 4, undefined, 1024);
  const caches: FakeCache[] = [];
  const newCache = session.newCache.bind(session);
  session.newCache = () => {
    const c = newCache();
    caches.push(c);
    return c;
  };
  scheduler.add(request([1, 2, 3, 4, 5], { requestId: 'short', maxTokens: 10 }));
  scheduler.add(request([1, 2, 3, 4, 5], { requestId: 'long', maxTokens: 900 }));
  await scheduler.step();
  assert.deepEqual(caches.map((c) => c.reserved), [[15], [5 + 256]]);
});

test('input limits: context length, token ids, duplicate ids', () => {
  const { scheduler } = setup(undefined, 4, undefined, 16);
  const long = 'abcd'.repeat(20);
  assert.throws(
    () => scheduler.add(request(long)),
    (e: unknown) => e instanceof EngineRequestError && e.code === 'context_length_exceeded' && e.param === 'prompt' && e.status === 400,
  );
  assert.throws(() => scheduler.add(request('Once', { maxTokens: 15 })), (e: unknown) => e instanceof EngineRequestError && e.param === 'max_tokens');
  assert.throws(() => scheduler.add(request([1, 9999])), (e: unknown) => e instanceof EngineRequestError && e.param === 'prompt');
  assert.throws(() => scheduler.add(request([])), (e: unknown) => e instanceof EngineRequestError && e.param === 'prompt');
  assert.throws(() => scheduler.add(request('a', { stopTokenIds: [-1] })), (e: unknown) => e instanceof EngineRequestError && e.param === 'stop_token_ids');
  const ok = request('Once', { maxTokens: 14 });
  assert.deepEqual(scheduler.add(ok), [2]);
  assert.throws(() => scheduler.add(ok), /already in use/);
  // Within the context but over the KV budget: a 400 with its own code.
  const { scheduler: budget } = setup(undefined, 4, 10, 64);
  assert.throws(
    () => budget.add(request('Once', { maxTokens: 12 })),
    (e: unknown) => e instanceof EngineRequestError && e.param === 'max_tokens' && e.code === 'kv_cache_budget_exceeded' && /exceeds the KV cache budget of 10 tokens/.test(e.message),
  );
});

test('chunked prefill: any maxPrefillTokens gives the outputs of whole prompts, and no call computes more positions than the budget', async () => {
  const greedy = { temperature: 0, topP: 1, topK: 0, presencePenalty: 0, frequencyPenalty: 0 };
  // Prompts of 2 to 30 tokens, staggered; one scores its prompt (echo + logprobs), one samples.
  const make = () => {
    nextId = 2000;
    return [
      [request('Once upon a time, there was a girl. The end', { maxTokens: 8 }), request('a', { maxTokens: 5 })],
      [request('abcdabcdabcd was the end of the girl', { maxTokens: 6, logprobs: 1 })],
      [],
      [request('the end', { maxTokens: 4, echo: true, logprobs: 2 }), request('upon a time there was abcd', { maxTokens: 7, sampling: { ...greedy, temperature: 0.7, seed: 5 } })],
      [request([1, ...Array.from({ length: 29 }, (_, i) => 3 + ((i * 37) % 250))], { maxTokens: 3 })],
    ];
  };
  const run = async (maxPrefillTokens?: number) => {
    const session = new FakeGreedySession(tok.vocabSize, 64, hashNext(tok.vocabSize));
    const scheduler = new Scheduler<FakeCache>(session, tok, (p) => new Sampler(p), { maxBatchSize: 4, maxPrefillTokens });
    const phases: string[] = [];
    const choices = await drain(scheduler, make(), phases);
    assert.equal(phases.length, session.calls.length);
    // What each cache was fed, in an order that does not depend on admission order.
    const fed = session.caches.map((c) => c.tokens.join(',')).sort();
    return { choices, session, phases, fed };
  };
  const whole = await run();
  assert.ok(whole.session.calls.some((c) => Math.max(...c.sizes) >= 30), 'without a budget the 30-token prompt is fed in one call');
  for (const budget of [1, 3, 7, 16]) {
    const { choices, session, phases, fed } = await run(budget);
    assert.deepEqual([...choices.keys()].sort(), [...whole.choices.keys()].sort(), `budget ${budget}`);
    for (const [key, c] of whole.choices) assert.deepEqual(choices.get(key)!.outputs, c.outputs, `budget ${budget}, ${key}: every output, logprobs and offsets included`);
    session.calls.forEach((call, i) => {
      if (phases[i] === 'prefill') assert.ok(call.sizes.length * Math.max(...call.sizes) <= budget, `budget ${budget}: prefill call ${call.sizes.join(',')} computes more positions`);
      else assert.ok(call.sizes.every((s) => s === 1), `budget ${budget}: decode call ${call.sizes.join(',')}`);
    });
    assert.ok(session.calls.length > whole.session.calls.length, `budget ${budget}: prompts were split`);
    // Every cache was fed exactly what it was fed with whole prompts (nothing twice or skipped).
    assert.deepEqual(fed, whole.fed, `budget ${budget}: tokens fed`);
    assert.ok(session.caches.every((cache) => cache.released));
  }
});

test('chunked prefill: a long prompt is fed one chunk per prefill step, each between two decode steps of the running sequences', async () => {
  const session = new FakeSession(tok.vocabSize, 64, hashNext(tok.vocabSize));
  const scheduler = new Scheduler<FakeCache>(session, tok, () => new GreedySampler(), { maxBatchSize: 4, maxPrefillTokens: 8 });
  const short = request('a girl', { maxTokens: 20 });
  const long = request([1, ...Array.from({ length: 39 }, (_, i) => 3 + i)], { maxTokens: 2 });
  const choices = await drain(scheduler, [[short], [], [long]]);
  // Calls: prefill of the short prompt, its decode steps; the 40-token prompt in 5 chunks of 8,
  // each followed by a decode step of the short sequence only.
  const sizes = session.calls.map((c) => c.sizes.join('+'));
  const first = sizes.indexOf('8');
  assert.ok(first > 0, sizes.join(' '));
  assert.deepEqual(sizes.slice(first, first + 10), ['8', '1', '8', '1', '8', '1', '8', '1', '8', '1+1'], sizes.join(' '));
  assert.equal(choices.get(`${long.requestId}/0`)!.tokens.length, 2);
  // The long prompt's output equals its output alone, without a budget.
  const alone = setup();
  const again = { ...long, requestId: 'alone' };
  const solo = await drain(alone.scheduler, [[again]]);
  assert.deepEqual(choices.get(`${long.requestId}/0`)!.tokens, solo.get('alone/0')!.tokens);
  assert.throws(() => new Scheduler<FakeCache>(session, tok, () => new GreedySampler(), { maxBatchSize: 4, maxPrefillTokens: 0 }), /maxPrefillTokens must be >= 1/);
});

test('chunked prefill: a request cancelled half-way through its prompt leaves the batch and releases its KV cache; the others go on', async () => {
  const session = new FakeSession(tok.vocabSize, 64, hashNext(tok.vocabSize));
  const scheduler = new Scheduler<FakeCache>(session, tok, () => new GreedySampler(), { maxBatchSize: 4, maxPrefillTokens: 4 });
  const short = request('a girl', { maxTokens: 10 });
  const long = request([1, ...Array.from({ length: 23 }, (_, i) => 3 + i)], { maxTokens: 3 });
  scheduler.add(short);
  await scheduler.step(); // prefill of the short prompt (3 tokens)
  scheduler.add(long);
  await scheduler.step(); // decode
  await scheduler.step(); // first chunk of the long prompt
  const longCache = session.caches[1];
  assert.equal(longCache.tokens.length, 4);
  assert.equal(scheduler.stats().runningSequences, 2);
  assert.ok(scheduler.abort(long.requestId));
  assert.equal(longCache.released, true);
  const rest = await drain(scheduler);
  assert.equal(rest.get(`${short.requestId}/0`)!.finishReason, 'length');
  assert.equal(longCache.tokens.length, 4, 'no chunk was fed after the cancel');
  assert.ok(session.calls.slice(3).every((c) => c.sizes.every((s) => s === 1)), 'only decode steps of the short request after the cancel');
  assert.equal(scheduler.hasWork(), false);
});
