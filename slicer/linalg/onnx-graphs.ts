/**
 * Tiny single-op ONNX graphs for float64 matrix products on onnxruntime's CPU provider
 * (its Gemm kernel for double, checked against a JS triple loop in test/linalg).
 */
import { onnx } from 'onnx-proto';

/** Which product a graph computes. */
export interface GemmGraphSpec {
  /** Use A^T (A is stored [k, m]). */
  transA: boolean;
  /** Use B^T (B is stored [n, k]). */
  transB: boolean;
}

const DOUBLE = onnx.TensorProto.DataType.DOUBLE;
const FLOAT = onnx.TensorProto.DataType.FLOAT;
const OPSET = 17;

function valueInfo(name: string, elemType: number, dims: string[]): onnx.IValueInfoProto {
  return {
    name,
    type: { tensorType: { elemType, shape: { dim: dims.map((dimParam) => ({ dimParam })) } } },
  };
}

function intAttribute(name: string, i: number): onnx.IAttributeProto {
  return { name, type: onnx.AttributeProto.AttributeType.INT, i };
}

function encodeModel(graph: onnx.IGraphProto): Uint8Array {
  const model = onnx.ModelProto.create({
    irVersion: 8,
    opsetImport: [{ domain: '', version: OPSET }],
    producerName: 'sliceserve-linalg',
    graph,
  });
  return onnx.ModelProto.encode(model).finish();
}

/**
 * `Y = op(A) op(B)` in float64 (ONNX Gemm, alpha = beta = 1, no C), dynamic dims.
 * Inputs `A`, `B` (double, 2-D); output `Y` (double).
 */
export function gemmF64Model(spec: GemmGraphSpec): Uint8Array {
  return encodeModel({
    name: `gemm_f64_tA${+spec.transA}_tB${+spec.transB}`,
    node: [
      {
        opType: 'Gemm',
        input: ['A', 'B'],
        output: ['Y'],
        attribute: [intAttribute('transA', spec.transA ? 1 : 0), intAttribute('transB', spec.transB ? 1 : 0)],
      },
    ],
    input: [valueInfo('A', DOUBLE, ['a0', 'a1']), valueInfo('B', DOUBLE, ['b0', 'b1'])],
    output: [valueInfo('Y', DOUBLE, ['m', 'n'])],
  });
}

/**
 * Second-moment accumulation `Y = X^T X + H` in float64 (ONNX Gemm with transA = 1, C = H).
 * Inputs `X` [tokens, d] (double, or float cast exactly to double first when `inputFloat32`)
 * and `H` [d, d] (double); output `Y` [d, d] (double).
 */
export function momentF64Model(inputFloat32: boolean): Uint8Array {
  const node: onnx.INodeProto[] = [];
  let x = 'X';
  if (inputFloat32) {
    node.push({ opType: 'Cast', input: ['X'], output: ['X64'], attribute: [intAttribute('to', DOUBLE)] });
    x = 'X64';
  }
  node.push({ opType: 'Gemm', input: [x, x, 'H'], output: ['Y'], attribute: [intAttribute('transA', 1)] });
  return encodeModel({
    name: `moment_f64_from_${inputFloat32 ? 'f32' : 'f64'}`,
    node,
    input: [valueInfo('X', inputFloat32 ? FLOAT : DOUBLE, ['tokens', 'd']), valueInfo('H', DOUBLE, ['d', 'd'])],
    output: [valueInfo('Y', DOUBLE, ['d', 'd'])],
  });
}
