/**
 * Test doubles for the engine: a byte-fallback tokenizer with SentencePiece-like spacing and
 * a deterministic "model" whose next token depends on the whole token history, so that any
 * mix-up of KV caches or batch rows changes the output.
 */
import type { EncodeOptions, TextTokenizer } from '../../models/types.js';
import { logSumExp, topLogprobs } from '../../runtime/logprobs.js';
import type { StepSession } from '../../engine/scheduler.js';
import type { TokenSampler } from '../../engine/sequence.js';

const BYTE_BASE = 3;
/** Multi-character pieces after the 256 byte tokens (ids 259...). */
const PIECES = [' Once', ' upon', ' a', ' time', ',', ' there', ' was', ' girl', '.', ' STOP', ' the', ' end', 'ab', 'cd', ' é'];

/** ids 0 <unk>, 1 BOS, 2 EOS, 3..258 bytes 0x00..0xFF, then {@link PIECES}. */
export class FakeTokenizer implements TextTokenizer {
  readonly vocabSize = BYTE_BASE + 256 + PIECES.length;
  readonly bosTokenId = 1;
  readonly bosToken = '<s>';
  readonly eosTokenId = 2;
  readonly eosToken = '</s>';
  private readonly utf8 = new TextDecoder('utf-8', { fatal: false });

  /** @param eosTokenIds every id that ends a sequence (EOS first; e.g. [2, 1] as a llama2.c model) */
  constructor(readonly eosTokenIds: readonly number[] = [2]) {}

  /** Token id of a piece of {@link PIECES}. */
  static piece(text: string): number {
    const i = PIECES.indexOf(text);
    if (i < 0) throw new Error(`no piece ${JSON.stringify(text)}`);
    return BYTE_BASE + 256 + i;
  }

  encode(text: string, options: EncodeOptions = {}): number[] {
    const ids = options.addSpecialTokens === false ? [] : [this.bosTokenId];
    let rest = ' ' + text;
    while (rest.length > 0) {
      let best = '';
      for (const p of PIECES) if (rest.startsWith(p) && p.length > best.length) best = p;
      if (best) {
        ids.push(FakeTokenizer.piece(best));
        rest = rest.slice(best.length);
      } else {
        const ch = String.fromCodePoint(rest.codePointAt(0) as number);
        for (const b of new TextEncoder().encode(ch)) ids.push(BYTE_BASE + b);
        rest = rest.slice(ch.length);
      }
    }
    return ids;
  }

  decode(ids: readonly number[]): string {
    const bytes: number[] = [];
    for (const id of ids) {
      if (id < BYTE_BASE) continue;
      if (id < BYTE_BASE + 256) bytes.push(id - BYTE_BASE);
      else bytes.push(...new TextEncoder().encode(PIECES[id - BYTE_BASE - 256]));
    }
    const text = this.utf8.decode(new Uint8Array(bytes));
    return text.startsWith(' ') ? text.slice(1) : text;
  }

  toJSON(): object {
    return { pieces: PIECES };
  }
}

/** KV cache of the fake session: the tokens fed so far. */
export class FakeCache {
  readonly tokens: number[] = [];
  /** Arguments of every reserve() call. */
  readonly reserved: number[] = [];
  get length(): number {
    return this.tokens.length;
  }
  /** Set by release() (the scheduler is done with the sequence). */
  released = false;
  reserve(extra: number): void {
    this.reserved.push(extra);
  }
  release(): void {
    this.released = true;
  }
}

/** Chooses the next token from the history (prompt + generated). */
export type NextToken = (history: readonly number[]) => number;

/** A hash of the whole history, avoiding the special ids. */
export const hashNext =
  (vocabSize: number): NextToken =>
  (history) => {
    let h = 17;
    history.forEach((t, i) => (h = (h * 31 + t * (i + 7)) % 1000003));
    return 3 + (h % (vocabSize - 3));
  };

/**
 * A session whose logits peak (value 5) at `next(history)`, with small history-dependent
 * values elsewhere. Records the batch of each call.
 */
export class FakeSession implements StepSession<FakeCache> {
  readonly calls: { sizes: number[] }[] = [];
  /** Every cache handed out by newCache(). */
  readonly caches: FakeCache[] = [];
  constructor(
    readonly vocabSize: number,
    readonly maxContext: number,
    private readonly next: NextToken,
  ) {}

  newCache(): FakeCache {
    const cache = new FakeCache();
    this.caches.push(cache);
    return cache;
  }

  async step(inputs: { cache: FakeCache; tokens: number[] }[]): Promise<Float32Array[]> {
    this.calls.push({ sizes: inputs.map((x) => x.tokens.length) });
    await new Promise((r) => setImmediate(r));
    return inputs.map(({ cache, tokens }) => {
      if (tokens.length === 0) throw new Error('FakeSession: empty input');
      if (cache.length + tokens.length > this.maxContext) throw new Error('FakeSession: context exceeded');
      cache.tokens.push(...tokens);
      return this.logitsFor(cache.tokens);
    });
  }

  /** The logits the session returns after `history`. */
  logitsFor(history: readonly number[]): Float32Array {
    const logits = new Float32Array(this.vocabSize);
    for (let v = 0; v < this.vocabSize; v++) logits[v] = ((v * 7 + history.length * 3) % 11) / 10;
    logits[this.next(history)] = 5;
    return logits;
  }
}

/**
 * A {@link FakeSession} that also answers {@link StepSession.stepGreedy}: the argmax (lowest
 * id on ties) of the logits {@link FakeSession.step} would return. Records which method each
 * call used.
 */
export class FakeGreedySession extends FakeSession {
  readonly methods: ('step' | 'stepGreedy')[] = [];

  override async step(inputs: { cache: FakeCache; tokens: number[] }[]): Promise<Float32Array[]> {
    this.methods.push('step');
    return super.step(inputs);
  }

  async stepGreedy(inputs: { cache: FakeCache; tokens: number[] }[]): Promise<number[]> {
    this.methods.push('stepGreedy');
    const logits = await super.step(inputs);
    return logits.map((l) => {
      let best = 0;
      for (let i = 1; i < l.length; i++) if (l[i] > l[best]) best = i;
      return best;
    });
  }
}

/** Greedy sampler (argmax, lowest id on ties) with log-softmax logprobs. */
export class GreedySampler implements TokenSampler {
  sample(logits: Float32Array): { token: number; logprob: number } {
    let best = 0;
    for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
    return { token: best, logprob: logits[best] - logSumExp(logits) };
  }
  topLogprobs(logits: Float32Array, k: number): { token: number; logprob: number }[] {
    return topLogprobs(logits, k);
  }
}
