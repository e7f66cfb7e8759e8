/**
 * Peer servers (`--peer NAME=URL`): any OpenAI-compatible `/v1/completions` server, e.g.
 * llama.cpp's `llama-server`, measured in the same run as our models, interleaved with them,
 * with the same requests. At start each peer is asked for `GET /v1/models` once: that gives
 * the `model` id to send and, from llama.cpp, the model's size and shape (`meta`). A peer that
 * does not answer is reported in one line and still measured: its requests count as errors.
 *
 * What reaches llama.cpp's server (tools/server: server-schema.cpp, server-common.cpp,
 * server-task.cpp): the prompt as token ids is used as given (a number-first prompt gets no
 * BOS added; ours carries BOS itself); `max_tokens` is an alias of its `n_predict`;
 * `ignore_eos` is its own sampling field; `stream_options.include_usage` is honoured, and its
 * `usage.completion_tokens` counts generated tokens as ours does; `temperature` 0 is greedy.
 */
import type { PeerSpec } from './options.js';

/** What llama.cpp's `/v1/models` tells about the model (its `meta` object); other servers send none. */
export interface PeerModelInfo {
  n_vocab: number | null;
  n_params: number | null;
  /** Bytes of all the model's tensors (llama.cpp's `size`), the token-embedding table included. */
  size_bytes: number | null;
  n_embd: number | null;
  /** llama.cpp's file type as it reports it (e.g. "Q8_0", "Q4_0", "(guessed) all F32"; older servers send a number). */
  ftype: string | null;
}

/** A peer after the start-up probe. */
export interface Peer extends PeerSpec {
  /** The `model` field sent: the first id of its `/v1/models`, else the peer's name. */
  model: string;
  info: PeerModelInfo | null;
  /** One line when the probe failed (the peer is measured anyway; its requests will fail or not). */
  startError: string | null;
}

const numOrNull = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);
const strOrNull = (v: unknown): string | null => (typeof v === 'string' ? v.slice(0, 80) : typeof v === 'number' ? String(v) : null);

/**
 * Asks a peer for `GET <url>/v1/models`. Never throws.
 *
 * @param timeoutS limit of the request, seconds.
 * @returns the peer with its model id and info, or with `startError` set (unreachable, HTTP
 *   status, not a model list).
 */
export async function probePeer(spec: PeerSpec, timeoutS = 10): Promise<Peer> {
  const failed = (why: string): Peer => ({ ...spec, model: spec.name, info: null, startError: why });
  let res: Response;
  try {
    res = await fetch(`${spec.url}/v1/models`, { signal: AbortSignal.timeout(Math.round(timeoutS * 1000)) });
  } catch (err) {
    const cause = (err as { cause?: { code?: unknown } }).cause;
    const code = cause && typeof cause === 'object' && cause.code !== undefined ? ` (${String(cause.code)})` : '';
    return failed(`not reachable: ${(err as Error).message}${code}`);
  }
  const text = await res.text().catch(() => '');
  if (res.status !== 200) return failed(`GET /v1/models answered HTTP ${res.status}${text ? ': ' + text.replace(/\s+/g, ' ').slice(0, 120) : ''}`);
  let data: unknown;
  try {
    data = (JSON.parse(text) as { data?: unknown }).data;
  } catch {
    return failed('GET /v1/models did not answer JSON');
  }
  const first = Array.isArray(data) ? (data[0] as { id?: unknown; meta?: Record<string, unknown> } | undefined) : undefined;
  if (!first || typeof first.id !== 'string') return failed('GET /v1/models lists no model');
  const m = first.meta && typeof first.meta === 'object' ? first.meta : null;
  const info: PeerModelInfo | null = m
    ? { n_vocab: numOrNull(m.n_vocab), n_params: numOrNull(m.n_params), size_bytes: numOrNull(m.size), n_embd: numOrNull(m.n_embd), ftype: strOrNull(m.ftype) }
    : null;
  return { ...spec, model: first.id, info, startError: null };
}

/**
 * Weight bytes a peer reads per generated token at batch 1, estimated from its model size:
 * all tensor bytes minus the token-embedding table (a decode step reads one row of it), taking
 * the table at the model's mean bytes per parameter. An estimate: llama.cpp may store the head and
 * embeddings at another precision than the rest (q4_0 files keep the head at q6_K).
 *
 * @returns bytes, or null when the server did not report size, parameters, vocabulary and width.
 */
export function peerWeightBytesPerToken(info: PeerModelInfo | null): number | null {
  if (!info || !info.size_bytes || !info.n_params || !info.n_vocab || !info.n_embd) return null;
  const embedding = info.n_vocab * info.n_embd;
  if (embedding >= info.n_params) return null;
  return info.size_bytes * (1 - embedding / info.n_params);
}

/**
 * The one-line start-up messages about the peers: unreachable peers, a name that is also one of
 * our model ids, a vocabulary smaller than the prompts' token ids need.
 *
 * @param ourIds ids served by SliceServe in this run.
 * @param vocabSize prompts draw ids below this.
 * @throws Error when a peer's name is also one of our model ids (the report could not tell them apart).
 */
export function peerWarnings(peers: readonly Peer[], ourIds: readonly string[], vocabSize: number): string[] {
  const lines: string[] = [];
  for (const p of peers) {
    if (ourIds.includes(p.name)) throw new Error(`--peer ${p.name}: that name is also a model served by SliceServe in this run; give the peer another NAME`);
    if (p.startError) lines.push(`peer ${p.name} (${p.url}): ${p.startError}; measuring it anyway, its failed requests count as errors`);
    if (p.info?.n_vocab != null && p.info.n_vocab < vocabSize) {
      lines.push(`peer ${p.name}: its vocabulary has ${p.info.n_vocab} tokens, the prompts use ids up to ${vocabSize - 1}; serve the same model (its GGUF) there, or expect errors`);
    }
  }
  return lines;
}
