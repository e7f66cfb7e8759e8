/**
 * Drives the measurement: for each block of the plan (see schedule.ts), `concurrency`
 * closed-loop clients send streaming completions to one model until the block's request
 * count (or time budget) is used up. Bounded: every request has a time limit, and the run
 * stops starting blocks (and requests) once its deadline has passed.
 */
import { performance } from 'node:perf_hooks';
import { streamCompletion, type RequestRecord } from './client.js';
import { makePrompt } from './prompts.js';
import { planBlocks, splitRequests, type Block } from './schedule.js';

/** Where the requests of one entry of {@link RunPlan.models} go when not to `baseUrl` (a peer server). */
export interface Target {
  /** Base URL without `/v1`, e.g. `http://127.0.0.1:8081`. */
  baseUrl: string;
  /** The `model` field sent (the peer's own model id). */
  model: string;
  /** Bearer token for this server; none when absent. */
  apiKey?: string;
}

/** What to run. */
export interface RunPlan {
  /** Server base URL, e.g. `http://127.0.0.1:8080`. */
  baseUrl: string;
  /**
   * What is measured: model ids on `baseUrl` (dense first by convention) and peer names
   * (keys of `targets`), all interleaved alike.
   */
  models: string[];
  /** Entries of `models` served elsewhere (peers), by name; the rest go to `baseUrl`. */
  targets?: Readonly<Record<string, Target>>;
  /** Concurrency sweep, e.g. [1, 4, 16]. */
  concurrencies: number[];
  /** Rounds per level: each model runs `rounds` blocks per level, interleaved with the others. */
  rounds: number;
  /** Requests per model per level (split over the rounds); exclusive with durationS. */
  requestsPerLevel?: (concurrency: number) => number;
  /** Seconds per model per level (split over the rounds), when not counting requests. */
  durationS?: number;
  promptTokens: number;
  outputTokens: number;
  temperature: number;
  seed: number;
  vocabSize: number;
  bosTokenId: number | null;
  /** Per-request time limit, seconds. */
  timeoutS: number;
  /** The run starts no block or request after this `performance.now()` time (ms). */
  deadlineMs: number;
  apiKey?: string;
  /** Stops the run (in-flight requests are aborted and counted as errors). */
  signal?: AbortSignal;
}

/** The requests of one block and its wall time (first send -> last response done). */
export interface BlockResult {
  block: Block;
  records: RequestRecord[];
  wall_s: number;
}

/** Everything measured. */
export interface RunResult {
  blocks: BlockResult[];
  /** Blocks skipped because the deadline passed or the run was stopped. */
  skipped: Block[];
  /** Wall time of the whole run, seconds. */
  wall_s: number;
}

/** Callbacks for progress display. */
export interface RunListener {
  onBlockStart?(block: Block, index: number, total: number, requests: number | null): void;
  onRequestDone?(record: RequestRecord): void;
  onBlockDone?(result: BlockResult, index: number, total: number): void;
}

/** Prompt index of request `i` of a block: identical for every model at the same level and round. */
export function promptIndex(block: Block, i: number): number {
  return block.level * 1_000_000 + block.round * 10_000 + i;
}

/** Where the requests of `model` (an entry of `plan.models`) go. */
export function targetOf(plan: Pick<RunPlan, 'baseUrl' | 'targets' | 'apiKey'>, model: string): Target {
  const t = plan.targets && Object.prototype.hasOwnProperty.call(plan.targets, model) ? plan.targets[model] : undefined;
  return t ?? { baseUrl: plan.baseUrl, model, apiKey: plan.apiKey };
}

/**
 * Runs one block: `block.concurrency` workers, each sending its next request as soon as
 * its previous one ends, until `requests` have been sent (or, with `requests` null, until
 * `untilMs`); never starts a request after `plan.deadlineMs` or once `plan.signal` aborts.
 *
 * @param originMs time origin of the records' `start_s`.
 */
export async function runBlock(
  plan: RunPlan,
  block: Block,
  requests: number | null,
  untilMs: number,
  originMs: number,
  listener: RunListener = {},
): Promise<BlockResult> {
  const records: RequestRecord[] = [];
  let next = 0;
  const take = (): number | null => {
    if (plan.signal?.aborted) return null;
    const now = performance.now();
    if (now >= plan.deadlineMs) return null;
    if (requests === null ? now >= untilMs : next >= requests) return null;
    return next++;
  };
  const t0 = performance.now();
  const worker = async (): Promise<void> => {
    for (let i = take(); i !== null; i = take()) {
      const prompt = makePrompt(promptIndex(block, i), {
        promptTokens: plan.promptTokens,
        vocabSize: plan.vocabSize,
        bosTokenId: plan.bosTokenId,
        seed: plan.seed,
      });
      const target = targetOf(plan, block.model);
      const record = await streamCompletion(
        {
          model: target.model,
          prompt,
          max_tokens: plan.outputTokens,
          temperature: plan.temperature,
          ignore_eos: true,
          seed: plan.seed + i,
        },
        { baseUrl: target.baseUrl, timeoutS: plan.timeoutS, signal: plan.signal, apiKey: target.apiKey, originMs, concurrency: block.concurrency },
      );
      record.model = block.model; // a peer's record carries its name, not the id its server uses
      if (!record.ok && plan.signal?.aborted) break; // cut short by the user (Ctrl-C): not a server error
      records.push(record);
      listener.onRequestDone?.(record);
    }
  };
  await Promise.all(Array.from({ length: block.concurrency }, worker));
  return { block, records, wall_s: (performance.now() - t0) / 1000 };
}

/**
 * Runs every block of the plan in the interleaved order of {@link planBlocks}.
 *
 * @throws RangeError when the plan has neither requestsPerLevel nor durationS.
 */
export async function runPlan(plan: RunPlan, listener: RunListener = {}): Promise<RunResult> {
  if (!plan.requestsPerLevel && !(plan.durationS && plan.durationS > 0)) {
    throw new RangeError('the plan needs requestsPerLevel or a positive durationS');
  }
  const blocks = planBlocks(plan.models, plan.concurrencies, plan.rounds);
  const origin = performance.now();
  const done: BlockResult[] = [];
  const skipped: Block[] = [];
  for (let b = 0; b < blocks.length; b++) {
    const block = blocks[b];
    if (plan.signal?.aborted || performance.now() >= plan.deadlineMs) {
      skipped.push(block);
      continue;
    }
    const requests = plan.requestsPerLevel ? splitRequests(plan.requestsPerLevel(block.concurrency), plan.rounds)[block.round] : null;
    const untilMs = performance.now() + ((plan.durationS ?? 0) * 1000) / plan.rounds;
    listener.onBlockStart?.(block, b, blocks.length, requests);
    const result = await runBlock(plan, block, requests, untilMs, origin, listener);
    done.push(result);
    listener.onBlockDone?.(result, b, blocks.length);
  }
  return { blocks: done, skipped, wall_s: (performance.now() - origin) / 1000 };
}
