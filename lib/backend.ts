// The interface both backends implement: 'native' (libtorch through the addon) and 'reference'
// (pure TypeScript, no native code). A training script picks one and runs unchanged on either.
import type { RepConv } from './repopt';
import type { NetworkSpec, ParamInfo, BufferInfo, Precision } from './spec';

/** A host-side tensor: row-major data with its shape. */
export interface HostTensor {
  readonly shape: readonly number[];
  readonly data: Float32Array | Float64Array;
}

/** The GradMult of one conv weight [O, I/groups, k, k], in compact form:
 * M[o,i,p,q] = base[o] + (centre position ? centre[o] : 0) + (identity && i == o % (I/groups) && centre ? 1 : 0),
 * summed in the parameter's precision in that order. */
export interface GradMult {
  readonly param: string;
  readonly shape: readonly [number, number, number, number];
  /** s^power, applied everywhere in the kernel. */
  readonly base: Float64Array;
  /** t^power, added at the kernel centre. */
  readonly centre: Float64Array;
  readonly identity: boolean;
  readonly groups: number;
}

export interface ParamGroupSpec {
  readonly params: readonly string[];
  readonly lr?: number;
  readonly momentum?: number;
  readonly dampening?: number;
  readonly nesterov?: boolean;
  readonly weightDecay?: number;
}

export interface OptimizerSpec {
  /** 'sgd' and 'adamw' follow torch.optim; with gradMults they are RepOptSGD / RepOptAdamW. */
  readonly type: 'sgd' | 'adamw';
  readonly lr: number;
  readonly momentum?: number;
  readonly dampening?: number;
  readonly nesterov?: boolean;
  readonly weightDecay?: number;
  readonly betas?: readonly [number, number];
  readonly eps?: number;
  /** Default: one group holding every trainable parameter. */
  readonly groups?: readonly ParamGroupSpec[];
  /** The RepOptimizer's multipliers, given directly (e.g. the official full tensors' compact form). */
  readonly gradMults?: readonly GradMult[];
  /** Or the convs with their branch scales: the GradMults are made for this optimizer's type (s², t²
   * for SGD; s, t for AdamW, as the official code), so the power cannot be paired wrongly. */
  readonly repConvs?: readonly RepConv[];
  /** 'compact' (default): per-channel vectors; 'full': a tensor shaped like the weight (official code). */
  readonly gradMultStorage?: 'compact' | 'full';
  /** RepOptSGD's step implementation: 'fused' (default), 'foreach' or 'reference'; they agree bit for bit. */
  readonly implementation?: 'fused' | 'foreach' | 'reference';
}

export interface TrainStepOptions {
  readonly labelSmoothing?: number;
}

export interface Optimizer {
  readonly spec: OptimizerSpec;
  /** Steps taken. */
  readonly steps: number;
  dispose(): void;
}

export interface Network {
  readonly backend: BackendName;
  readonly spec: NetworkSpec;
  readonly precision: Precision;
  parameters(): ParamInfo[];
  buffers(): BufferInfo[];
  /** Copies of every parameter and buffer (num_batches_tracked as a 1-element array). */
  stateDict(): Map<string, HostTensor>;
  /** Replaces parameters and buffers; every key and shape must match (throws naming them, loads nothing). */
  loadStateDict(state: ReadonlyMap<string, HostTensor>): void;
  /** Logits [N, numClasses]. 'train' uses batch statistics and updates running statistics. */
  forward(input: HostTensor, mode: 'train' | 'eval'): HostTensor;
  createOptimizer(spec: OptimizerSpec): Optimizer;
  /** zero grad, forward (train), cross-entropy, backward, optimizer step; returns the loss. */
  trainStep(optimizer: Optimizer, input: HostTensor, labels: Int32Array, options?: TrainStepOptions): number;
  dispose(): void;
}

export type BackendName = 'native' | 'reference';

export interface Backend {
  readonly name: BackendName;
  /** A network with PyTorch's default initialisation (seeded). */
  createNetwork(spec: NetworkSpec, options?: { precision?: Precision; seed?: number }): Network;
}
