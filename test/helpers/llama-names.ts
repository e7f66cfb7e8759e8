/**
 * Tensor names of the Llama layout (models/arch/llama LLAMA_NAMES) as short helpers for tests
 * that build or inspect Llama weights by hand.
 */
import { LLAMA_NAMES as N } from '../../models/arch/llama/index.js';

const at = (l: number, name: string) => `${N.layerPrefix(l)}.${name}.weight`;

export const W = {
  embed: N.embedTokens,
  finalNorm: `${N.finalNorm}.weight`,
  lmHead: `${N.lmHead}.weight`,
  layer: (l: number) => N.layerPrefix(l),
  q: (l: number) => at(l, N.q),
  k: (l: number) => at(l, N.k),
  v: (l: number) => at(l, N.v),
  o: (l: number) => at(l, N.o),
  gate: (l: number) => at(l, N.gate!),
  up: (l: number) => at(l, N.up),
  down: (l: number) => at(l, N.down),
  attnNorm: (l: number) => at(l, N.inputNorm),
  mlpNorm: (l: number) => at(l, N.postAttentionNorm!),
  attnShortcut: (l: number) => `${N.layerPrefix(l)}.attn_shortcut_Q`,
  mlpShortcut: (l: number) => `${N.layerPrefix(l)}.mlp_shortcut_Q`,
} as const;
