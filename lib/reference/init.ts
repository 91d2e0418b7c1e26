// PyTorch's default initialisation of the networks' parameters, drawn from our own seeded PRNG.
import type { NetworkSpec, ParamInfo, Precision } from '../spec';
import { type FloatArray, allocate, sizeOf } from './numeric';
import { Random } from './random';

/** torch.nn.init.kaiming_uniform_(w, a=sqrt(5)) bound, computed as torch computes it (= 1/sqrt(fan_in)). */
export function kaimingUniformBound(fanIn: number): number {
  const a = Math.sqrt(5);
  const gain = Math.sqrt(2 / (1 + a ** 2));
  const std = gain / Math.sqrt(fanIn);
  return Math.sqrt(3) * std;
}

/** Fan-in of a conv weight [O, I/groups, kH, kW] or linear weight [J, K]. */
function fanIn(shape: readonly number[]): number {
  return sizeOf(shape.slice(1));
}

/** Initial values of every parameter, in parameter order (which is also the order of the draws):
 * conv and linear weights kaiming-uniform(a=sqrt(5)), linear bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
 * BN weight 1 and bias 0, branch scales the block's scaleInit (default 1), identity scales 1. */
export function initialParameters(
  spec: NetworkSpec,
  params: readonly ParamInfo[],
  precision: Precision,
  seed: number,
): Map<string, FloatArray> {
  const random = new Random(seed);
  const blocks = new Map(spec.blocks.map((b) => [b.name, b]));
  const linearWeight = params.find((p) => p.role === 'linear_weight');
  const out = new Map<string, FloatArray>();
  for (const info of params) {
    const data = allocate(precision, sizeOf(info.shape));
    const uniform = (bound: number) => {
      for (let i = 0; i < data.length; i++) data[i] = random.uniform(-bound, bound);
    };
    switch (info.role) {
      case 'conv3x3':
      case 'conv1x1':
      case 'linear_weight':
        uniform(kaimingUniformBound(fanIn(info.shape)));
        break;
      case 'conv_bias': {
        // nn.Conv2d's bias: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in of the block's 3x3 weight.
        const weight = params.find((p) => p.block === info.block && p.role === 'conv3x3');
        uniform(weight ? 1 / Math.sqrt(fanIn(weight.shape)) : 0);
        break;
      }
      case 'linear_bias': {
        const features = linearWeight === undefined ? 0 : linearWeight.shape[1];
        uniform(features > 0 ? 1 / Math.sqrt(features) : 0);
        break;
      }
      case 'bn_weight':
      case 'scale_identity':
        data.fill(1);
        break;
      case 'bn_bias':
        break; // zeros
      case 'scale_conv':
      case 'scale_1x1':
        data.fill((info.block !== undefined ? blocks.get(info.block)?.scaleInit : undefined) ?? 1);
        break;
    }
    out.set(info.name, data);
  }
  return out;
}
