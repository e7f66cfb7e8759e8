/**
 * Seeded pseudo-random numbers for linear-algebra tests and benchmarks (not for sampling
 * tokens): mulberry32 for uniforms, Box-Muller for standard normals. Same seed, same numbers,
 * on every platform.
 */

/** A generator of uniforms in [0, 1) from a 32-bit seed (mulberry32). */
export function uniformGenerator(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `count` independent standard normal samples (Box-Muller on {@link uniformGenerator}). */
export function seededNormals(count: number, seed: number): Float64Array {
  const uniform = uniformGenerator(seed);
  const out = new Float64Array(count);
  for (let i = 0; i < count; i += 2) {
    const u1 = 1 - uniform(); // (0, 1]: log is finite
    const u2 = uniform();
    const r = Math.sqrt(-2 * Math.log(u1));
    out[i] = r * Math.cos(2 * Math.PI * u2);
    if (i + 1 < count) out[i + 1] = r * Math.sin(2 * Math.PI * u2);
  }
  return out;
}
