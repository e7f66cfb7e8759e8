/**
 * The measured defaults of `--quantize int8|int4` (docs/quantization.md has the numbers):
 * which MatMulNBits options each kind of weight gets. `null` keeps a tensor in float.
 */
import type { AccuracyLevel } from './emit.js';
import type { BlockQuantOptions } from './layout.js';

/** How one precision quantizes a model. */
export interface QuantPreset {
  /** q/k/v/o, gate/up/down of every layer. */
  linear: BlockQuantOptions;
  /** The LM head (untied from the embedding when quantized). */
  head: BlockQuantOptions | null;
  /** SliceGPT shortcut matrices (stored [in, out]: quantize their [out, in] transpose). */
  shortcuts: BlockQuantOptions | null;
  /** The token embedding (a Gather; quantizing it saves memory only). */
  embedding: BlockQuantOptions | null;
  /** MatMulNBits accuracy_level for every quantized matmul. */
  accuracyLevel: AccuracyLevel;
}

const INT8: BlockQuantOptions = { bits: 8, blockSize: 128, symmetric: false };
const INT4: BlockQuantOptions = { bits: 4, blockSize: 32, symmetric: false };

/** Names of the presets, as the CLI flag takes them. */
export type QuantPresetName = 'int8' | 'int4';

export const QUANT_PRESETS: Readonly<Record<QuantPresetName, Readonly<QuantPreset>>> = {
  int8: { linear: INT8, head: INT8, shortcuts: INT8, embedding: null, accuracyLevel: 4 },
  int4: { linear: INT4, head: INT8, shortcuts: INT8, embedding: null, accuracyLevel: 4 },
};
