// The official weight-decay grouping (set_weight_decay in the official optimizer.py), by name and shape as
// there: decay on every '*identity.weight' (hs identity scales, repvgg bn_identity weights), none on other
// 1-D parameters and biases (BN, branch scales, biases), decay on the rest (conv and linear weights).
import type { ParamGroupSpec } from '../backend';
import type { ParamInfo } from '../spec';

function decayed(p: ParamInfo): boolean {
  if (p.name.includes('identity.weight')) return true;
  return !(p.shape.length === 1 || p.name.endsWith('.bias'));
}

export function officialParamGroups(params: readonly ParamInfo[], weightDecay: number): ParamGroupSpec[] {
  const trainable = params.filter((p) => p.trainable);
  return [
    { params: trainable.filter(decayed).map((p) => p.name), weightDecay },
    { params: trainable.filter((p) => !decayed(p)).map((p) => p.name), weightDecay: 0 },
  ].filter((g) => g.params.length > 0);
}
