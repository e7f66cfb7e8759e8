/**
 * One sequence (one choice of a request) and its output processor: what to feed the model
 * next, how a step's logits become a token (sampled, or a prompt token scored for
 * echo + logprobs), and how tokens become text (incremental detokenization, stop strings,
 * EOS / stop_token_ids, max_tokens, logprobs with text offsets).
 */
import type { TextTokenizer } from '../models/types.js';
import { IncrementalDetokenizer, codePointLength } from './detokenizer.js';
import { logSumExp, logprobAt, topLogprobs } from '../runtime/logprobs.js';
import type { ResolvedEngineRequest, EngineSamplingParams, FinishReason, SequenceOutput, TokenAlternative, TokenEntry } from './protocol.js';
import { StopStringMatcher } from './stop.js';

/** The sampler a sequence uses (engine/sampler.ts `Sampler` fits). */
export interface TokenSampler {
  /**
   * The next token and, when `withLogprob`, its logprob (processed logits; temperature 0 ->
   * logprob at temperature 1); null otherwise.
   */
  sample(logits: Float32Array, generated: readonly number[], withLogprob: boolean): { token: number; logprob: number | null };
  /** The k most likely tokens by logprob (same processing as sample, given the tokens generated so far). */
  topLogprobs(logits: Float32Array, k: number, generated: readonly number[]): { token: number; logprob: number }[];
  /**
   * Whether {@link sample} returns the argmax of the raw logits (lowest id on ties) whatever
   * the tokens generated so far: greedy, no logit_bias, no penalties. Optional: a sampler
   * without it is always given the logits.
   */
  isPlainGreedy?(): boolean;
}

/** Builds a sampler for one sequence. */
export type SamplerFactory = (params: EngineSamplingParams) => TokenSampler;

/** Model facts a sequence needs. */
export interface SequenceContext {
  tokenizer: TextTokenizer;
  maxContext: number;
  createSampler: SamplerFactory;
}

/** A sequence's state inside the scheduler. `C` is the session's KV cache type. */
export class Sequence<C> {
  /** KV cache, set when the sequence is admitted. */
  cache: C | null = null;
  /** Tokens to feed at the next step (the whole prompt, or one token). */
  pendingInput: number[];
  readonly generated: number[] = [];
  finishReason: FinishReason | null = null;
  aborted = false;
  /** Tokens this sequence may occupy in its KV cache: prompt + max_tokens. */
  readonly reservedTokens: number;

  private readonly sampler: TokenSampler;
  private readonly detok: IncrementalDetokenizer;
  private readonly stopper: StopStringMatcher;
  /** Prompt tokens still to score (echo + logprobs), fed one per step. */
  private readonly forced: number[];
  private readonly promptEntries: TokenEntry[] | null;
  private readonly echoText: string;
  /** Length of {@link echoText} in code points (text offsets count code points). */
  private readonly echoChars: number;
  private echoSent: boolean;
  private readonly wantLogprobs: boolean;

  /**
   * @param request the request this sequence belongs to
   * @param index choice index within the request
   * @param promptIds token ids of its prompt
   * @param promptText the prompt as the client wrote it (for echo), or null for token prompts
   */
  constructor(
    readonly request: ResolvedEngineRequest,
    readonly index: number,
    readonly promptIds: readonly number[],
    promptText: string | null,
    private readonly ctx: SequenceContext,
  ) {
    const seed = request.sampling.seed === undefined ? undefined : request.sampling.seed + index;
    this.sampler = ctx.createSampler({ ...request.sampling, seed });
    this.detok = new IncrementalDetokenizer(ctx.tokenizer, promptIds);
    this.stopper = new StopStringMatcher(request.stop);
    this.reservedTokens = promptIds.length + request.maxTokens;
    this.wantLogprobs = request.logprobs !== null;
    this.echoText = request.echo ? (promptText ?? ctx.tokenizer.decode(promptIds)) : '';
    this.echoChars = codePointLength(this.echoText);
    this.echoSent = !request.echo;
    if (request.echo && this.wantLogprobs) {
      // Score the prompt: feed it one token at a time, each step's logits score the next token.
      this.promptEntries = promptTokenEntries(ctx.tokenizer, promptIds);
      this.forced = promptIds.slice(1);
      this.pendingInput = [promptIds[0]];
    } else {
      this.promptEntries = null;
      this.forced = [];
      this.pendingInput = [...promptIds];
    }
  }

  get finished(): boolean {
    return this.finishReason !== null;
  }

  /** Tokens held in the KV cache after the pending input is fed. */
  get contextLength(): number {
    return this.promptIds.length - this.forced.length + this.generated.length;
  }

  /**
   * Processes the logits [vocab] of the last token fed and returns the sequence's output for
   * this step (null when nothing is to be reported yet: a prompt token was scored).
   * Sets {@link pendingInput} for the next step, or {@link finishReason}.
   */
  onLogits(logits: Float32Array): SequenceOutput | null {
    if (this.forced.length > 0) {
      this.scoreForced(logits);
      return null;
    }
    const echo = this.takeEcho();
    if (this.generated.length >= this.request.maxTokens) {
      return this.finish('length', this.flushText(), echo);
    }
    return this.generate(logits, echo);
  }

  /**
   * Whether this step's token is the argmax of the logits and nothing else is read from them:
   * no prompt token to score, a plain greedy sampler, no logprobs, and min_tokens reached (no
   * EOS / stop token masking). The scheduler then asks the session for the greedy token only
   * ({@link onGreedyToken}) instead of the [vocab] logits.
   */
  acceptsGreedyToken(): boolean {
    return this.forced.length === 0 && !this.wantLogprobs && this.generated.length >= this.request.minTokens && this.sampler.isPlainGreedy?.() === true;
  }

  /**
   * {@link onLogits} for a step whose greedy token was computed by the session (only when
   * {@link acceptsGreedyToken}): the same output as onLogits given logits whose argmax is `token`.
   * @throws Error when the sequence does not accept a greedy token
   */
  onGreedyToken(token: number): SequenceOutput {
    if (!this.acceptsGreedyToken()) throw new Error('onGreedyToken: this sequence needs its logits');
    const echo = this.takeEcho();
    if (this.generated.length >= this.request.maxTokens) {
      return this.finish('length', this.flushText(), echo);
    }
    return this.emit(token, null, null, echo);
  }

  /**
   * Chunked prefill: the step just fed the first `count` tokens of {@link pendingInput} and
   * its output is not read (no token is due before the prompt's last position); the rest of
   * the prompt stays pending for a later step.
   * @throws Error unless 0 < count < pendingInput.length
   */
  advancePrompt(count: number): void {
    if (!(Number.isInteger(count) && count > 0 && count < this.pendingInput.length)) {
      throw new Error(`advancePrompt: ${count} of ${this.pendingInput.length} pending tokens (a chunk must leave at least one)`);
    }
    this.pendingInput = this.pendingInput.slice(count);
  }

  /** Output for a sequence that ends before any forward pass (max_tokens 0, no scoring). */
  finishWithoutForward(): SequenceOutput {
    return this.finish('length', '', this.takeEcho());
  }

  private generate(logits: Float32Array, echo: SequenceOutput['echo']): SequenceOutput {
    const req = this.request;
    if (this.generated.length < req.minTokens) {
      if (!req.ignoreEos) for (const eos of this.ctx.tokenizer.eosTokenIds) logits[eos] = -Infinity;
      for (const id of req.stopTokenIds) logits[id] = -Infinity;
    }
    const { token, logprob } = this.sampler.sample(logits, this.generated, this.wantLogprobs);
    const top = this.wantLogprobs ? this.alternatives(withChosen(this.sampler.topLogprobs(logits, req.logprobs ?? 0, this.generated), token, logprob as number)) : null;
    return this.emit(token, logprob, top, echo);
  }

  /** Appends the chosen token and turns it into this step's output (text, stop checks, limits). */
  private emit(token: number, logprob: number | null, top: TokenAlternative[] | null, echo: SequenceOutput['echo']): SequenceOutput {
    const req = this.request;
    const entry: TokenEntry = {
      tokenId: token,
      token: this.wantLogprobs ? this.detok.peek(token) : '',
      logprob,
      top,
      textOffset: this.echoChars + this.detok.emittedChars,
    };
    this.generated.push(token);
    const ended = (!req.ignoreEos && this.ctx.tokenizer.eosTokenIds.includes(token)) || req.stopTokenIds.includes(token);
    if (ended) return this.finish('stop', this.flushText(), echo, entry);
    const match = this.generated.length > req.minTokens || req.minTokens === 0;
    const step = this.stopper.push(this.detok.push(token), match);
    if (step.stopped) return this.finish('stop', step.text, echo, entry);
    if (this.generated.length >= req.maxTokens || this.promptIds.length + this.generated.length >= this.ctx.maxContext) {
      const tail = this.stopper.push(this.detok.flush(), match);
      if (tail.stopped) return this.finish('stop', step.text + tail.text, echo, entry);
      return this.finish('length', step.text + tail.text + this.stopper.flush(), echo, entry);
    }
    this.pendingInput = [token];
    return this.output(step.text, echo, entry);
  }

  private scoreForced(logits: Float32Array): void {
    const token = this.forced.shift() as number;
    const position = this.promptIds.length - this.forced.length - 1;
    const lse = logSumExp(logits);
    const entry = (this.promptEntries as TokenEntry[])[position];
    entry.logprob = logprobAt(logits, token, lse);
    entry.top = this.alternatives(withChosen(topLogprobs(logits, this.request.logprobs ?? 0, lse), token, entry.logprob), position);
    this.pendingInput = [token];
  }

  /** Token strings of alternatives: in the generated stream, or (position) within the prompt. */
  private alternatives(scored: { token: number; logprob: number }[], position?: number): TokenAlternative[] {
    if (position === undefined) {
      return scored.map((s) => ({ tokenId: s.token, token: this.detok.peek(s.token), logprob: s.logprob }));
    }
    const context = new IncrementalDetokenizer(this.ctx.tokenizer, this.promptIds.slice(0, position));
    return scored.map((s) => ({ tokenId: s.token, token: context.peek(s.token), logprob: s.logprob }));
  }

  private takeEcho(): SequenceOutput['echo'] {
    if (this.echoSent) return undefined;
    this.echoSent = true;
    return { text: this.echoText, tokens: this.promptEntries };
  }

  private flushText(): string {
    const tail = this.stopper.push(this.detok.flush());
    return tail.text + this.stopper.flush();
  }

  private finish(reason: FinishReason, text: string, echo: SequenceOutput['echo'], token?: TokenEntry): SequenceOutput {
    this.finishReason = reason;
    this.pendingInput = [];
    return this.output(text, echo, token);
  }

  private output(text: string, echo: SequenceOutput['echo'], token?: TokenEntry): SequenceOutput {
    const out: SequenceOutput = {
      requestId: this.request.requestId,
      index: this.index,
      text,
      completionTokens: this.generated.length,
    };
    if (token) out.token = token;
    if (echo) out.echo = echo;
    if (this.finishReason) out.finishReason = this.finishReason;
    return out;
  }
}

/** Entries (token strings and text offsets) of the prompt tokens; logprobs filled while scoring. */
function promptTokenEntries(tokenizer: TextTokenizer, promptIds: readonly number[]): TokenEntry[] {
  const detok = new IncrementalDetokenizer(tokenizer);
  return promptIds.map((tokenId) => {
    const textOffset = detok.emittedChars;
    const token = detok.peek(tokenId);
    detok.push(tokenId);
    return { tokenId, token, logprob: null, top: null, textOffset };
  });
}

/**
 * The k most likely alternatives plus the chosen token when it is not among them (appended
 * last): the OpenAI completions API returns the chosen token's logprob in `top_logprobs` too,
 * so a position has up to `logprobs + 1` entries (`"logprobs": 0` gives the chosen token alone).
 */
export function withChosen(top: { token: number; logprob: number }[], token: number, logprob: number): { token: number; logprob: number }[] {
  return top.some((t) => t.token === token) ? top : [...top, { token, logprob }];
}
