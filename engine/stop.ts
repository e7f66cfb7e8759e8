/**
 * Stop strings (OpenAI `stop`): generation ends before the first occurrence of any stop
 * string, which is not returned. Text that may be the start of a stop string is held back
 * until it is known not to be one, so a streamed client never receives text that a later
 * token turns into a stop string (vLLM's stop checker does the same).
 */

/** Result of {@link StopStringMatcher.push}. */
export interface StopResult {
  /** Text safe to release now. */
  text: string;
  /** A stop string was found: `text` ends right before it and the sequence is finished. */
  stopped: boolean;
}

/** Matches stop strings across the text deltas of one sequence. */
export class StopStringMatcher {
  private held = '';
  private readonly maxHold: number;

  /** @param stops stop strings; empty strings are ignored. */
  constructor(private readonly stops: readonly string[]) {
    this.stops = stops.filter((s) => s.length > 0);
    this.maxHold = Math.max(0, ...this.stops.map((s) => s.length - 1));
  }

  /**
   * Feeds the next text delta.
   * @param match false to pass text through without matching (before min_tokens); held text
   *   is released with it.
   */
  push(text: string, match = true): StopResult {
    const buffer = this.held + text;
    this.held = '';
    if (!match || this.stops.length === 0) return { text: buffer, stopped: false };
    let first = -1;
    for (const stop of this.stops) {
      const at = buffer.indexOf(stop);
      if (at >= 0 && (first < 0 || at < first)) first = at;
    }
    if (first >= 0) return { text: buffer.slice(0, first), stopped: true };
    const hold = this.holdLength(buffer);
    this.held = buffer.slice(buffer.length - hold);
    return { text: buffer.slice(0, buffer.length - hold), stopped: false };
  }

  /** Releases held-back text at the end of the sequence. */
  flush(): string {
    const text = this.held;
    this.held = '';
    return text;
  }

  /** Length of the longest suffix of `buffer` that is a proper prefix of a stop string. */
  private holdLength(buffer: string): number {
    for (let len = Math.min(this.maxHold, buffer.length); len > 0; len--) {
      const tail = buffer.slice(buffer.length - len);
      if (this.stops.some((s) => s.startsWith(tail))) return len;
    }
    return 0;
  }
}
