/**
 * Residual-stream widths of a (possibly sliced) model, read from the weight shapes through the
 * family layout. Dense: every width is hidden_size. Sliced (SliceGPT, arXiv 2401.15024 §3.4):
 * the embedding writes d' columns, layer l reads `input` and writes `output` columns, and the
 * head reads the last layer's output width (d unless the head was sliced too).
 */
import type { DecoderLayout } from './arch/spec.js';
import { layoutOf } from './registry.js';
import type { LoadedModel } from './types.js';

export interface LayerWidth {
  /** Width of the residual entering the layer (q/k/v input). */
  input: number;
  /** Width after the attention half (o output, MLP input); equal to `input` for parallel blocks. */
  middle: number;
  /** Width leaving the layer (down / fc2 output). */
  output: number;
}

export interface ModelWidths {
  /** Width of the embedding output. */
  embedding: number;
  layers: LayerWidth[];
  /** Width the head reads. */
  head: number;
  /** The norm divisor: the ORIGINAL hidden_size (SLICEGPT.md §3). */
  normDivisor: number;
}

/**
 * Reads the widths from the weights and checks they chain.
 * @throws Error naming the tensor when a width does not match its neighbour.
 */
export function modelWidths(model: Pick<LoadedModel, 'config' | 'weights'>, layout: DecoderLayout = layoutOf(model.config)): ModelWidths {
  const shape = (name: string): number[] => {
    const t = model.weights.get(name);
    if (!t) throw new Error(`missing weight ${name}`);
    return t.shape;
  };
  const embedding = shape(layout.embedTokens)[1];
  const layers: LayerWidth[] = [];
  let prev = embedding;
  const parallel = model.config.block === 'parallel';
  layout.layers.forEach((layer, l) => {
    const input = shape(layer.q.weight)[1];
    const attnOut = shape(layer.o.weight)[0];
    const middle = parallel ? input : attnOut;
    const output = shape(layer.down.weight)[0];
    if (input !== prev) throw new Error(`${layer.q.weight} reads ${input} columns but the residual is ${prev} wide`);
    if (shape(layer.up.weight)[1] !== middle) throw new Error(`${layer.up.weight} reads ${shape(layer.up.weight)[1]} columns, expected ${middle}`);
    if (parallel && attnOut !== output) throw new Error(`${layer.o.weight} writes ${attnOut} rows but ${layer.down.weight} writes ${output} (a parallel block writes one width)`);
    const sa = model.weights.get(layer.attnShortcut);
    const sm = layer.mlpShortcut ? model.weights.get(layer.mlpShortcut) : undefined;
    const attnTo = parallel ? output : middle;
    if (!sa && input !== attnTo) throw new Error(`layer ${l} changes width ${input} -> ${attnTo} without ${layer.attnShortcut}`);
    if (sa && (sa.shape[0] !== input || sa.shape[1] !== attnTo)) throw new Error(`${layer.attnShortcut} is [${sa.shape}], expected [${input}, ${attnTo}]`);
    if (!parallel) {
      if (!sm && middle !== output) throw new Error(`layer ${l} changes width ${middle} -> ${output} without ${layer.mlpShortcut}`);
      if (sm && (sm.shape[0] !== middle || sm.shape[1] !== output)) throw new Error(`${layer.mlpShortcut} is [${sm.shape}], expected [${middle}, ${output}]`);
    }
    layers.push({ input, middle, output });
    prev = output;
  });
  const head = (model.weights.get(layout.lmHead.weight) ?? model.weights.get(layout.embedTokens))!.shape[1];
  if (head !== prev) throw new Error(`the head reads ${head} columns but the last layer writes ${prev}`);
  return { embedding, layers, head, normDivisor: model.config.hidden_size };
}
