/**
 * The special tokens that a `tokenizer.json` post-processor puts around ONE sequence, as Hugging
 * Face `tokenizers` (Rust) computes them in `Tokenizer::encode(text, add_special_tokens=true)`:
 * - `TemplateProcessing`: the `single` template; each `SpecialToken` item contributes the ids
 *   listed for it under `special_tokens` (all of them: one entry may stand for several ids),
 *   and `Sequence` `A` stands for the text's own ids;
 * - `RobertaProcessing` / `BertProcessing`: `cls` before and `sep` after (`[token, id]` pairs);
 * - `ByteLevel`: adds nothing (it only trims offsets);
 * - `Sequence`: its processors applied in order, each one wrapping what the previous produced;
 * - `null` (no post-processor): adds nothing.
 * Source: huggingface/tokenizers, tokenizers/src/processors/{template,roberta,bert,sequence}.rs.
 */

/** Ids added around a single sequence: `[...prefix, ...text ids, ...suffix]`. */
export interface SpecialTokenTemplate {
  prefix: readonly number[];
  suffix: readonly number[];
}

/** No special tokens at all (the text's ids as they are). */
export const NO_SPECIAL_TOKENS: SpecialTokenTemplate = Object.freeze({ prefix: Object.freeze([]), suffix: Object.freeze([]) });

/**
 * The single-sequence template of a `post_processor` object from `tokenizer.json`.
 * @param postProcessor the `post_processor` value (null or undefined: none).
 * @throws Error naming the problem for an unknown processor type, a `single` template without
 *   exactly one `$A` (or with `$B`), or a special token that the template names but does not define.
 */
export function postProcessorTemplate(postProcessor: unknown): SpecialTokenTemplate {
  if (postProcessor === null || postProcessor === undefined) return NO_SPECIAL_TOKENS;
  const p = asObject(postProcessor, 'post_processor');
  switch (p.type) {
    case 'ByteLevel':
      return NO_SPECIAL_TOKENS;
    case 'TemplateProcessing':
      return templateProcessing(p);
    case 'RobertaProcessing':
    case 'BertProcessing':
      return { prefix: [pairId(p.cls, `${p.type}.cls`)], suffix: [pairId(p.sep, `${p.type}.sep`)] };
    case 'Sequence': {
      const processors = p.processors;
      if (!Array.isArray(processors)) throw new Error('post_processor Sequence has no "processors" list');
      let prefix: number[] = [];
      let suffix: number[] = [];
      for (const inner of processors) {
        const t = postProcessorTemplate(inner);
        prefix = [...t.prefix, ...prefix];
        suffix = [...suffix, ...t.suffix];
      }
      return { prefix, suffix };
    }
    default:
      throw new Error(`post_processor type ${JSON.stringify(p.type)} is not supported (supported: TemplateProcessing, ByteLevel, RobertaProcessing, BertProcessing, Sequence)`);
  }
}

function templateProcessing(p: Record<string, unknown>): SpecialTokenTemplate {
  const single = p.single;
  if (!Array.isArray(single)) throw new Error('post_processor TemplateProcessing has no "single" template list');
  const specials = (p.special_tokens ?? {}) as Record<string, { ids?: unknown }>;
  const prefix: number[] = [];
  const suffix: number[] = [];
  let sequences = 0;
  for (const item of single) {
    const piece = asObject(item, 'TemplateProcessing.single item');
    if ('Sequence' in piece) {
      const id = (piece.Sequence as { id?: unknown } | null)?.id;
      if (id !== 'A') throw new Error(`post_processor TemplateProcessing: the single template uses sequence ${JSON.stringify(id)}; only $A is allowed`);
      sequences++;
    } else if ('SpecialToken' in piece) {
      const name = (piece.SpecialToken as { id?: unknown } | null)?.id;
      const entry = typeof name === 'string' && Object.prototype.hasOwnProperty.call(specials, name) ? specials[name] : undefined;
      const ids = entry?.ids;
      if (!Array.isArray(ids) || !ids.every((id) => Number.isInteger(id) && id >= 0)) {
        throw new Error(`post_processor TemplateProcessing: special token ${JSON.stringify(name)} has no ids under "special_tokens"`);
      }
      (sequences === 0 ? prefix : suffix).push(...(ids as number[]));
    } else {
      throw new Error(`post_processor TemplateProcessing: unknown template item ${JSON.stringify(item)}`);
    }
  }
  if (sequences !== 1) throw new Error(`post_processor TemplateProcessing: the single template must contain $A exactly once (found ${sequences})`);
  return { prefix, suffix };
}

function pairId(value: unknown, what: string): number {
  if (!Array.isArray(value) || value.length !== 2 || !Number.isInteger(value[1]) || (value[1] as number) < 0) {
    throw new Error(`post_processor ${what} must be a [token, id] pair, got ${JSON.stringify(value)}`);
  }
  return value[1] as number;
}

function asObject(value: unknown, what: string): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new Error(`${what} is not an object: ${JSON.stringify(value)}`);
  return value as Record<string, unknown>;
}
