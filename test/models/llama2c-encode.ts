/**
 * Test helper (not product code): a TypeScript port of llama2.c's `encode` (run.c), exactly as
 * PROTOCOL.md section 2 specifies it, used as the ground truth for the Hugging Face-backed
 * tokenizer. It works on raw bytes, like the C code:
 * 1. BOS (1) if asked; 2. the piece " " (dummy prefix) if the text is not empty;
 * 3. each UTF-8 character (a lead byte plus up to 3 continuation bytes) looked up as a piece,
 *    else byte fallback (byte + 3); 4. repeatedly merge the adjacent pair whose concatenation
 *    is the vocabulary piece with the highest score, leftmost on ties; 5. EOS (2) if asked.
 */
import type { Llama2cVocab } from '../../models/tokenizer/index.js';

/** Reference llama2.c encoder over a parsed tok*.bin vocabulary. */
export class Llama2cReferenceEncoder {
  /** Piece bytes as latin1 strings (one char per byte) -> id. */
  private readonly ids = new Map<string, number>();
  private readonly pieces: string[];
  private readonly scores: number[];

  constructor(vocab: Llama2cVocab) {
    this.pieces = vocab.pieces.map((p) => Buffer.from(p.bytes).toString('latin1'));
    this.scores = vocab.pieces.map((p) => p.score);
    // llama2.c binary-searches a sorted copy; with unique pieces that is a plain lookup.
    this.pieces.forEach((p, id) => { if (!this.ids.has(p)) this.ids.set(p, id); });
  }

  /** Id of the piece with these bytes (latin1 string), or -1 (llama2.c `str_lookup`). */
  private lookup(piece: string): number {
    return this.ids.get(piece) ?? -1;
  }

  /** Id of the concatenation of the pieces of tokens `a` and `b`, or -1. */
  private mergeOf(a: number, b: number): number {
    return this.lookup(this.pieces[a]! + this.pieces[b]!);
  }

  /** Steps 1-3: BOS, dummy prefix, characters or their bytes. */
  private initialTokens(text: string | Uint8Array, bos: boolean): number[] {
    const bytes = typeof text === 'string' ? Buffer.from(text, 'utf8') : Buffer.from(text);
    const tokens: number[] = [];
    if (bos) tokens.push(1);
    if (bytes.length > 0) {
      const dummyPrefix = this.lookup(' ');
      if (dummyPrefix < 0) throw new Error('vocabulary has no " " piece');
      tokens.push(dummyPrefix);
    }
    let buffer: number[] = [];
    for (let i = 0; i < bytes.length; i++) {
      const c = bytes[i]!;
      if ((c & 0xc0) !== 0x80) buffer = [];
      buffer.push(c);
      const next = i + 1 < bytes.length ? bytes[i + 1]! : 0;
      if ((next & 0xc0) === 0x80 && buffer.length < 4) continue;
      const id = this.lookup(Buffer.from(buffer).toString('latin1'));
      if (id !== -1) tokens.push(id);
      else for (const b of buffer) tokens.push(b + 3);
      buffer = [];
    }
    return tokens;
  }

  /**
   * Token ids of `text` (a string is encoded as UTF-8 first), with the merge loop of the C
   * code: scan all adjacent pairs, merge the best, repeat. (Each pair's lookup is cached and
   * refreshed after a merge rather than redone on every scan; that does not change the result.)
   */
  encode(text: string | Uint8Array, bos = true, eos = false): number[] {
    const tokens = this.initialTokens(text, bos);
    const pairs: number[] = [];
    for (let i = 0; i + 1 < tokens.length; i++) pairs.push(this.mergeOf(tokens[i]!, tokens[i + 1]!));
    for (;;) {
      let bestScore = -1e10;
      let bestId = -1;
      let bestIndex = -1;
      for (let i = 0; i < pairs.length; i++) {
        const id = pairs[i]!;
        if (id !== -1 && this.scores[id]! > bestScore) {
          bestScore = this.scores[id]!;
          bestId = id;
          bestIndex = i;
        }
      }
      if (bestIndex === -1) break;
      tokens[bestIndex] = bestId;
      tokens.splice(bestIndex + 1, 1);
      pairs.splice(bestIndex, 1);
      if (bestIndex > 0) pairs[bestIndex - 1] = this.mergeOf(tokens[bestIndex - 1]!, tokens[bestIndex]!);
      if (bestIndex < pairs.length) pairs[bestIndex] = this.mergeOf(tokens[bestIndex]!, tokens[bestIndex + 1]!);
    }
    if (eos) tokens.push(2);
    return tokens;
  }

  /**
   * The same result as {@link encode}, with the best pair found by a priority queue (highest
   * score, then leftmost) instead of a scan, so that a text of a million bytes (WikiText-2) can
   * be encoded as ONE string. Checked against {@link encode} in the tests.
   */
  encodeWithHeap(text: string | Uint8Array, bos = true): number[] {
    const ids = this.initialTokens(text, bos);
    const n = ids.length;
    const next = Int32Array.from({ length: n }, (_, i) => (i + 1 < n ? i + 1 : -1));
    const prev = Int32Array.from({ length: n }, (_, i) => i - 1);
    const version = new Int32Array(n);
    const alive = new Uint8Array(n).fill(1);
    const heap = new PairHeap();
    const consider = (left: number) => {
      const right = left >= 0 ? next[left]! : -1;
      if (right < 0) return;
      const merged = this.mergeOf(ids[left]!, ids[right]!);
      if (merged !== -1) heap.push({ score: this.scores[merged]!, left, right, vl: version[left]!, vr: version[right]!, merged });
    };
    for (let i = 0; i + 1 < n; i++) consider(i);
    while (heap.size > 0) {
      const e = heap.pop();
      // Skip entries made stale by an earlier merge of either token.
      if (!alive[e.left] || !alive[e.right] || next[e.left] !== e.right || version[e.left] !== e.vl || version[e.right] !== e.vr) continue;
      ids[e.left] = e.merged;
      version[e.left]! += 1;
      alive[e.right] = 0;
      next[e.left] = next[e.right]!;
      if (next[e.right]! >= 0) prev[next[e.right]!] = e.left;
      consider(prev[e.left]!);
      consider(e.left);
    }
    const out: number[] = [];
    for (let i = n > 0 ? 0 : -1; i >= 0; i = next[i]!) out.push(ids[i]!);
    return out;
  }
}

interface PairEntry { score: number; left: number; right: number; vl: number; vr: number; merged: number }

/** Binary max-heap on (score, then smaller left index = leftmost). */
class PairHeap {
  private readonly items: PairEntry[] = [];
  get size(): number { return this.items.length; }
  private static before(a: PairEntry, b: PairEntry): boolean {
    return a.score > b.score || (a.score === b.score && a.left < b.left);
  }
  push(e: PairEntry): void {
    const h = this.items;
    h.push(e);
    for (let i = h.length - 1; i > 0;) {
      const parent = (i - 1) >> 1;
      if (!PairHeap.before(h[i]!, h[parent]!)) break;
      [h[i], h[parent]] = [h[parent]!, h[i]!];
      i = parent;
    }
  }
  pop(): PairEntry {
    const h = this.items;
    const top = h[0]!;
    const last = h.pop()!;
    if (h.length > 0) {
      h[0] = last;
      for (let i = 0; ;) {
        const l = 2 * i + 1;
        let best = i;
        if (l < h.length && PairHeap.before(h[l]!, h[best]!)) best = l;
        if (l + 1 < h.length && PairHeap.before(h[l + 1]!, h[best]!)) best = l + 1;
        if (best === i) break;
        [h[i], h[best]] = [h[best]!, h[i]!];
        i = best;
      }
    }
    return top;
  }
}
