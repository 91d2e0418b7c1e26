// The reference Network: the official RepOptimizers / RepVGG blocks built from the ops, trained
// with the reference optimizers. Forward passes build a fresh graph whose leaves share the
// parameters' storage, so optimizer updates are seen by the next pass.
import type { HostTensor, Network, Optimizer, OptimizerSpec, TrainStepOptions } from '../backend';
import { blockBatchNorms, bufferInfo, hasIdentity, parameterInfo, validateSpec } from '../spec';
import type { BlockSpec, BufferInfo, NetworkSpec, ParamInfo, Precision } from '../spec';
import { Variable, backward } from './autograd';
import { initialParameters } from './init';
import { type FloatArray, allocate, formatShape, sizeOf, toPrecision } from './numeric';
import { type BatchNormStats, add, batchNorm2d, channelScale, conv2d, crossEntropy, globalAvgPool, linear, relu, channelBias } from './ops';
import { type OptimizedParameter, ReferenceOptimizer } from './optimizers';
import { type StateEntry, checkStateDict } from './state-dict';

export interface ReferenceNetworkOptions {
  readonly precision?: Precision;
  /** PRNG seed of the initial weights (default 0). */
  readonly seed?: number;
}

export interface LossOptions extends TrainStepOptions {
  /** 'eval' (default) uses running statistics; 'train' uses batch statistics and updates them. */
  readonly mode?: 'train' | 'eval';
}

export interface GradientResult {
  readonly loss: number;
  /** d loss / d parameter for every trainable parameter, in parameter order. */
  readonly gradients: Map<string, HostTensor>;
}

/** A state-dict key with access to its storage. */
interface StateSlot extends StateEntry {
  read(): FloatArray;
  write(values: Float32Array | Float64Array): void;
}

function copySpec(spec: NetworkSpec): NetworkSpec {
  return { mode: spec.mode, inChannels: spec.inChannels, numClasses: spec.numClasses, blocks: spec.blocks.map((b) => ({ ...b })) };
}

export class ReferenceNetwork implements Network {
  readonly backend = 'reference' as const;
  readonly spec: NetworkSpec;
  readonly precision: Precision;
  private readonly params: readonly OptimizedParameter[];
  /** Running statistics of every batch-norm layer, by key prefix ('stage1.0.bn'). */
  private readonly batchNorms = new Map<string, BatchNormStats>();
  private readonly stateSlots: readonly StateSlot[];
  private disposed = false;

  constructor(spec: NetworkSpec, options: ReferenceNetworkOptions = {}) {
    validateSpec(spec);
    const precision = options.precision ?? 'float32';
    if (precision !== 'float32' && precision !== 'float64')
      throw new RangeError(`reference network: precision must be 'float32' or 'float64', got '${String(precision)}'`);
    const seed = options.seed ?? 0;
    if (!Number.isSafeInteger(seed)) throw new RangeError(`reference network: seed must be a safe integer, got ${seed}`);
    this.spec = copySpec(spec);
    this.precision = precision;
    const infos = parameterInfo(this.spec);
    const initial = initialParameters(this.spec, infos, precision, seed);
    this.params = infos.map((info) => ({ info, data: initial.get(info.name) ?? allocate(precision, sizeOf(info.shape)) }));
    for (const b of this.spec.blocks) {
      for (const prefix of blockBatchNorms(this.spec.mode, b)) {
        this.batchNorms.set(prefix, {
          runningMean: allocate(precision, b.outChannels),
          runningVar: allocate(precision, b.outChannels).fill(1),
          numBatchesTracked: 0,
        });
      }
    }
    this.stateSlots = this.buildStateSlots();
  }

  parameters(): ParamInfo[] {
    return parameterInfo(this.spec);
  }

  buffers(): BufferInfo[] {
    return bufferInfo(this.spec);
  }

  /** Copies, in torch's state_dict order (each module's parameters, then its buffers). */
  stateDict(): Map<string, HostTensor> {
    this.checkAlive();
    return new Map(this.stateSlots.map((slot) => [slot.name, { shape: [...slot.shape], data: slot.read() }]));
  }

  loadStateDict(state: ReadonlyMap<string, HostTensor>): void {
    this.checkAlive();
    checkStateDict(this.stateSlots, state, 'ReferenceNetwork');
    for (const slot of this.stateSlots) {
      const value = state.get(slot.name);
      if (value !== undefined) slot.write(value.data);
    }
  }

  forward(input: HostTensor, mode: 'train' | 'eval'): HostTensor {
    this.checkAlive();
    const x = this.inputVariable(input);
    const logits = this.logits(x, checkMode(mode) === 'train', false);
    return { shape: [...logits.shape], data: logits.data };
  }

  createOptimizer(spec: OptimizerSpec): ReferenceOptimizer {
    this.checkAlive();
    return new ReferenceOptimizer(spec, this.params, this.precision, this);
  }

  trainStep(optimizer: Optimizer, input: HostTensor, labels: Int32Array, options: TrainStepOptions = {}): number {
    this.checkAlive();
    if (!(optimizer instanceof ReferenceOptimizer) || optimizer.owner !== this) {
      throw new Error('trainStep: the optimizer was not created by this network (use network.createOptimizer)');
    }
    if (optimizer.isDisposed) throw new Error('trainStep: the optimizer has been disposed');
    const { loss, gradients } = this.lossAndGradients(input, labels, options);
    optimizer.step(gradients);
    return loss;
  }

  /** Zero grad, forward in train mode (running statistics updated), loss, backward; no step. */
  computeGradients(input: HostTensor, labels: Int32Array, options: TrainStepOptions = {}): GradientResult {
    this.checkAlive();
    const { loss, gradients } = this.lossAndGradients(input, labels, options);
    const out = new Map<string, HostTensor>();
    for (const p of this.params) {
      const g = gradients.get(p.info.name);
      if (g !== undefined) out.set(p.info.name, { shape: [...p.info.shape], data: g });
    }
    return { loss, gradients: out };
  }

  /** The cross-entropy loss of a batch, without gradients. */
  evaluateLoss(input: HostTensor, labels: Int32Array, options: LossOptions = {}): number {
    this.checkAlive();
    const x = this.inputVariable(input);
    const smoothing = this.checkTargets(labels, x.shape[0], options.labelSmoothing);
    const logits = this.logits(x, checkMode(options.mode ?? 'eval') === 'train', false);
    return crossEntropy(logits, labels, smoothing).data[0];
  }

  dispose(): void {
    this.disposed = true;
  }

  private checkAlive(): void {
    if (this.disposed) throw new Error('reference network has been disposed');
  }

  private lossAndGradients(
    input: HostTensor,
    labels: Int32Array,
    options: TrainStepOptions,
  ): { loss: number; gradients: Map<string, FloatArray> } {
    const x = this.inputVariable(input);
    // Everything is checked before the forward pass changes any running statistic.
    const smoothing = this.checkTargets(labels, x.shape[0], options.labelSmoothing);
    const leaves = this.leaves(true);
    const loss = crossEntropy(this.run(x, leaves, true), labels, smoothing);
    backward(loss);
    const gradients = new Map<string, FloatArray>();
    for (const [name, leaf] of leaves) if (leaf.grad !== null) gradients.set(name, leaf.grad);
    return { loss: loss.data[0], gradients };
  }

  private logits(x: Variable, training: boolean, trackGradients: boolean): Variable {
    return this.run(x, this.leaves(trackGradients), training);
  }

  /** Graph leaves over the parameters' storage; constants (csla scales) never track gradients. */
  private leaves(trackGradients: boolean): Map<string, Variable> {
    return new Map(this.params.map((p) => [p.info.name, Variable.leaf(p.data, p.info.shape, trackGradients && p.info.trainable)]));
  }

  private run(x: Variable, leaves: ReadonlyMap<string, Variable>, training: boolean): Variable {
    const param = (name: string): Variable => {
      const leaf = leaves.get(name);
      if (leaf === undefined) throw new Error(`reference network: no parameter '${name}'`);
      return leaf;
    };
    const batchNorm = (prefix: string, input: Variable): Variable => {
      const stats = this.batchNorms.get(prefix);
      if (stats === undefined) throw new Error(`reference network: no batch norm '${prefix}'`);
      return batchNorm2d(input, param(`${prefix}.weight`), param(`${prefix}.bias`), stats, { training });
    };
    let out = x;
    for (const block of this.spec.blocks) out = this.block(block, out, param, batchNorm);
    const pooled = globalAvgPool(out);
    return linear(pooled, param('linear.weight'), param('linear.bias'));
  }

  private block(
    b: BlockSpec,
    x: Variable,
    param: (name: string) => Variable,
    batchNorm: (prefix: string, input: Variable) => Variable,
  ): Variable {
    const n = b.name;
    const conv3x3 = (weight: string) => conv2d(x, param(weight), { stride: b.stride, padding: 1 });
    const conv1x1 = (weight: string) => conv2d(x, param(weight), { stride: b.stride, padding: 0 });
    switch (this.spec.mode) {
      case 'target':
        return relu(batchNorm(`${n}.bn`, conv3x3(`${n}.conv.weight`)));
      case 'hs':
      case 'csla': {
        // LinearAddBlock: scale_conv(conv(x)) + scale_1x1(conv_1x1(x)) [+ scale_identity(x)], then BN, ReLU.
        let sum = add(
          channelScale(conv3x3(`${n}.conv.weight`), param(`${n}.scale_conv.weight`)),
          channelScale(conv1x1(`${n}.conv_1x1.weight`), param(`${n}.scale_1x1.weight`)),
        );
        if (hasIdentity(b)) sum = add(sum, channelScale(x, param(`${n}.scale_identity.weight`)));
        return relu(batchNorm(`${n}.bn`, sum));
      }
      case 'repvgg': {
        let sum = add(batchNorm(`${n}.bn_3x3`, conv3x3(`${n}.conv_3x3.weight`)), batchNorm(`${n}.bn_1x1`, conv1x1(`${n}.conv_1x1.weight`)));
        if (hasIdentity(b)) sum = add(sum, batchNorm(`${n}.bn_identity`, x));
        return relu(sum);
      }
      case 'deploy':
        return relu(channelBias(conv3x3(`${n}.rbr_reparam.weight`), param(`${n}.rbr_reparam.bias`)));
    }
  }

  private inputVariable(input: HostTensor): Variable {
    if (
      typeof input !== 'object' ||
      input === null ||
      !Array.isArray(input.shape) ||
      !(input.data instanceof Float32Array || input.data instanceof Float64Array)
    ) {
      throw new TypeError('input must be {shape: number[], data: Float32Array | Float64Array}');
    }
    const shape = input.shape;
    if (shape.length !== 4 || !shape.every((d) => Number.isInteger(d) && d > 0))
      throw new RangeError(`input must have shape [N, C, H, W] with positive sizes, got ${formatShape(shape)}`);
    if (shape[1] !== this.spec.inChannels)
      throw new RangeError(`input has ${shape[1]} channels, the network takes ${this.spec.inChannels}`);
    if (input.data.length !== sizeOf(shape)) throw new RangeError(`input has ${input.data.length} values for shape ${formatShape(shape)}`);
    return Variable.leaf(toPrecision(input.data, this.precision), shape);
  }

  /** Checks labels and label smoothing; returns the smoothing. */
  private checkTargets(labels: Int32Array, batch: number, labelSmoothing: number | undefined): number {
    if (!(labels instanceof Int32Array)) throw new TypeError('labels must be an Int32Array');
    if (labels.length !== batch) throw new RangeError(`${labels.length} labels for a batch of ${batch}`);
    const classes = this.spec.numClasses;
    const bad = labels.findIndex((label) => label < 0 || label >= classes);
    if (bad >= 0) throw new RangeError(`label ${labels[bad]} of sample ${bad} is not a class in [0, ${classes})`);
    const smoothing = labelSmoothing ?? 0;
    if (typeof smoothing !== 'number' || !(smoothing >= 0 && smoothing <= 1))
      throw new RangeError(`labelSmoothing must be in [0, 1], got ${String(smoothing)}`);
    return smoothing;
  }

  /** State-dict keys in torch's order: a module's parameters, then its buffers. */
  private buildStateSlots(): StateSlot[] {
    const slots: StateSlot[] = [];
    const precision = this.precision;
    for (const p of this.params) {
      slots.push({
        name: p.info.name,
        shape: p.info.shape,
        read: () => p.data.slice(),
        write: (values) => p.data.set(values),
      });
      if (p.info.role !== 'bn_bias') continue;
      const prefix = p.info.name.slice(0, -'.bias'.length);
      const stats = this.batchNorms.get(prefix);
      if (stats === undefined) throw new Error(`reference network: no running statistics for '${prefix}'`);
      slots.push(
        {
          name: `${prefix}.running_mean`,
          shape: [stats.runningMean.length],
          read: () => stats.runningMean.slice(),
          write: (v) => stats.runningMean.set(v),
        },
        {
          name: `${prefix}.running_var`,
          shape: [stats.runningVar.length],
          read: () => stats.runningVar.slice(),
          write: (v) => stats.runningVar.set(v),
        },
        {
          name: `${prefix}.num_batches_tracked`,
          shape: [],
          checkValues: (v) => (Number.isSafeInteger(v[0]) && v[0] >= 0 ? null : `expected a non-negative integer count, got ${v[0]}`),
          read: () => toPrecision([stats.numBatchesTracked], precision),
          write: (v) => {
            stats.numBatchesTracked = v[0];
          },
        },
      );
    }
    return slots;
  }
}

function checkMode(mode: string): 'train' | 'eval' {
  if (mode !== 'train' && mode !== 'eval') throw new RangeError(`mode must be 'train' or 'eval', got '${mode}'`);
  return mode;
}
