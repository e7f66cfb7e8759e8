/**
 * The JSON body limit (`--max-body`): a byte count, or a number with a unit b, kb, mb or gb
 * (powers of 1024, case-insensitive, as body-parser reads them: `1mb` = 1048576 bytes). The
 * server parses it once at startup and hands body-parser the byte count, so a limit that
 * starts the server is the limit every request meets.
 */

const UNITS: Record<string, number> = { b: 1, kb: 1024, mb: 1024 ** 2, gb: 1024 ** 3 };

/**
 * Parses a body limit such as `1mb`, `512kb`, `2.5mb` or `1048576`.
 * @returns the limit in bytes (an integer >= 1)
 * @throws RangeError naming what is accepted, with an example
 */
export function parseBodyLimit(value: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(b|kb|mb|gb)?\s*$/i.exec(value);
  const bytes = m ? Math.floor(Number(m[1]) * UNITS[(m[2] ?? 'b').toLowerCase()]) : NaN;
  if (!(bytes >= 1)) {
    throw new RangeError(`expected a size of at least 1 byte such as 1mb, 512kb or 1048576 (bytes; units b, kb, mb, gb), got "${value}"`);
  }
  return bytes;
}

/** The limit as the 413 message gives it: `1mb (1048576 bytes)`, or `5000 bytes` for a bare count. */
export function describeBodyLimit(value: string): string {
  const bytes = parseBodyLimit(value);
  const given = value.trim();
  return /^\d+$/.test(given) ? `${bytes} bytes` : `${given} (${bytes} bytes)`;
}
