// The official weight-decay grouping: no decay on BN parameters, biases and the 3x3 / 1x1 branch
// scales; decay on conv and linear weights and (in hs mode) on the identity scales.
import type { ParamGroupSpec } from '../backend';
import type { ParamInfo, ParamRole } from '../spec';

const NO_DECAY: ReadonlySet<ParamRole> = new Set<ParamRole>([
  'bn_weight',
  'bn_bias',
  'linear_bias',
  'conv_bias',
  'scale_conv',
  'scale_1x1',
]);

export function officialParamGroups(params: readonly ParamInfo[], weightDecay: number): ParamGroupSpec[] {
  const trainable = params.filter((p) => p.trainable);
  return [
    { params: trainable.filter((p) => !NO_DECAY.has(p.role)).map((p) => p.name), weightDecay },
    { params: trainable.filter((p) => NO_DECAY.has(p.role)).map((p) => p.name), weightDecay: 0 },
  ].filter((g) => g.params.length > 0);
}
