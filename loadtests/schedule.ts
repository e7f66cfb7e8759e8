/**
 * The order in which the models are measured. Dense and every sliced variant run in the
 * same process against the same server, interleaved, so that machine drift (thermal state,
 * other load, allocator warm-up) hits all of them alike: at each concurrency level every
 * model runs one block per round, and the order of the models is rotated by one from one
 * round (and one level) to the next: A B C, B C A, C A B, ...
 */

/** One closed-loop measurement: `concurrency` clients sending requests to one model. */
export interface Block {
  /** Concurrency level: the number of requests kept in flight. */
  concurrency: number;
  /** Index of the concurrency level in the sweep. */
  level: number;
  /** Round within the level, 0-based. */
  round: number;
  /** Model id, as in `/v1/models`. */
  model: string;
}

/**
 * Every block of a run, in execution order: levels in the given order; within a level,
 * `rounds` rounds; within round `r` of level `l`, the models rotated left by `(l + r) % M`.
 *
 * @param models model ids (M >= 1), dense first by convention.
 * @param concurrencies the sweep, e.g. [1, 4, 16].
 * @param rounds rounds per level (>= 1).
 * @returns `concurrencies.length * rounds * M` blocks.
 * @throws RangeError when a list is empty or `rounds` < 1.
 */
export function planBlocks(models: readonly string[], concurrencies: readonly number[], rounds: number): Block[] {
  if (models.length === 0) throw new RangeError('no models to measure');
  if (concurrencies.length === 0) throw new RangeError('no concurrency levels');
  if (!Number.isInteger(rounds) || rounds < 1) throw new RangeError(`rounds must be an integer >= 1, got ${rounds}`);
  const blocks: Block[] = [];
  concurrencies.forEach((concurrency, level) => {
    for (let round = 0; round < rounds; round++) {
      const shift = (level + round) % models.length;
      for (let i = 0; i < models.length; i++) {
        blocks.push({ concurrency, level, round, model: models[(i + shift) % models.length] });
      }
    }
  });
  return blocks;
}

/**
 * Splits `total` requests of one model at one level over `rounds` blocks as evenly as
 * possible (earlier rounds get the remainder), e.g. 10 over 3 -> [4, 3, 3].
 */
export function splitRequests(total: number, rounds: number): number[] {
  const base = Math.floor(total / rounds);
  const extra = total - base * rounds;
  return Array.from({ length: rounds }, (_, r) => base + (r < extra ? 1 : 0));
}
