/**
 * Server-Sent Events as OpenAI-style servers stream them (`data: {json}\n\n` per chunk,
 * ending with `data: [DONE]`). The framing is parsed by `eventsource-parser` (the WHATWG
 * EventSource algorithm), so events split across network reads, CRLF line ends and
 * comments are handled; this module only adapts it to a byte stream.
 */
import { createParser, type EventSourceMessage } from 'eventsource-parser';

/** One SSE event: its `data` field (multi-line data joined with '\n') and optional type. */
export interface SseEvent {
  data: string;
  event?: string;
}

/**
 * Yields the events of an SSE byte stream in order, as soon as each is complete.
 * Bytes are decoded as UTF-8 in streaming mode, so a multi-byte character split across
 * two reads is decoded correctly. An incomplete last event (no blank line after it) is
 * dropped, as the EventSource algorithm requires.
 *
 * @param body the response body: chunks of bytes in arrival order (a fetch `Response.body`
 *   or any async iterable of Uint8Array).
 * @throws whatever reading `body` throws (for instance a dropped connection).
 */
export async function* sseEvents(body: AsyncIterable<Uint8Array>): AsyncGenerator<SseEvent> {
  const pending: SseEvent[] = [];
  const parser = createParser({
    onEvent: (m: EventSourceMessage) => pending.push(m.event ? { data: m.data, event: m.event } : { data: m.data }),
  });
  const decoder = new TextDecoder('utf-8');
  for await (const chunk of body) {
    parser.feed(decoder.decode(chunk, { stream: true }));
    while (pending.length > 0) yield pending.shift() as SseEvent;
  }
  parser.feed(decoder.decode());
  while (pending.length > 0) yield pending.shift() as SseEvent;
}
