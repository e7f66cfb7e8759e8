/**
 * llama2.c tokenizer files (`tokenizer.bin`, `tok512.bin`, ...) and their conversion into a
 * Hugging Face `tokenizer.json`.
 *
 * File format (llama2.c `tokenizer.py` export, read by `run.c` `build_tokenizer`):
 * an int32 `max_token_length`, then for each of the `vocab_size` tokens a float32 score, an
 * int32 byte length and that many bytes (the piece; SentencePiece's '▁' already replaced by
 * ' '). Ids 0, 1, 2 are `<unk>`, BOS (`\n<s>\n`) and EOS (`\n</s>\n`); byte-fallback pieces are
 * spelled `<0x00>`..`<0xFF>`. All integers and floats little-endian.
 */
import * as fs from 'node:fs';
import { ModelLoadError } from '../types.js';

/** One vocabulary entry of a llama2.c tokenizer. */
export interface Llama2cPiece {
  /** Raw bytes of the piece. */
  bytes: Uint8Array;
  /** Merge score: llama2.c merges the pair whose concatenation has the highest score. */
  score: number;
}

/** A parsed llama2.c tokenizer file. */
export interface Llama2cVocab {
  maxTokenLength: number;
  /** Pieces by token id. */
  pieces: Llama2cPiece[];
}

/** Ids of the special tokens in every llama2.c tokenizer (SentencePiece's Llama layout). */
export const LLAMA2C_UNK_ID = 0;
export const LLAMA2C_BOS_ID = 1;
export const LLAMA2C_EOS_ID = 2;
/** Hugging Face spellings of the special tokens 0, 1, 2. */
export const SPECIAL_TOKENS = ['<unk>', '<s>', '</s>'] as const;

/**
 * Parses a llama2.c tokenizer file.
 * @param file path (used to read, and to name the file in errors).
 * @param vocabSize number of tokens, from the checkpoint header (the file does not store it).
 *   When omitted, entries are read to the end of the file.
 * @throws ModelLoadError naming `file` if it is missing, truncated inside an entry, has a
 *   negative length, has fewer entries than `vocabSize`, or bytes left after `vocabSize` entries.
 */
export function readLlama2cVocab(file: string, vocabSize?: number): Llama2cVocab {
  let buf: Buffer;
  try {
    buf = fs.readFileSync(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ModelLoadError(file, code === 'ENOENT' ? 'tokenizer file not found' : `cannot read: ${(err as Error).message}`);
  }
  return parseLlama2cVocab(buf, file, vocabSize);
}

/** {@link readLlama2cVocab} on bytes already in memory. */
export function parseLlama2cVocab(buf: Uint8Array, file: string, vocabSize?: number): Llama2cVocab {
  const view = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  if (view.length < 4) throw new ModelLoadError(file, `not a llama2.c tokenizer: only ${view.length} bytes`);
  const maxTokenLength = view.readInt32LE(0);
  if (maxTokenLength <= 0 || maxTokenLength > 1024) {
    throw new ModelLoadError(file, `not a llama2.c tokenizer: max_token_length ${maxTokenLength} is not in 1..1024`);
  }
  const pieces: Llama2cPiece[] = [];
  let offset = 4;
  while (vocabSize === undefined ? offset < view.length : pieces.length < vocabSize) {
    const id = pieces.length;
    if (offset + 8 > view.length) {
      throw new ModelLoadError(file, `truncated: ends inside token ${id}` +
        (vocabSize === undefined ? '' : ` but the checkpoint's vocab_size is ${vocabSize}`) + ` (${view.length} bytes)`);
    }
    const score = view.readFloatLE(offset);
    const length = view.readInt32LE(offset + 4);
    if (length < 0 || length > maxTokenLength) {
      throw new ModelLoadError(file, `token ${id} has length ${length}, outside 0..max_token_length (${maxTokenLength})`);
    }
    if (offset + 8 + length > view.length) {
      throw new ModelLoadError(file, `truncated: ends inside token ${id} (${view.length} bytes)`);
    }
    pieces.push({ bytes: Uint8Array.from(view.subarray(offset + 8, offset + 8 + length)), score });
    offset += 8 + length;
  }
  if (offset !== view.length) {
    throw new ModelLoadError(file, `${view.length - offset} bytes left after ${pieces.length} tokens; ` +
      `the checkpoint's vocab_size (${pieces.length}) does not match this tokenizer`);
  }
  if (pieces.length < 3) throw new ModelLoadError(file, `only ${pieces.length} tokens; expected <unk>, BOS, EOS and more`);
  return { maxTokenLength, pieces };
}

/**
 * Converts a llama2.c vocabulary into a Hugging Face `tokenizer.json` object that encodes
 * exactly like llama2.c `encode` (PROTOCOL.md section 2):
 * - `normalizer`: Prepend(" "), the SentencePiece dummy prefix (not added to empty text);
 * - `model`: BPE with `byte_fallback` (characters missing from the vocabulary become their
 *   UTF-8 bytes `<0xNN>`), pieces spelled with raw spaces (not '▁'), and merges derived from
 *   the scores: for every piece, every split into two vocabulary pieces is a merge, and merges
 *   are ranked by the piece's score, highest first (ties: lower id first). llama2.c merges, at
 *   each step, the adjacent pair whose concatenation is the highest-scoring piece, leftmost on
 *   ties; BPE merges the lowest-ranked pair, leftmost on ties, which is the same rule as long
 *   as no two different pieces have the same score (true of tok512 and Llama 2's vocabulary);
 * - ids 0/1/2 as special added tokens `<unk>`, `<s>`, `</s>`;
 * - `post_processor`: prepend `<s>` (what `transformers` users expect of a Llama tokenizer);
 * - `decoder`: ByteFallback + Fuse + Strip one leading space (undoes the dummy prefix).
 *
 * @param source file name for errors.
 * @throws ModelLoadError naming `source` if a piece is not valid UTF-8 or two pieces are equal.
 */
export function llama2cVocabToTokenizerJson(vocab: Llama2cVocab, source: string): Record<string, unknown> {
  const decoder = new TextDecoder('utf-8', { fatal: true });
  const strings: string[] = vocab.pieces.map((p, id) => {
    if (id < SPECIAL_TOKENS.length) return SPECIAL_TOKENS[id]!;
    try {
      return decoder.decode(p.bytes);
    } catch {
      throw new ModelLoadError(source, `token ${id} is not valid UTF-8 (bytes ${Buffer.from(p.bytes).toString('hex')})`);
    }
  });
  const vocabMap: Record<string, number> = Object.create(null);
  strings.forEach((s, id) => {
    if (s in vocabMap) throw new ModelLoadError(source, `tokens ${vocabMap[s]} and ${id} are the same piece ${JSON.stringify(s)}`);
    vocabMap[s] = id;
  });

  // Every split of every piece into two (non-special) vocabulary pieces is a merge.
  const isMergeable = (s: string) => { const id = vocabMap[s]; return id !== undefined && id >= SPECIAL_TOKENS.length; };
  const candidates: { score: number; id: number; split: number; pair: [string, string] }[] = [];
  for (let id = SPECIAL_TOKENS.length; id < strings.length; id++) {
    const chars = Array.from(strings[id]!);
    for (let k = 1; k < chars.length; k++) {
      const left = chars.slice(0, k).join('');
      const right = chars.slice(k).join('');
      if (isMergeable(left) && isMergeable(right)) {
        candidates.push({ score: vocab.pieces[id]!.score, id, split: k, pair: [left, right] });
      }
    }
  }
  candidates.sort((a, b) => b.score - a.score || a.id - b.id || a.split - b.split);

  const specials = SPECIAL_TOKENS.map((content, id) => ({
    id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true,
  }));
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: specials,
    normalizer: { type: 'Prepend', prepend: ' ' },
    pre_tokenizer: null,
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [
        { SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } },
        { SpecialToken: { id: '<s>', type_id: 1 } }, { Sequence: { id: 'B', type_id: 1 } },
      ],
      special_tokens: { '<s>': { id: '<s>', ids: [LLAMA2C_BOS_ID], tokens: ['<s>'] } },
    },
    decoder: {
      type: 'Sequence',
      decoders: [
        { type: 'ByteFallback' },
        { type: 'Fuse' },
        { type: 'Strip', content: ' ', start: 1, stop: 0 },
      ],
    },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: '<unk>',
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: true,
      ignore_merges: false,
      vocab: vocabMap,
      merges: candidates.map((c) => c.pair),
    },
  };
}
