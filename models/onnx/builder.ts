/**
 * A small ONNX graph-construction helper over `onnx-proto` (the ONNX protobuf schema compiled
 * for protobufjs). It keeps big weights out of the protobuf: every initializer above
 * {@link EXTERNAL_THRESHOLD_BYTES} is stored as ONNX external data, so the encoded graph stays
 * tiny whatever the model size (the protobuf limit is 2 GB). The external data goes either
 * - to a file, written as each initializer is added ({@link OnnxGraph.streamingTo}): nothing
 *   of the weights stays in memory, no buffer limit applies, and onnxruntime reads the file
 *   by path when the model is opened from `model.onnx` in the same directory
 *   (runtime/graph-files.ts); this is how sessions are made; or
 * - to one in-memory buffer, handed to onnxruntime with `externalData: [{ path, data }]`
 *   (small graphs and tests; onnxruntime-node takes only a buffer there, not a file path, and
 *   one tensor passed so must stay under 2 GiB).
 *
 * Spec: ONNX IR (onnx.proto3, https://onnx.ai/onnx/repo-docs/IR.html), "External data".
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { onnx } from 'onnx-proto';
import { byteViews } from '../bytes.js';

/** Element types used by SliceServe graphs (ONNX TensorProto.DataType values). */
export const DT = {
  float32: onnx.TensorProto.DataType.FLOAT,
  float16: onnx.TensorProto.DataType.FLOAT16,
  float64: onnx.TensorProto.DataType.DOUBLE,
  int32: onnx.TensorProto.DataType.INT32,
  int64: onnx.TensorProto.DataType.INT64,
  bool: onnx.TensorProto.DataType.BOOL,
  /** Packed quantized weights and zero points (com.microsoft MatMulNBits, models/quant/). */
  uint8: onnx.TensorProto.DataType.UINT8,
  /** Per-channel int8 weights (com.microsoft DynamicQuantizeMatMul, models/quant/). */
  int8: onnx.TensorProto.DataType.INT8,
} as const;
export type ElemType = keyof typeof DT;

/** Initializers at or below this size are inlined as raw_data; larger ones go to external data. */
export const EXTERNAL_THRESHOLD_BYTES = 1024;
/**
 * Alignment of external tensors in a file: the page size, so that onnxruntime can map them
 * (in memory, 64 bytes).
 */
export const FILE_ALIGNMENT_BYTES = 4096;


/** A dimension: a fixed size or a symbolic name (dynamic). */
export type Dim = number | string;

/** Attribute values accepted by {@link OnnxGraph.node}. */
export type AttrValue = number | string | number[] | { float: number } | { floats: number[] };

/** The encoded model plus its external weights. */
export interface BuiltModel {
  /** Serialized ModelProto. */
  model: Uint8Array;
  /** File name the initializers reference (pass it with {@link BuiltModel.externalData}). */
  externalDataPath: string;
  /** The external weights, one contiguous buffer (empty when they went to {@link externalDataFile}). */
  externalData: Uint8Array;
  /**
   * The file the external weights were written to ({@link OnnxGraph.streamingTo}); save the
   * model as a file in the same directory and open that.
   */
  externalDataFile?: string;
  /** Bytes of external weights (in the buffer or the file). */
  externalBytes: number;
}

/** Incremental builder of one ONNX graph. Node outputs get unique names automatically. */
export class OnnxGraph {
  private readonly nodes: onnx.INodeProto[] = [];
  private readonly initializers: onnx.ITensorProto[] = [];
  private readonly inputs: onnx.IValueInfoProto[] = [];
  private readonly outputs: onnx.IValueInfoProto[] = [];
  private readonly chunks: Uint8Array[] = [];
  private externalBytes = 0;
  private counter = 0;
  private readonly constCache = new Map<string, string>();
  /** The external-data file of a streaming graph. */
  private file?: string;

  /**
   * @param externalDataPath file name the external initializers reference.
   * @param inlineBelowBytes initializers up to this size go inline as raw_data (default
   *   {@link EXTERNAL_THRESHOLD_BYTES}; Infinity keeps a small graph self-contained).
   */
  constructor(
    readonly name: string,
    readonly externalDataPath = 'weights.bin',
    private readonly inlineBelowBytes = EXTERNAL_THRESHOLD_BYTES,
  ) {}

  /**
   * A graph whose external initializers are written to `file` (created or truncated now) as
   * they are added; `externalDataPath` is the file's base name. No file stays open between
   * calls, so an emitter that throws half-way leaves only the file behind.
   * @throws Error when the file cannot be created.
   */
  static streamingTo(name: string, file: string, inlineBelowBytes = EXTERNAL_THRESHOLD_BYTES): OnnxGraph {
    const g = new OnnxGraph(name, path.basename(file), inlineBelowBytes);
    fs.writeFileSync(file, new Uint8Array(0));
    g.file = file;
    return g;
  }

  /** Declares a graph input of the given element type and shape; returns its name. */
  input(name: string, type: ElemType, dims: Dim[]): string {
    this.inputs.push(valueInfo(name, type, dims));
    return name;
  }

  /** Declares `name` (an existing value) as a graph output. */
  output(name: string, type: ElemType, dims: Dim[]): void {
    this.outputs.push(valueInfo(name, type, dims));
  }

  /**
   * Adds an initializer. `data` must hold exactly product(dims) elements of `type`
   * (Float32Array for float32, Uint16Array bit patterns for float16, Float64Array, BigInt64Array,
   * Uint8Array for uint8, Int8Array for int8). A streaming graph writes it to its file now, so
   * the caller may drop `data` afterwards; an in-memory graph keeps a reference until
   * {@link build}.
   */
  initializer(name: string, type: ElemType, dims: number[], data: Float32Array | Float64Array | Uint16Array | BigInt64Array | Uint8Array | Int8Array): string {
    const expected = dims.reduce((a, b) => a * b, 1);
    if ((type === 'uint8' || type === 'int8') && data.length !== expected) {
      throw new Error(`initializer ${name}: ${data.length} ${type} elements for dims [${dims.join(', ')}]`);
    }
    const count = data instanceof Uint8Array && type !== 'bool' ? data.byteLength : data.length;
    if (count !== expected && !(data instanceof Uint8Array)) {
      throw new Error(`initializer ${name}: ${data.length} elements for dims [${dims.join(', ')}]`);
    }
    const byteLength = data.byteLength;
    const tensor: onnx.ITensorProto = { name, dims, dataType: DT[type] };
    if (byteLength <= this.inlineBelowBytes) {
      tensor.rawData = new Uint8Array(data.buffer, data.byteOffset, byteLength).slice();
    } else {
      // Aligned offsets let onnxruntime use the bytes in place (in memory) or map them (in a file).
      const align = this.file === undefined ? 64 : FILE_ALIGNMENT_BYTES;
      const pad = (align - (this.externalBytes % align)) % align;
      const offset = this.externalBytes + pad;
      if (this.file === undefined) {
        if (pad) this.chunks.push(new Uint8Array(pad));
        this.chunks.push(new Uint8Array(data.buffer, data.byteOffset, byteLength));
      } else {
        writeAt(this.file, data, offset);
      }
      this.externalBytes = offset + byteLength;
      tensor.dataLocation = onnx.TensorProto.DataLocation.EXTERNAL;
      tensor.externalData = [
        { key: 'location', value: this.externalDataPath },
        { key: 'offset', value: String(offset) },
        { key: 'length', value: String(byteLength) },
      ];
    }
    this.initializers.push(tensor);
    return name;
  }

  /** An int64 constant (shared when the same values are asked again). */
  int64(values: number[], dims: number[] = [values.length]): string {
    const key = `i64:${dims.join('x')}:${values.join(',')}`;
    const hit = this.constCache.get(key);
    if (hit) return hit;
    const name = this.fresh('const_i64');
    this.initializer(name, 'int64', dims, BigInt64Array.from(values.map((v) => BigInt(v))));
    this.constCache.set(key, name);
    return name;
  }

  /** A float32 scalar or vector constant (shared when repeated). */
  float(values: number[], dims: number[] = [values.length]): string {
    const key = `f32:${dims.join('x')}:${values.join(',')}`;
    const hit = this.constCache.get(key);
    if (hit) return hit;
    const name = this.fresh('const_f32');
    this.initializer(name, 'float32', dims, Float32Array.from(values));
    this.constCache.set(key, name);
    return name;
  }

  /**
   * Adds a node and returns its output names (`outputCount` fresh names unless `outputs` given).
   * An empty string in `inputs` marks an omitted optional input.
   */
  node(opType: string, inputs: string[], attrs: Record<string, AttrValue> = {}, opts: { outputs?: string[]; outputCount?: number; domain?: string; name?: string } = {}): string[] {
    const outputs = opts.outputs ?? Array.from({ length: opts.outputCount ?? 1 }, () => this.fresh(opType));
    this.nodes.push({
      opType,
      domain: opts.domain ?? '',
      name: opts.name ?? this.fresh(`n_${opType}`),
      input: inputs,
      output: outputs,
      attribute: Object.entries(attrs).map(([k, v]) => attribute(k, v)),
    });
    return outputs;
  }

  /** Single-output shorthand of {@link OnnxGraph.node}. */
  op(opType: string, inputs: string[], attrs: Record<string, AttrValue> = {}, opts: { output?: string; domain?: string } = {}): string {
    return this.node(opType, inputs, attrs, { outputs: opts.output ? [opts.output] : undefined, domain: opts.domain })[0];
  }

  /** A fresh unique value name with the given prefix. */
  fresh(prefix: string): string {
    this.counter += 1;
    return `${prefix}_${this.counter}`;
  }

  /**
   * Serializes the model. `opsets` maps domain -> version (default: ONNX 23 + com.microsoft 1).
   * @returns the ModelProto bytes and the external-data buffer (or file).
   */
  build(opsets: Record<string, number> = { '': 23, 'com.microsoft': 1 }): BuiltModel {
    const model = onnx.ModelProto.create({
      irVersion: 10,
      producerName: 'sliceserve',
      opsetImport: Object.entries(opsets).map(([domain, version]) => ({ domain, version })),
      graph: {
        name: this.name,
        node: this.nodes,
        initializer: this.initializers,
        input: this.inputs,
        output: this.outputs,
      },
    });
    const encoded = onnx.ModelProto.encode(model).finish();
    if (this.file !== undefined) {
      return { model: encoded, externalDataPath: this.externalDataPath, externalData: new Uint8Array(0), externalDataFile: this.file, externalBytes: this.externalBytes };
    }
    const externalData = new Uint8Array(this.externalBytes);
    let offset = 0;
    for (const c of this.chunks) {
      externalData.set(c, offset);
      offset += c.byteLength;
    }
    return { model: encoded, externalDataPath: this.externalDataPath, externalData, externalBytes: this.externalBytes };
  }
}

/**
 * Writes the bytes of `data` into `file` at byte `offset` (the file is opened and closed
 * here), in pieces: no single view or write call may cover more than 1 GiB (models/bytes.ts).
 */
function writeAt(file: string, data: ArrayBufferView, offset: number): void {
  const fd = fs.openSync(file, 'r+');
  try {
    let position = offset;
    for (const view of byteViews(data)) {
      for (let done = 0; done < view.byteLength;) done += fs.writeSync(fd, view, done, view.byteLength - done, position + done);
      position += view.byteLength;
    }
  } finally {
    fs.closeSync(fd);
  }
}

function valueInfo(name: string, type: ElemType, dims: Dim[]): onnx.IValueInfoProto {
  return {
    name,
    type: {
      tensorType: {
        elemType: DT[type],
        shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) },
      },
    },
  };
}

function attribute(name: string, v: AttrValue): onnx.IAttributeProto {
  const T = onnx.AttributeProto.AttributeType;
  if (typeof v === 'number') return { name, type: T.INT, i: v };
  if (typeof v === 'string') return { name, type: T.STRING, s: Buffer.from(v, 'utf8') };
  if (Array.isArray(v)) return { name, type: T.INTS, ints: v };
  if ('float' in v) return { name, type: T.FLOAT, f: v.float };
  return { name, type: T.FLOATS, floats: v.floats };
}
