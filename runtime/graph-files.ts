/**
 * Opening onnxruntime sessions over graphs whose weights are files, not buffers: the graph is
 * built streaming its initializers into `weights.bin` of a fresh temporary directory
 * (models/onnx/builder.ts `OnnxGraph.streamingTo`), `model.onnx` is saved beside it, the
 * session is created from the model's path, and the directory is removed once onnxruntime has
 * the weights.
 *
 * Why (measured on this project's CPU machines, docs/memory.md): onnxruntime-node's
 * `externalData: [{ path, data }]` accepts only a buffer (a file path there is rejected), and
 * with a buffer the process holds the weights twice (the JavaScript buffer and onnxruntime's
 * pre-packed copy), and the buffer itself is bounded (one tensor < 2 GiB, one typed array
 * < 4 GiB). Opened by path, onnxruntime reads each initializer from the file, pre-packs it and
 * lets the file pages go: 512 MiB of MatMul weights peaked at 652 MiB RSS (Node's ~50 MiB
 * included) against 1.17 GiB from a buffer. Deleting the files after creation is safe on Linux
 * and macOS (a mapping keeps its file alive until the session is released).
 *
 * The files need free space in the temporary directory (`TMPDIR`, else the OS default) equal
 * to the graph's weight bytes, for the duration of the session's creation.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { BuiltModel } from '../models/onnx/builder.js';

/** File names inside the temporary directory. */
export const GRAPH_MODEL_FILE = 'model.onnx';
export const GRAPH_WEIGHTS_FILE = 'weights.bin';

/** What {@link withGraphFiles} hands to `open`. */
export interface GraphFiles {
  /** Path of `model.onnx` (open the session from it). */
  modelPath: string;
  /** Bytes of external weights written. */
  externalBytes: number;
}

/**
 * Builds a graph into files and runs `open` on them, then removes the files (also when
 * building or opening fails).
 * @param build emits the graph with its external data streamed to the given file path.
 * @param open e.g. creates the onnxruntime session from `modelPath`.
 * @param tmpRoot where the temporary directory is made (default `os.tmpdir()`).
 * @returns what `open` returns.
 * @throws what `build` or `open` throws; Error when the graph did not stream to the file.
 */
export async function withGraphFiles<T>(build: (externalDataFile: string) => BuiltModel, open: (files: GraphFiles) => Promise<T>, tmpRoot = os.tmpdir()): Promise<T> {
  const dir = fs.mkdtempSync(path.join(tmpRoot, 'sliceserve-graph-'));
  try {
    const built = build(path.join(dir, GRAPH_WEIGHTS_FILE));
    if (built.externalDataFile !== path.join(dir, GRAPH_WEIGHTS_FILE)) throw new Error('withGraphFiles: the graph was not built into the given external-data file');
    const modelPath = path.join(dir, GRAPH_MODEL_FILE);
    fs.writeFileSync(modelPath, built.model);
    return await open({ modelPath, externalBytes: built.externalBytes });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
