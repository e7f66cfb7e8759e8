/**
 * A fair, time-sliced queue for the WebSocket messages of every socket: messages are handled in
 * arrival order, but at most `budgetMs` of handling runs per event-loop turn, so a burst of
 * thousands of messages cannot hold the main thread while the model workers' tokens wait to be
 * relayed (docs/overload.md). A socket with too many unhandled messages is paused (its TCP
 * window closes) until the queue has caught up, so the queue's memory stays bounded.
 */

/** One source of messages (a socket): paused and resumed by the drain. */
export interface DrainSource {
  pause(): void;
  resume(): void;
}

/** Settings of a {@link MessageDrain}. */
export interface MessageDrainOptions {
  /** Handling time per event-loop turn, milliseconds (at least one message runs per turn). */
  budgetMs: number;
  /** Unhandled messages of one source at which it is paused. */
  pauseAt: number;
  /** Unhandled messages of a paused source at which it is resumed. */
  resumeAt: number;
}

/** Defaults: 1 ms per turn; pause a socket at 256 unhandled messages, resume at 64. */
export const DEFAULT_DRAIN_OPTIONS: MessageDrainOptions = { budgetMs: 1, pauseAt: 256, resumeAt: 64 };

interface Pending {
  source: DrainSource;
  handle: () => void;
}

/**
 * The queue. `push` never runs the handler synchronously; the handlers run from `setImmediate`
 * turns, in push order. A handler that throws does not stop the drain (the error is passed to
 * `onError`).
 */
export class MessageDrain {
  private queue: Pending[] = [];
  private head = 0;
  private scheduled = false;
  private readonly unhandled = new Map<DrainSource, number>();
  private readonly paused = new Set<DrainSource>();

  constructor(
    private readonly options: MessageDrainOptions = DEFAULT_DRAIN_OPTIONS,
    private readonly onError: (err: unknown) => void = () => {},
  ) {
    if (!(options.budgetMs > 0) || !(options.resumeAt >= 0) || !(options.pauseAt > options.resumeAt)) {
      throw new RangeError(`MessageDrain: need budgetMs > 0 and pauseAt > resumeAt >= 0, got ${JSON.stringify(options)}`);
    }
  }

  /** Messages pushed and not yet handled (all sources). */
  get length(): number {
    return this.queue.length - this.head;
  }

  /** Queues `handle` for `source`; pauses the source once it has `pauseAt` unhandled messages. */
  push(source: DrainSource, handle: () => void): void {
    this.queue.push({ source, handle });
    const count = (this.unhandled.get(source) ?? 0) + 1;
    this.unhandled.set(source, count);
    if (count >= this.options.pauseAt && !this.paused.has(source)) {
      this.paused.add(source);
      source.pause();
    }
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(this.run);
    }
  }

  /** Forgets a source (its socket closed): its queued messages are dropped unhandled. */
  drop(source: DrainSource): void {
    if (!this.unhandled.has(source)) return;
    this.unhandled.delete(source);
    this.paused.delete(source);
    this.queue = this.queue.slice(this.head).filter((p) => p.source !== source);
    this.head = 0;
  }

  private readonly run = (): void => {
    const deadline = performance.now() + this.options.budgetMs;
    // `drop` may have emptied the queue since this turn was scheduled.
    while (this.head < this.queue.length) {
      const next = this.queue[this.head++];
      this.settle(next.source);
      try {
        next.handle();
      } catch (err) {
        this.onError(err);
      }
      if (performance.now() >= deadline) break;
    }
    if (this.head >= this.queue.length) {
      this.queue = [];
      this.head = 0;
      this.scheduled = false;
    } else {
      if (this.head > 1024) {
        this.queue = this.queue.slice(this.head);
        this.head = 0;
      }
      setImmediate(this.run);
    }
  };

  /** One message of `source` is being handled: update its count, resume it when low enough. */
  private settle(source: DrainSource): void {
    const count = (this.unhandled.get(source) ?? 1) - 1;
    if (count === 0) this.unhandled.delete(source);
    else this.unhandled.set(source, count);
    if (count <= this.options.resumeAt && this.paused.delete(source)) source.resume();
  }
}
