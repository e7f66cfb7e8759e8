/**
 * One streaming `POST /v1/completions` request, timed the way vLLM's benchmark_serving
 * times it: TTFT (request sent -> first token chunk), ITL (every gap between two token
 * chunks), TPOT ((e2e - TTFT) / (output tokens - 1), i.e. excluding the first token) and
 * end-to-end latency (request sent -> `data: [DONE]`). Uses Node's built-in fetch (undici).
 */
import { performance } from 'node:perf_hooks';
import { sseEvents } from './sse.js';

/** The request body fields the load generator sends (OpenAI completions + vLLM's `ignore_eos`). */
export interface CompletionRequest {
  model: string;
  /** Token ids (exact prompt length, no tokenizer needed on the client) or text. */
  prompt: number[] | string;
  max_tokens: number;
  temperature: number;
  ignore_eos: boolean;
  seed?: number;
}

/** What one request measured. Times are seconds; `start_s` is relative to the run's origin. */
export interface RequestRecord {
  model: string;
  concurrency: number;
  /** Send time, seconds since the run's time origin. */
  start_s: number;
  ok: boolean;
  /** One-line reason when `ok` is false (HTTP status, network error, truncated stream...). */
  error?: string;
  /** Time to first token; null when no token arrived. */
  ttft_s: number | null;
  /** Mean time per output token after the first; null with fewer than 2 tokens. */
  tpot_s: number | null;
  /** Every gap between consecutive token chunks (output_tokens - 1 values). */
  itl_s: number[];
  /** Request sent -> end of stream. */
  e2e_s: number;
  /** Tokens generated: `usage.completion_tokens` when sent, else the number of token chunks. */
  output_tokens: number;
  /** `usage.prompt_tokens` when the server sent usage, else null. */
  prompt_tokens: number | null;
}

/** Options of {@link streamCompletion}. */
export interface StreamOptions {
  /** Server base URL, e.g. `http://127.0.0.1:8080` (no trailing `/v1`). */
  baseUrl: string;
  /** Per-request time limit in seconds; past it the request is aborted and counted as an error. */
  timeoutS: number;
  /** Aborts the request (counted as an error) when the whole run is stopped. */
  signal?: AbortSignal;
  /** Sent as `Authorization: Bearer <apiKey>` when set. */
  apiKey?: string;
  /** Time origin for `start_s`, in `performance.now()` milliseconds (default 0). */
  originMs?: number;
  /** Concurrency level recorded in the result. */
  concurrency: number;
}

interface ChunkJson {
  choices?: unknown[];
  usage?: { completion_tokens?: number; prompt_tokens?: number } | null;
  error?: { message?: string } | string;
}

/**
 * Whether a chunk marks the arrival of a token: it has a choice, and not only choices with empty
 * text that merely close the stream with a finish_reason. SliceServe (like vLLM) puts the
 * finish_reason on the last token's chunk; llama.cpp's server sends the last token, then a
 * separate `{"text": "", "finish_reason": "length"}` chunk (with the usage), which is no token
 * and would otherwise add a near-zero gap to the ITLs.
 */
export function carriesToken(chunk: { choices?: unknown[] }): boolean {
  if (!Array.isArray(chunk.choices) || chunk.choices.length === 0) return false;
  return chunk.choices.some((c) => {
    const choice = c as { text?: unknown; finish_reason?: unknown } | null;
    return !(choice && choice.text === '' && choice.finish_reason != null);
  });
}

function describe(err: unknown): string {
  if (err instanceof Error) {
    const cause = (err as Error & { cause?: unknown }).cause;
    const code = cause && typeof cause === 'object' && 'code' in cause ? ` (${String((cause as { code: unknown }).code)})` : '';
    return `${err.name === 'Error' ? '' : err.name + ': '}${err.message}${code}`.slice(0, 200);
  }
  return String(err).slice(0, 200);
}

/**
 * Sends one streaming completion and times it. Never throws: any failure (HTTP status other
 * than 200, refused or dropped connection, an `error` chunk, a stream that ends without
 * `data: [DONE]`, a malformed chunk, the timeout, an abort) gives `ok: false` with a reason.
 *
 * @param body request fields; `stream: true` and `stream_options.include_usage` are added.
 */
export async function streamCompletion(body: CompletionRequest, opts: StreamOptions): Promise<RequestRecord> {
  const origin = opts.originMs ?? 0;
  const t0 = performance.now();
  const tokenTimes: number[] = [];
  let usageTokens: number | null = null;
  let promptTokens: number | null = null;
  const timeout = AbortSignal.timeout(Math.max(1, Math.round(opts.timeoutS * 1000)));
  const signal = opts.signal ? AbortSignal.any([opts.signal, timeout]) : timeout;
  const finish = (error?: string): RequestRecord => {
    const end = performance.now();
    const n = usageTokens ?? tokenTimes.length;
    const ttft = tokenTimes.length > 0 ? (tokenTimes[0] - t0) / 1000 : null;
    const itl: number[] = [];
    for (let i = 1; i < tokenTimes.length; i++) itl.push((tokenTimes[i] - tokenTimes[i - 1]) / 1000);
    const e2e = (end - t0) / 1000;
    return {
      model: body.model,
      concurrency: opts.concurrency,
      start_s: (t0 - origin) / 1000,
      ok: error === undefined,
      ...(error === undefined ? {} : { error }),
      ttft_s: ttft,
      tpot_s: ttft !== null && n > 1 ? (e2e - ttft) / (n - 1) : null,
      itl_s: itl,
      e2e_s: e2e,
      output_tokens: n,
      prompt_tokens: promptTokens,
    };
  };
  let response: Response;
  try {
    response = await fetch(`${opts.baseUrl}/v1/completions`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        accept: 'text/event-stream',
        ...(opts.apiKey ? { authorization: `Bearer ${opts.apiKey}` } : {}),
      },
      body: JSON.stringify({ ...body, stream: true, stream_options: { include_usage: true } }),
      signal,
    });
  } catch (err) {
    return finish(timeout.aborted ? `timeout after ${opts.timeoutS} s` : `request failed: ${describe(err)}`);
  }
  if (response.status !== 200 || response.body === null) {
    let message = '';
    try {
      const text = await response.text();
      try {
        const j = JSON.parse(text) as ChunkJson;
        message = typeof j.error === 'object' ? (j.error?.message ?? '') : String(j.error ?? text);
      } catch {
        message = text;
      }
    } catch {
      /* body unreadable: the status is the message */
    }
    return finish(`HTTP ${response.status}${message ? ': ' + message.slice(0, 160) : ''}`);
  }
  try {
    for await (const ev of sseEvents(response.body)) {
      if (ev.data === '[DONE]') return finish();
      let chunk: ChunkJson;
      try {
        chunk = JSON.parse(ev.data) as ChunkJson;
      } catch {
        await response.body.cancel().catch(() => undefined);
        return finish(`malformed chunk: ${ev.data.slice(0, 80)}`);
      }
      if (chunk.error !== undefined) {
        await response.body.cancel().catch(() => undefined);
        const m = typeof chunk.error === 'object' ? chunk.error.message : chunk.error;
        return finish(`error chunk: ${String(m).slice(0, 160)}`);
      }
      if (carriesToken(chunk)) tokenTimes.push(performance.now());
      if (chunk.usage) {
        if (typeof chunk.usage.completion_tokens === 'number') usageTokens = chunk.usage.completion_tokens;
        if (typeof chunk.usage.prompt_tokens === 'number') promptTokens = chunk.usage.prompt_tokens;
      }
    }
    return finish('stream ended before data: [DONE]');
  } catch (err) {
    return finish(timeout.aborted ? `timeout after ${opts.timeoutS} s` : `stream failed: ${describe(err)}`);
  }
}
