// The pure-TypeScript reference backend: no native code, PyTorch semantics, float32 or float64.
// It is the ground truth that the libtorch backend is tested against.
import type { Backend } from '../backend';
import type { NetworkSpec, Precision } from '../spec';
import { ReferenceNetwork } from './network';

export const referenceBackend: Backend = {
  name: 'reference',
  createNetwork(spec: NetworkSpec, options?: { precision?: Precision; seed?: number }): ReferenceNetwork {
    return new ReferenceNetwork(spec, options);
  },
};

/** referenceBackend.createNetwork, typed with the reference-only extras (computeGradients, evaluateLoss). */
export function createReferenceNetwork(spec: NetworkSpec, options?: { precision?: Precision; seed?: number }): ReferenceNetwork {
  return new ReferenceNetwork(spec, options);
}

export { ReferenceNetwork } from './network';
export type { ReferenceNetworkOptions, LossOptions, GradientResult } from './network';
export { ReferenceOptimizer } from './optimizers';
export type { OptimizedParameter } from './optimizers';
export { resolveOptimizerSpec } from '../optimizer-spec';
export type { ResolvedGroup, ResolvedOptimizerSpec } from '../optimizer-spec';
export { fullGradMult, checkGradMult } from '../gradmult';
export { Variable, backward, accumulateGrad } from './autograd';
export type { BackwardFn } from './autograd';
export { conv2d, conv2dOutputSize, batchNorm2d, relu, channelScale, channelBias, add, globalAvgPool, linear, crossEntropy } from './ops';
export type { Conv2dOptions, BatchNormStats, BatchNormOptions } from './ops';
export { gradCheck, centralDifference, relativeError } from './gradcheck';
export type { GradCheckInput, GradCheckOptions, GradCheckResult } from './gradcheck';
export { kaimingUniformBound } from './init';
export { Random } from './random';
export type { FloatArray } from './numeric';
