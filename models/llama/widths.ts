/**
 * Residual-stream widths of a (possibly sliced) Llama model, read from the weight shapes.
 * Dense: every width is hidden_size. Sliced (SliceGPT, arXiv 2401.15024 §3.4): the embedding
 * writes d' columns, layer l reads `input` and writes `output` columns, and the head reads the
 * last layer's output width (d unless the head was sliced too).
 */
import { W, type LoadedModel } from '../types.js';

export interface LayerWidth {
  /** Width of the residual entering the layer (q/k/v input). */
  input: number;
  /** Width after the attention half (o output, MLP input). */
  middle: number;
  /** Width leaving the layer (down output). */
  output: number;
}

export interface ModelWidths {
  /** Width of the embedding output. */
  embedding: number;
  layers: LayerWidth[];
  /** Width the head reads. */
  head: number;
  /** The RMSNorm divisor: the ORIGINAL hidden_size (SLICEGPT.md §3). */
  normDivisor: number;
}

/**
 * Reads the widths from the weights and checks they chain.
 * @throws Error naming the tensor when a width does not match its neighbour.
 */
export function layerWidths(model: LoadedModel): ModelWidths {
  const shape = (name: string): number[] => {
    const t = model.weights.get(name);
    if (!t) throw new Error(`missing weight ${name}`);
    return t.shape;
  };
  const embedding = shape(W.embed)[1];
  const layers: LayerWidth[] = [];
  let prev = embedding;
  for (let l = 0; l < model.config.num_hidden_layers; l++) {
    const input = shape(W.q(l))[1];
    const middle = shape(W.o(l))[0];
    const output = shape(W.down(l))[0];
    if (input !== prev) throw new Error(`${W.q(l)} reads ${input} columns but the residual is ${prev} wide`);
    if (shape(W.gate(l))[1] !== middle) throw new Error(`${W.gate(l)} reads ${shape(W.gate(l))[1]} columns, expected ${middle}`);
    const sa = model.weights.get(W.attnShortcut(l));
    const sm = model.weights.get(W.mlpShortcut(l));
    if (!sa && input !== middle) throw new Error(`layer ${l} changes width ${input} -> ${middle} without ${W.attnShortcut(l)}`);
    if (!sm && middle !== output) throw new Error(`layer ${l} changes width ${middle} -> ${output} without ${W.mlpShortcut(l)}`);
    if (sa && (sa.shape[0] !== input || sa.shape[1] !== middle)) throw new Error(`${W.attnShortcut(l)} is [${sa.shape}], expected [${input}, ${middle}]`);
    if (sm && (sm.shape[0] !== middle || sm.shape[1] !== output)) throw new Error(`${W.mlpShortcut(l)} is [${sm.shape}], expected [${middle}, ${output}]`);
    layers.push({ input, middle, output });
    prev = output;
  }
  const head = (model.weights.get(W.lmHead) ?? model.weights.get(W.embed))!.shape[1];
  if (head !== prev) throw new Error(`the head reads ${head} columns but the last layer writes ${prev}`);
  return { embedding, layers, head, normDivisor: model.config.hidden_size };
}
