/**
 * Byte views of typed arrays in pieces: Node 20 caps a Uint8Array at 2^32 elements (and single
 * read/write calls below 2 GiB), so the bytes of a Float32Array of more than 4 GiB (a 128k x 8192
 * embedding) can only be handled through several views.
 */

/** Bytes per piece of {@link byteViews}: 1 GiB, below every single-call limit. */
export const BYTE_VIEW_CHUNK = 1 << 30;

/**
 * Consecutive Uint8Array views over the bytes of `a`, each at most `chunk` bytes (the last may
 * be shorter; none for an empty array). No bytes are copied.
 */
export function* byteViews(a: ArrayBufferView, chunk = BYTE_VIEW_CHUNK): Generator<Uint8Array> {
  if (!(chunk >= 1)) throw new RangeError(`byteViews: chunk ${chunk} must be >= 1`);
  for (let at = 0; at < a.byteLength; at += chunk) {
    yield new Uint8Array(a.buffer, a.byteOffset + at, Math.min(chunk, a.byteLength - at));
  }
}
