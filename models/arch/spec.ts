/**
 * What a model family tells the rest of SliceServe: how to read its config.json, and where its
 * tensors are (the weight LAYOUT: which tensors write the residual stream, which read it,
 * which norms sit in front of which readers). The graph builder (models/onnx/), the slicer
 * (slicer/) and the loaders read only this; none of them names a family.
 * Patterns: microsoft/TransformerCompression's `ModelAdapter`, transformers.js' config
 * normalisation, vLLM's model registry.
 *
 * How to add a family:
 * 1. Create models/arch/<family>/index.ts exporting one {@link Architecture}: its
 *    `architectures` names, a `parseConfig` that reads the family's config.json into a
 *    DecoderConfig (models/config.ts; refuse variants you do not implement with a
 *    ModelLoadError that says what is unsupported), and a `layout` built with
 *    {@link buildLayout} from the family's tensor names.
 * 2. If the checkpoint stores tensors differently from the layout (fused projections, a
 *    missing `model.` prefix), convert them in `fromCheckpoint`.
 * 3. Add it to models/registry.ts, and a tiny checkpoint written by transformers to
 *    test/fixtures/transformers/<variant>/ (scripts/transformers-goldens.py): the family suite
 *    (test/models/arch/contract.test.ts, test/models/transformers-goldens.test.ts,
 *    test/cli/families.test.ts) runs every fixture through the same checks, and fails while a
 *    registered architecture has no fixture.
 * A feature the shared graph emitters (models/onnx/blocks.ts) do not have yet (a new norm,
 * activation or block kind) is added there, driven by a DecoderConfig field, never by a
 * family name.
 */
import { normsFused, type DecoderConfig } from '../config.js';
import type { WeightMap } from '../types.js';

/** A linear layer `y = x W^T + b`, W stored [out, in]. */
export interface LinearNames {
  weight: string;
  /** Absent when the layer has no bias. */
  bias?: string;
}

/** A norm's parameters. Both absent: a weightless norm (after SliceGPT's fusion). */
export interface NormNames {
  weight?: string;
  bias?: string;
}

/** Where one decoder layer's tensors are. */
export interface LayerLayout {
  /** The norm in front of attention (for parallel blocks: the layer's only norm). */
  inputNorm: NormNames;
  q: LinearNames;
  k: LinearNames;
  v: LinearNames;
  /** Attention output: WRITES the residual. */
  o: LinearNames;
  /** Per-head q/k norms (DecoderConfig.qk_norm), inside attention; never sliced. */
  qNorm?: NormNames;
  kNorm?: NormNames;
  /** The norm in front of the MLP (sequential blocks only). */
  postAttentionNorm?: NormNames;
  /** The gate projection (gated MLPs only). */
  gate?: LinearNames;
  /** The MLP input (up_proj, or fc1). */
  up: LinearNames;
  /** The MLP output (down_proj, or fc2): WRITES the residual. */
  down: LinearNames;
  /**
   * SliceGPT shortcut matrices, stored [in, out] (present only in sliced models): sequential
   * blocks `h = x @ attnShortcut + attn(norm(x))`, `out = h @ mlpShortcut + mlp(norm(h))`;
   * parallel blocks one shortcut, `out = x @ attnShortcut + attn(n) + mlp(n)`.
   */
  attnShortcut: string;
  /** Sequential blocks only. */
  mlpShortcut?: string;
}

/** Where every tensor of a model is. */
export interface DecoderLayout {
  /** Token embedding [vocab, d]: writes the residual. */
  embedTokens: string;
  /** Learned position embedding [positions + offset, d]: writes the residual. */
  embedPositions?: string;
  layers: LayerLayout[];
  finalNorm: NormNames;
  /** The head [vocab, d]; absent from the weights when tied (the embedding is used). */
  lmHead: LinearNames;
}

/** A model family: its names, config parser and weight layout. */
export interface Architecture {
  /** The family's name in messages and docs ("Llama", "OPT"). */
  readonly family: string;
  /** config.json `architectures` values it serves (e.g. LlamaForCausalLM). */
  readonly architectures: readonly string[];
  /** config.json `model_type` values it serves (used when `architectures` is missing). */
  readonly modelTypes: readonly string[];
  /**
   * Reads the family's config.json into a DecoderConfig (keeping `json` as `source`), filling
   * transformers' defaults for that family.
   * @throws ModelLoadError naming `file`: a missing or ill-typed field, an unsupported
   *   variant (saying what is unsupported and what is), inconsistent sizes.
   */
  parseConfig(json: Record<string, unknown>, file: string): DecoderConfig;
  /** The tensors a model with `config` has (a sliced config: fused norms, shortcuts). */
  layout(config: DecoderConfig): DecoderLayout;
  /**
   * Converts tensors as a checkpoint stores them into the layout's names and shapes (split
   * fused projections, add a missing prefix). Default: unchanged.
   * @throws ModelLoadError for a tensor that cannot be converted.
   */
  fromCheckpoint?(weights: WeightMap, config: DecoderConfig, file: string): WeightMap;
  /**
   * The config.json object of a model built in memory (no `source`), e.g. a converted llama2.c
   * checkpoint. Families that are only ever loaded from config.json need not implement it.
   */
  configJson?(config: DecoderConfig): Record<string, unknown>;
}

/** Tensor names of a family, from which {@link buildLayout} makes a layout. */
export interface FamilyNames {
  embedTokens: string;
  embedPositions?: string;
  /** Prefix of layer l's tensors, e.g. `model.layers.${l}`. */
  layerPrefix(l: number): string;
  /** Names relative to the layer prefix, without `.weight` / `.bias`. */
  inputNorm: string;
  q: string;
  k: string;
  v: string;
  o: string;
  qNorm?: string;
  kNorm?: string;
  /** Sequential blocks only. */
  postAttentionNorm?: string;
  /** Gated MLPs only. */
  gate?: string;
  up: string;
  down: string;
  /** Without `.weight` / `.bias`. */
  finalNorm: string;
  lmHead: string;
}

/** Which linear layers of the DENSE model carry a bias. */
export interface DenseBiases {
  q: boolean;
  k: boolean;
  v: boolean;
  o: boolean;
  /** gate and up (or fc1). */
  mlpIn: boolean;
  /** down (or fc2). */
  mlpOut: boolean;
  lmHead: boolean;
}

export const NO_BIASES: DenseBiases = { q: false, k: false, v: false, o: false, mlpIn: false, mlpOut: false, lmHead: false };

/**
 * The layout of a model of `config` with tensor names `names` and dense biases `biases`.
 * Dense: norms have a weight (and a bias for LayerNorm), biases as given. Fused or sliced
 * (config.ts `normsFused`): norms are weightless (fused, SliceGPT §3.1); for LayerNorm families
 * every reader of a norm (q, k, v, gate/up or fc1, the head) carries a bias, into which the
 * norm's bias was folded; shortcut matrices per layer. q/k norms are never fused.
 */
export function buildLayout(config: DecoderConfig, names: FamilyNames, biases: DenseBiases): DecoderLayout {
  const sliced = normsFused(config);
  const layerNorm = config.norm === 'layer';
  const readerBias = (dense: boolean) => dense || (sliced && layerNorm);
  const norm = (base: string): NormNames => (sliced ? {} : layerNorm ? { weight: `${base}.weight`, bias: `${base}.bias` } : { weight: `${base}.weight` });
  const headNorm = (base: string): NormNames => (config.qk_norm === 'layer' ? { weight: `${base}.weight`, bias: `${base}.bias` } : { weight: `${base}.weight` });
  const linear = (base: string, bias: boolean): LinearNames => (bias ? { weight: `${base}.weight`, bias: `${base}.bias` } : { weight: `${base}.weight` });
  const parallel = config.block === 'parallel';
  const layers: LayerLayout[] = [];
  for (let l = 0; l < config.num_hidden_layers; l++) {
    const p = names.layerPrefix(l);
    const layer: LayerLayout = {
      inputNorm: norm(`${p}.${names.inputNorm}`),
      q: linear(`${p}.${names.q}`, readerBias(biases.q)),
      k: linear(`${p}.${names.k}`, readerBias(biases.k)),
      v: linear(`${p}.${names.v}`, readerBias(biases.v)),
      o: linear(`${p}.${names.o}`, biases.o),
      up: linear(`${p}.${names.up}`, readerBias(biases.mlpIn)),
      down: linear(`${p}.${names.down}`, biases.mlpOut),
      attnShortcut: `${p}.attn_shortcut_Q`,
    };
    if (config.qk_norm) {
      if (!names.qNorm || !names.kNorm) throw new Error(`${config.architectures.join(', ')}: qk_norm without q/k norm names`);
      layer.qNorm = headNorm(`${p}.${names.qNorm}`);
      layer.kNorm = headNorm(`${p}.${names.kNorm}`);
    }
    if (!parallel) {
      if (!names.postAttentionNorm) throw new Error(`${config.architectures.join(', ')}: sequential blocks need a post-attention norm name`);
      layer.postAttentionNorm = norm(`${p}.${names.postAttentionNorm}`);
      layer.mlpShortcut = `${p}.mlp_shortcut_Q`;
    }
    if (config.gated_mlp) {
      if (!names.gate) throw new Error(`${config.architectures.join(', ')}: a gated MLP needs a gate name`);
      layer.gate = linear(`${p}.${names.gate}`, readerBias(biases.mlpIn));
    }
    layers.push(layer);
  }
  return {
    embedTokens: names.embedTokens,
    ...(names.embedPositions ? { embedPositions: names.embedPositions } : {}),
    layers,
    finalNorm: norm(names.finalNorm),
    lmHead: linear(names.lmHead, biases.lmHead || (sliced && layerNorm)),
  };
}

/** The linear layers of a layer that READ the residual before attention (q, k, v). */
export function attentionReaders(layer: LayerLayout): LinearNames[] {
  return [layer.q, layer.k, layer.v];
}

/** The linear layers that read the residual before the MLP (gate and up, or fc1). */
export function mlpReaders(layer: LayerLayout): LinearNames[] {
  return layer.gate ? [layer.gate, layer.up] : [layer.up];
}
