// The deploy network (one conv3x3 + bias + ReLU per block, global average pool, linear) as an ONNX
// model, float or INT8 QDQ, encoded with onnx-proto (onnx.proto compiled by protobufjs).
//
// The graph computes what libtorch's deploy network computes: optional normalisation ((x - mean) / std,
// as Sub and Div: folding it into the first conv would be wrong at the borders, where the conv's zero
// padding stands for the mean pixel, not for 0), then per block Conv (3x3, padding 1) and Relu, then
// GlobalAveragePool, Flatten and Gemm (transB = 1). The QDQ variant adds what repopt's simulated int8
// computes: a QuantizeLinear/DequantizeLinear pair at every quantization point (the conv input, each
// block's output, the pooled features, the logits; per tensor, uint8 or int8 with its zero point), and
// int8 weights behind a DequantizeLinear (per output channel, axis 0, zero point 0). Biases stay float32,
// holding the int32-quantized value (q x input scale x weight scale): what TensorRT expects, and what
// ONNX Runtime folds into its int8 kernels.
import { onnx } from 'onnx-proto';
import type { NetworkSpec } from '../spec';

/** ONNX operator set 13: QuantizeLinear/DequantizeLinear per channel (axis) since 13. */
export const ONNX_OPSET = 13;
/** IR version 7 (ONNX 1.8), the first that carries opset 13. */
const IR_VERSION = 7;

export const ONNX_INPUT = 'input';
export const ONNX_OUTPUT = 'logits';

/** 'graph': the model takes pixels in [0, 1] and normalises them; 'none': it takes normalised input
 * ((pixel - mean) / std per channel, mean and std in the model's metadata). */
export type OnnxNormalization = 'graph' | 'none';

/** int8 weights with their per-output-channel scales (real value = q x scale[o]). */
export interface QuantizedWeight {
  readonly q: Int8Array;
  readonly scales: ArrayLike<number>;
}

/** One conv (a deploy block) or the linear layer. */
export interface OnnxLayer {
  /** The state_dict key of the weight ('stage0.rbr_reparam.weight', 'linear.weight'): initializer names. */
  readonly key: string;
  /** OIHW for convs, [out, in] for the linear layer. */
  readonly shape: readonly number[];
  readonly weight: Float32Array | QuantizedWeight;
  readonly bias: Float32Array;
}

/** A per-tensor quantization point: real value = (q - zeroPoint) x scale. */
export interface OnnxQuantPoint {
  readonly name: string;
  readonly scale: number;
  readonly zeroPoint: number;
}

export interface OnnxDeployNetwork {
  /** The deploy spec (mode 'deploy'). */
  readonly spec: NetworkSpec;
  /** One layer per block, then the linear layer. */
  readonly layers: readonly OnnxLayer[];
  readonly normalization: { readonly mean: readonly number[]; readonly std: readonly number[] };
  /** QDQ: the activation type and the points in network order: input, each block, pool, logits. */
  readonly quant?: { readonly activations: 'uint8' | 'int8'; readonly points: readonly OnnxQuantPoint[] };
}

const { DataType } = onnx.TensorProto;

function tensor(name: string, dataType: onnx.TensorProto.DataType, dims: readonly number[], data: ArrayBufferView): onnx.ITensorProto {
  // raw_data is little-endian, as typed arrays are on every platform Node runs on here (x64, arm64).
  return { name, dataType, dims: [...dims], rawData: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
}

const attribute = {
  int: (name: string, i: number): onnx.IAttributeProto => ({ name, type: onnx.AttributeProto.AttributeType.INT, i }),
  ints: (name: string, ints: number[]): onnx.IAttributeProto => ({ name, type: onnx.AttributeProto.AttributeType.INTS, ints }),
};

function valueInfo(name: string, dims: (number | string)[]): onnx.IValueInfoProto {
  return {
    name,
    type: {
      tensorType: {
        elemType: DataType.FLOAT,
        shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) },
      },
    },
  };
}

/** Checks that the layers fit the spec (shapes, counts, quantization points) before anything is encoded. */
function checkNetwork(net: OnnxDeployNetwork): void {
  const { spec, layers, quant } = net;
  if (spec.mode !== 'deploy') throw new RangeError(`the ONNX export takes deploy networks (fold first), got '${spec.mode}'`);
  if (layers.length !== spec.blocks.length + 1)
    throw new RangeError(`the ONNX export needs ${spec.blocks.length + 1} layers (blocks, linear), got ${layers.length}`);
  const expected = [
    ...spec.blocks.map((b) => [b.outChannels, b.inChannels, 3, 3]),
    [spec.numClasses, spec.blocks[spec.blocks.length - 1].outChannels],
  ];
  layers.forEach((l, i) => {
    const count = expected[i].reduce((a, b) => a * b, 1);
    const weightLength = l.weight instanceof Float32Array ? l.weight.length : l.weight.q.length;
    if (l.shape.join() !== expected[i].join() || weightLength !== count || l.bias.length !== expected[i][0])
      throw new RangeError(`the ONNX export: layer ${l.key} has shape [${l.shape}], the network needs [${expected[i]}]`);
    if (!(l.weight instanceof Float32Array) && l.weight.scales.length !== expected[i][0])
      throw new RangeError(`the ONNX export: layer ${l.key} has ${l.weight.scales.length} weight scales for ${expected[i][0]} channels`);
  });
  for (const key of ['mean', 'std'] as const)
    if (net.normalization[key].length !== spec.inChannels)
      throw new RangeError(
        `the ONNX export: normalization ${key} has ${net.normalization[key].length} values for ${spec.inChannels} channels`,
      );
  if (quant && quant.points.length !== spec.blocks.length + 3)
    throw new RangeError(`the ONNX export: ${quant.points.length} quantization points, the network has ${spec.blocks.length + 3}`);
}

/** The ONNX model (serialized ModelProto) of a deploy network; QDQ when `net.quant` is given. */
export function deployOnnxModel(
  net: OnnxDeployNetwork,
  options: { normalization: OnnxNormalization; metadata?: Readonly<Record<string, string>> },
): Uint8Array {
  checkNetwork(net);
  const { spec, layers, quant } = net;
  const nodes: onnx.INodeProto[] = [];
  const initializers: onnx.ITensorProto[] = [];
  const node = (opType: string, input: string[], output: string, attributes: onnx.IAttributeProto[] = []) => {
    nodes.push({ opType, input, output: [output], name: output, attribute: attributes });
    return output;
  };

  let x = ONNX_INPUT;
  const c = spec.inChannels;
  if (options.normalization === 'graph') {
    const mean = tensor('normalization.mean', DataType.FLOAT, [1, c, 1, 1], Float32Array.from(net.normalization.mean));
    const std = tensor('normalization.std', DataType.FLOAT, [1, c, 1, 1], Float32Array.from(net.normalization.std));
    initializers.push(mean, std);
    // Sub then Div: the same float32 operations, in the same order, as the data set's normalisation.
    x = node('Div', [node('Sub', [x, mean.name!], 'centered'), std.name!], 'normalized');
  }

  const zeroPointType = quant?.activations === 'int8' ? DataType.INT8 : DataType.UINT8;
  const qdq = (input: string, index: number): string => {
    if (!quant) return input;
    const p = quant.points[index];
    const scale = tensor(`${p.name}.scale`, DataType.FLOAT, [], Float32Array.of(p.scale));
    const zeroPoint = tensor(
      `${p.name}.zero_point`,
      zeroPointType,
      [],
      zeroPointType === DataType.INT8 ? Int8Array.of(p.zeroPoint) : Uint8Array.of(p.zeroPoint),
    );
    initializers.push(scale, zeroPoint);
    const q = node('QuantizeLinear', [input, scale.name!, zeroPoint.name!], `${p.name}.quantized`);
    return node('DequantizeLinear', [q, scale.name!, zeroPoint.name!], `${p.name}.dequantized`);
  };
  const weightOf = (l: OnnxLayer): string => {
    if (l.weight instanceof Float32Array) {
      initializers.push(tensor(l.key, DataType.FLOAT, l.shape, l.weight));
      return l.key;
    }
    const out = l.shape[0];
    initializers.push(
      tensor(`${l.key}.quantized`, DataType.INT8, l.shape, l.weight.q),
      tensor(`${l.key}.scale`, DataType.FLOAT, [out], Float32Array.from(l.weight.scales)),
      tensor(`${l.key}.zero_point`, DataType.INT8, [out], new Int8Array(out)),
    );
    return node('DequantizeLinear', [`${l.key}.quantized`, `${l.key}.scale`, `${l.key}.zero_point`], l.key, [attribute.int('axis', 0)]);
  };
  const biasOf = (l: OnnxLayer): string => {
    const key = l.key.replace(/weight$/, 'bias');
    initializers.push(tensor(key, DataType.FLOAT, [l.bias.length], l.bias));
    return key;
  };

  x = qdq(x, 0);
  spec.blocks.forEach((b, i) => {
    const l = layers[i];
    const conv = node('Conv', [x, weightOf(l), biasOf(l)], `${b.name}.conv`, [
      attribute.ints('kernel_shape', [3, 3]),
      attribute.ints('strides', [b.stride, b.stride]),
      attribute.ints('pads', [1, 1, 1, 1]),
    ]);
    x = qdq(node('Relu', [conv], `${b.name}.relu`), i + 1);
  });
  const pooled = node('Flatten', [node('GlobalAveragePool', [x], 'pool.mean')], 'pool', [attribute.int('axis', 1)]);
  const linear = layers[layers.length - 1];
  const logits = node('Gemm', [qdq(pooled, spec.blocks.length + 1), weightOf(linear), biasOf(linear)], quant ? 'linear' : ONNX_OUTPUT, [
    attribute.int('transB', 1),
  ]);
  if (quant) {
    // The last pair's output is the graph output: renamed so that the model's output is 'logits'.
    qdq(logits, spec.blocks.length + 2);
    nodes[nodes.length - 1].output = [ONNX_OUTPUT];
  }

  const metadata: Record<string, string> = {
    'repopt.input':
      options.normalization === 'graph'
        ? 'NCHW float32 pixels in [0, 1]; the graph subtracts normalization.mean and divides by normalization.std'
        : 'NCHW float32, normalised: (pixel in [0, 1] - mean) / std per channel (repopt.normalization)',
    'repopt.normalization': JSON.stringify({ mean: [...net.normalization.mean], std: [...net.normalization.std] }),
    ...options.metadata,
  };
  const model: onnx.IModelProto = {
    irVersion: IR_VERSION,
    opsetImport: [{ domain: '', version: ONNX_OPSET }],
    producerName: 'repopt',
    docString: `repopt deploy network${quant ? ', INT8 QDQ' : ''}: conv3x3 + bias + ReLU per block, global average pool, linear`,
    graph: {
      name: 'repopt_deploy',
      node: nodes,
      initializer: initializers,
      input: [valueInfo(ONNX_INPUT, ['batch', c, 'height', 'width'])],
      output: [valueInfo(ONNX_OUTPUT, ['batch', spec.numClasses])],
    },
    metadataProps: Object.entries(metadata).map(([key, value]) => ({ key, value })),
  };
  return onnx.ModelProto.encode(onnx.ModelProto.create(model)).finish();
}
