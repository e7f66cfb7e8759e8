/**
 * Float64 linear algebra for the slicer: symmetric eigendecomposition (JS or LAPACK), SliceGPT's
 * PCA from a second moment, and fast float64 matrix products on onnxruntime.
 * See docs/linear-algebra.md.
 */
export {
  eighSymmetric,
  eighBackendFromEnv,
  eighBackendInfo,
  resolveEighBackend,
  slowEigensolverHint,
  JS_EIGH_HINT_WIDTH,
  SYMMETRY_TOLERANCE,
  type EighBackend,
  type EighBackendChoice,
  type EighOptions,
  type EighResult,
} from './eigh.js';
export { pcaFromMoment, type PcaResult } from './pca.js';
export { matmulF64, matmulF64Js, JS_MATMUL_MAX_MACS, type MatmulOptions, type Shape2 } from './matmul.js';
export { MomentAccumulator, MOMENT_CHUNK_ELEMENTS } from './moment.js';
export { releaseLinalgSessions } from './sessions.js';
export { seededNormals, uniformGenerator } from './random.js';
