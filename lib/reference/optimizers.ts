// torch.optim.SGD and torch.optim.AdamW (as libtorch's C++ optimizers compute them), with the
// RepOptimizer GradMult: RepOptSGD multiplies the gradient before weight decay and momentum;
// RepOptAdamW (official, approximate) multiplies the gradient before the moments and the first
// moment again in the update.
import type { Optimizer, OptimizerSpec } from '../backend';
import type { ParamInfo, Precision } from '../spec';
import { fullGradMult } from '../gradmult';
import { type FloatArray, allocate, rounder } from './numeric';
import { type ResolvedGroup, type ResolvedOptimizerSpec, resolveOptimizerSpec } from '../optimizer-spec';

/** A parameter as the optimizer sees it: its description and its live storage (updated in place). */
export interface OptimizedParameter {
  readonly info: ParamInfo;
  readonly data: FloatArray;
}

interface AdamState {
  step: number;
  readonly expAvg: FloatArray;
  readonly expAvgSq: FloatArray;
}

export class ReferenceOptimizer implements Optimizer {
  readonly spec: OptimizerSpec;
  private readonly resolved: ResolvedOptimizerSpec;
  private readonly precision: Precision;
  private readonly parameters: ReadonlyMap<string, OptimizedParameter>;
  /** The expanded GradMults (the same numbers whatever gradMultStorage says). */
  private readonly multipliers = new Map<string, FloatArray>();
  private readonly momentumBuffers = new Map<string, FloatArray>();
  private readonly adamStates = new Map<string, AdamState>();
  private stepCount = 0;
  private disposed = false;
  /** The network this optimizer was made for. */
  readonly owner: object;

  constructor(spec: OptimizerSpec, parameters: readonly OptimizedParameter[], precision: Precision, owner: object) {
    this.resolved = resolveOptimizerSpec(
      spec,
      parameters.map((p) => p.info),
    );
    this.spec = spec;
    this.precision = precision;
    this.owner = owner;
    this.parameters = new Map(parameters.map((p) => [p.info.name, p]));
    for (const [name, gm] of this.resolved.gradMults ?? []) this.multipliers.set(name, fullGradMult(gm, precision));
  }

  get steps(): number {
    return this.stepCount;
  }

  get isDisposed(): boolean {
    return this.disposed;
  }

  dispose(): void {
    this.disposed = true;
    this.momentumBuffers.clear();
    this.adamStates.clear();
  }

  /** One optimizer step. `gradients` holds d loss / d param by name; a parameter without one is
   * skipped (no decay, no momentum update), as torch skips parameters whose grad is None. */
  step(gradients: ReadonlyMap<string, FloatArray>): void {
    if (this.disposed) throw new Error('optimizer has been disposed');
    for (const group of this.resolved.groups) {
      for (const name of group.params) {
        const parameter = this.parameters.get(name);
        const gradient = gradients.get(name);
        if (parameter === undefined || !parameter.info.trainable || gradient === undefined) continue;
        if (gradient.length !== parameter.data.length)
          throw new RangeError(`optimizer: gradient of '${name}' has ${gradient.length} values, the parameter ${parameter.data.length}`);
        if (this.resolved.type === 'sgd') this.sgdUpdate(name, parameter.data, gradient, group);
        else this.adamwUpdate(name, parameter.data, gradient, group);
      }
    }
    this.stepCount++;
  }

  /** torch.optim.SGD for one parameter, d = g ⊙ M first when it has a GradMult. Scalars are rounded
   * to the precision, as torch converts them for a float32 kernel. */
  private sgdUpdate(name: string, param: FloatArray, grad: FloatArray, group: ResolvedGroup): void {
    const round = rounder(this.precision);
    const multiplier = this.multipliers.get(name);
    const lr = round(group.lr);
    const weightDecay = round(group.weightDecay);
    const momentum = round(group.momentum);
    const keep = round(1 - group.dampening);
    let buffer = this.momentumBuffers.get(name);
    const firstStep = buffer === undefined;
    if (group.momentum !== 0 && buffer === undefined) {
      buffer = allocate(this.precision, param.length);
      this.momentumBuffers.set(name, buffer);
    }
    for (let i = 0; i < param.length; i++) {
      let d = multiplier === undefined ? grad[i] : round(grad[i] * multiplier[i]);
      if (group.weightDecay !== 0) d = round(d + weightDecay * param[i]);
      if (buffer !== undefined) {
        // The first step copies d into the buffer: no dampening then.
        const b = firstStep ? d : round(round(momentum * buffer[i]) + keep * d);
        buffer[i] = b;
        d = group.nesterov ? round(d + momentum * b) : b;
      }
      param[i] = round(param[i] - lr * d);
    }
  }

  /** torch.optim.AdamW (non-amsgrad) for one parameter; with a GradMult, the official RepOptAdamW. */
  private adamwUpdate(name: string, param: FloatArray, grad: FloatArray, group: ResolvedGroup): void {
    const round = rounder(this.precision);
    const multiplier = this.multipliers.get(name);
    const [beta1, beta2] = this.resolved.betas;
    let state = this.adamStates.get(name);
    if (state === undefined) {
      state = { step: 0, expAvg: allocate(this.precision, param.length), expAvgSq: allocate(this.precision, param.length) };
      this.adamStates.set(name, state);
    }
    state.step += 1;
    const decay = round(1 - group.lr * group.weightDecay);
    const b1 = round(beta1);
    const b2 = round(beta2);
    const oneMinusB1 = round(1 - beta1);
    const oneMinusB2 = round(1 - beta2);
    const biasCorrection1 = 1 - beta1 ** state.step;
    const biasCorrection2 = 1 - beta2 ** state.step;
    const sqrtBiasCorrection2 = round(Math.sqrt(biasCorrection2));
    const eps = round(this.resolved.eps);
    const negativeStepSize = round(-(group.lr / biasCorrection1));
    const { expAvg, expAvgSq } = state;
    for (let i = 0; i < param.length; i++) {
      if (group.weightDecay !== 0) param[i] = round(param[i] * decay);
      const g = multiplier === undefined ? grad[i] : round(grad[i] * multiplier[i]);
      expAvg[i] = round(round(b1 * expAvg[i]) + oneMinusB1 * g);
      expAvgSq[i] = round(round(b2 * expAvgSq[i]) + oneMinusB2 * g * g);
      const denom = round(round(round(Math.sqrt(expAvgSq[i])) / sqrtBiasCorrection2) + eps);
      const numerator = multiplier === undefined ? expAvg[i] : round(expAvg[i] * multiplier[i]);
      param[i] = round(param[i] + (negativeStepSize * numerator) / denom);
    }
  }
}
