/**
 * A whole model with quantized weights: which tensors a precision quantizes (every linear
 * layer; the head and SliceGPT's shortcut matrices as the preset says; never the embedding
 * Gather), the quantized tensors that replace them, and the way back (dequantize) for tests and
 * measurements. The graph builder (models/onnx/) emits a `com.microsoft.MatMulNBits` for every
 * tensor found in {@link ModelQuantization.tensors}.
 *
 * Tensors are quantized one at a time; with `consume` the float tensor leaves the source map as
 * soon as its quantized form exists, so quantizing never holds a second float32 copy of the
 * model (peak: the float model plus one tensor's codes).
 */
import { layoutOf } from '../registry.js';
import type { LoadedModel, WeightMap, WeightTensor } from '../types.js';
import { dequantizeBlockwise, quantizeBlockwise, quantizedWeightBytes, type BlockQuantizedWeight } from './blockwise.js';
import type { AccuracyLevel } from './emit.js';
import { matMulNBitsLayout, QuantizationError, type BlockQuantOptions } from './layout.js';
import { QUANT_PRESETS, type QuantPreset, type QuantPresetName } from './presets.js';

/** A float tensor replaced by its MatMulNBits form. */
export interface QuantizedTensor {
  /** Shape of the float tensor it replaces: [out, in] for linears and the head, [in, out] for shortcuts. */
  readonly shape: readonly number[];
  /** What MatMulNBits reads: the [out, in] = [N, K] weight (a shortcut's transpose). */
  readonly q: BlockQuantizedWeight;
  /** True when {@link shape} is [in, out] (a shortcut, applied as `x @ S`): `q` holds S^T. */
  readonly transposed: boolean;
  /** MatMulNBits accuracy_level the graph multiplies it with. */
  readonly accuracyLevel: AccuracyLevel;
}

/** Whether a weight is a {@link QuantizedTensor} (else a float {@link WeightTensor}). */
export function isQuantized(t: WeightTensor | QuantizedTensor): t is QuantizedTensor {
  return (t as QuantizedTensor).q !== undefined;
}

/** The residual-basis rotation applied before quantizing (slicer/random-rotation.ts), recorded with the weights. */
export interface QuantRotationInfo {
  kind: 'random-orthogonal';
  /** Seed of the rotations (one per residual width, seeded by seed + width). */
  seed: number;
}

/** What a quantized model carries about its quantization (LoadedModel.quantization). */
export interface ModelQuantization {
  /** The preset's name, as `--quantize` takes it. */
  preset: QuantPresetName;
  /** The options every kind of weight got (the preset's values when it was quantized). */
  options: QuantPreset;
  /** Rotation of the residual stream applied to the float weights before quantizing, or null. */
  rotation: QuantRotationInfo | null;
  /** Quantized tensors by the name of the float tensor they replace (a tied head: the head's name). */
  tensors: Map<string, QuantizedTensor>;
}

/** What a preset does to each kind of weight. */
export type QuantRole = 'linear' | 'head' | 'shortcut';

/** One tensor a precision quantizes. */
export interface QuantPlanEntry {
  /** Name of the quantized tensor (the layout's name; for a tied head, the head's name). */
  name: string;
  /** The float tensor it is made from (differs from `name` for a tied head: the embedding). */
  source: string;
  role: QuantRole;
  options: BlockQuantOptions;
  /** Stored [in, out] (shortcuts): the transpose is quantized. */
  transposed: boolean;
}

/** The preset named `name`. @throws QuantizationError naming the valid names. */
export function quantPreset(name: string): QuantPreset {
  const preset = (QUANT_PRESETS as Record<string, QuantPreset>)[name];
  if (!preset) throw new QuantizationError(`unknown quantization ${JSON.stringify(name)}; use ${Object.keys(QUANT_PRESETS).join(' or ')}`);
  return preset;
}

/**
 * Which tensors of `model` a preset quantizes, in layout order: q, k, v, o, gate, up, down of
 * every layer (`linear`), the shortcut matrices a sliced model has (`shortcuts`), the head
 * (`head`; a tied head is quantized from the embedding, which stays float for the Gather).
 * @throws QuantizationError when the preset quantizes the embedding (no graph support: a
 *   GatherBlockQuantized is not emitted).
 */
export function quantizationPlan(model: Pick<LoadedModel, 'config' | 'weights'>, preset: QuantPreset): QuantPlanEntry[] {
  if (preset.embedding) throw new QuantizationError('quantizing the token embedding is not supported (the graph gathers float rows); set embedding: null');
  const layout = layoutOf(model.config);
  const plan: QuantPlanEntry[] = [];
  const add = (name: string, role: QuantRole, options: BlockQuantOptions | null, transposed = false, source = name) => {
    if (options) plan.push({ name, source, role, options, transposed });
  };
  for (const layer of layout.layers) {
    for (const lin of [layer.q, layer.k, layer.v, layer.o, ...(layer.gate ? [layer.gate] : []), layer.up, layer.down]) add(lin.weight, 'linear', preset.linear);
    for (const s of [layer.attnShortcut, layer.mlpShortcut]) if (s && model.weights.has(s)) add(s, 'shortcut', preset.shortcuts, true);
  }
  const head = layout.lmHead.weight;
  add(head, 'head', preset.head, false, model.weights.has(head) ? head : layout.embedTokens);
  return plan;
}

function transpose(t: WeightTensor): WeightTensor {
  const [a, b] = t.shape;
  const out = new Float32Array(a * b);
  const data = t.data; // once: a lazy tensor produces its values on each read
  for (let i = 0; i < a; i++) {
    const row = i * b;
    for (let j = 0; j < b; j++) out[j * a + i] = data[row + j];
  }
  return { shape: [b, a], data: out };
}

/** Options of {@link quantizeModel}. */
export interface QuantizeModelOptions {
  /**
   * Take the float tensors out of `model.weights` as they are quantized (default false), so
   * that the float32 copy is freed tensor by tensor; the input model must not be used after.
   */
  consume?: boolean;
  /** Override the preset's accuracy_level (tests compare level 0 with a float reference). */
  accuracyLevel?: AccuracyLevel;
  /** The rotation already applied to `model`'s weights, to record (default none). */
  rotation?: QuantRotationInfo | null;
  /** Called after each tensor (progress: done of total). */
  onTensor?: (done: number, total: number, name: string) => void;
  /**
   * Tensors to transform before use (a residual rotation, slicer/random-rotation.ts): each
   * named one is replaced by what its function returns, computed when it is needed and let go
   * once quantized, so no transformed float copy of the quantized weights is ever held whole.
   */
  transform?: ReadonlyMap<string, () => Promise<WeightTensor>>;
}

/**
 * Quantizes `model` with a preset (models/quant/presets.ts): every tensor of
 * {@link quantizationPlan} becomes a {@link QuantizedTensor}; the rest (embedding, norms,
 * biases) stays float. The result has id `<id>-<preset>`.
 * @throws QuantizationError for a model that is already quantized, an unknown preset, or a
 *   tensor that cannot be quantized (NaN/Infinity, bad shape: the message names it).
 */
export async function quantizeModel(model: LoadedModel, presetName: QuantPresetName, options: QuantizeModelOptions = {}): Promise<LoadedModel> {
  if (model.quantization) throw new QuantizationError(`${model.id} is already quantized (${model.quantization.preset}); quantize its float model instead`);
  const preset = quantPreset(presetName);
  const accuracyLevel = options.accuracyLevel ?? preset.accuracyLevel;
  const plan = quantizationPlan(model, preset);
  const quantized = new Set(plan.map((p) => p.source));
  const transform = options.transform ?? new Map<string, () => Promise<WeightTensor>>();
  // The tensors that stay float (embedding, norms, biases), transformed now.
  const weights: WeightMap = new Map();
  for (const [name, t] of model.weights) {
    if (quantized.has(name) && name !== layoutOf(model.config).embedTokens) continue;
    const f = transform.get(name);
    weights.set(name, f ? await f() : t);
  }
  const tensors = new Map<string, QuantizedTensor>();
  for (const [i, p] of plan.entries()) {
    const f = weights.has(p.source) ? undefined : transform.get(p.source);
    const t = f ? await f() : (weights.get(p.source) ?? model.weights.get(p.source));
    if (!t) throw new QuantizationError(`${model.id}: missing weight ${p.source}`);
    let q: BlockQuantizedWeight;
    try {
      q = quantizeBlockwise(p.transposed ? transpose(t) : t, p.options);
    } catch (err) {
      throw new QuantizationError(`${p.source}: ${(err as Error).message}`);
    }
    tensors.set(p.name, { shape: [...t.shape], q, transposed: p.transposed, accuracyLevel });
    if (options.consume && !weights.has(p.source)) model.weights.delete(p.source);
    options.onTensor?.(i + 1, plan.length, p.name);
  }
  return {
    ...model,
    id: `${model.id}-${presetName}`,
    weights,
    quantization: { preset: presetName, options: { ...preset, accuracyLevel }, rotation: options.rotation ?? null, tensors },
  };
}

/**
 * The float tensor a quantized one stands for: dequantize(q) (transposed back for a shortcut),
 * i.e. exactly what MatMulNBits multiplies by at accuracy_level 0.
 */
export function dequantizeTensor(t: QuantizedTensor): WeightTensor {
  const d = dequantizeBlockwise(t.q);
  return t.transposed ? transpose(d) : d;
}

/**
 * A float model computing what a quantized one computes (up to accuracy_level 4's on-the-fly
 * int8 A): every quantized tensor replaced by its dequantized float tensor. For tests and
 * quality measurements.
 */
export function dequantizedModel(model: LoadedModel): LoadedModel {
  if (!model.quantization) return model;
  const weights: WeightMap = new Map(model.weights);
  for (const [name, t] of model.quantization.tensors) weights.set(name, dequantizeTensor(t));
  const { quantization: _q, ...rest } = model;
  return { ...rest, weights };
}

/**
 * Bytes a decode step reads for the quantized tensors (codes + scales + zero points).
 * @param scaleBytes 4 for float32 activations, 2 for float16.
 */
export function quantizedModelBytes(model: Pick<LoadedModel, 'quantization'>, scaleBytes = 4): number {
  let n = 0;
  for (const t of model.quantization?.tensors.values() ?? []) n += quantizedWeightBytes(t.q, scaleBytes);
  return n;
}

/**
 * The rows of several quantized weights with the same K and options, stacked along N (one
 * MatMulNBits for a fused q/k/v or gate/up projection). Block quantization is per row, so this
 * equals quantizing the stacked float weights.
 * @param scale optional factor per part applied to its scales (a folded 1/sqrt(head_dim)).
 * @throws QuantizationError when K, bits, block size or symmetry differ.
 */
export function stackRows(parts: readonly BlockQuantizedWeight[], scale: readonly number[] = []): BlockQuantizedWeight {
  const first = parts[0].layout;
  for (const p of parts) {
    const L = p.layout;
    if (L.K !== first.K || L.bits !== first.bits || L.blockSize !== first.blockSize || p.symmetric !== parts[0].symmetric) {
      throw new QuantizationError(`cannot stack quantized weights of different K / bits / block size / symmetry (${L.K}/${L.bits}/${L.blockSize} vs ${first.K}/${first.bits}/${first.blockSize})`);
    }
  }
  if (parts.length === 1 && (scale[0] ?? 1) === 1) return parts[0];
  const N = parts.reduce((s, p) => s + p.layout.N, 0);
  const layout = matMulNBitsLayout(N, first.K, first);
  const data = new Uint8Array(N * layout.kBlocks * layout.blobSize);
  const scales = new Float32Array(N * layout.kBlocks);
  const zeroPoints = parts[0].zeroPoints ? new Uint8Array(N * layout.zeroPointBytesPerRow) : undefined;
  let rows = 0;
  parts.forEach((p, i) => {
    data.set(p.data, rows * layout.kBlocks * layout.blobSize);
    const f = scale[i] ?? 1;
    const at = rows * layout.kBlocks;
    if (f === 1) scales.set(p.scales, at);
    else for (let j = 0; j < p.scales.length; j++) scales[at + j] = Math.fround(p.scales[j] * f);
    if (zeroPoints && p.zeroPoints) zeroPoints.set(p.zeroPoints, rows * layout.zeroPointBytesPerRow);
    rows += p.layout.N;
  });
  return { layout, symmetric: parts[0].symmetric, data, scales, zeroPoints };
}
