// The libtorch backend: networks and optimizers live in the addon; whole steps cross the seam.
import type { Backend, HostTensor, Network, Optimizer, OptimizerSpec, TrainStepOptions } from './backend';
import { native, NativeNetwork, NativeOptimizer, Tensor } from './native';
import type { PthTensor } from './pth';
import { bufferInfo, NetworkSpec, parameterInfo, Precision, validateSpec } from './spec';

function toNative(t: HostTensor): Tensor {
  return native().Tensor.fromArray(t.data, t.shape);
}

// Typed arrays made by the addon belong to the realm that loaded it, which is not always this one
// (jest runs tests in their own realm): view their memory through this realm's classes.
const VIEWS = { float32: Float32Array, float64: Float64Array, int32: Int32Array, int64: BigInt64Array, uint8: Uint8Array } as const;

function localArray(t: Tensor): PthTensor['data'] {
  const data = t.toArray();
  const View = VIEWS[t.dtype];
  return new View(data.buffer as ArrayBuffer, data.byteOffset, data.length);
}

function toHost(t: Tensor): HostTensor {
  const data = localArray(t);
  const floating = data instanceof Float32Array || data instanceof Float64Array ? data : Float64Array.from(data as ArrayLike<number | bigint>, Number);
  return { shape: t.shape, data: floating };
}

export class NativeBackendOptimizer implements Optimizer {
  constructor(
    readonly spec: OptimizerSpec,
    readonly handle: NativeOptimizer,
  ) {}
  get steps(): number {
    return this.handle.steps;
  }
  dispose(): void {
    this.handle.dispose();
  }
}

export class NativeBackendNetwork implements Network {
  readonly backend = 'native' as const;
  readonly handle: NativeNetwork;

  constructor(
    readonly spec: NetworkSpec,
    readonly precision: Precision,
    seed?: number,
  ) {
    validateSpec(spec);
    this.handle = new (native().Network)(spec, seed === undefined ? { precision } : { precision, seed });
  }

  parameters() {
    return parameterInfo(this.spec);
  }

  buffers() {
    return bufferInfo(this.spec);
  }

  stateDict(): Map<string, HostTensor> {
    const out = new Map<string, HostTensor>();
    for (const [name, t] of Object.entries(this.handle.stateDict())) {
      out.set(name, toHost(t));
      t.dispose();
    }
    return out;
  }

  /** The state with its dtypes (num_batches_tracked int64), as torch.save writes a state_dict. */
  stateTensors(): Map<string, PthTensor> {
    const out = new Map<string, PthTensor>();
    for (const [name, t] of Object.entries(this.handle.stateDict())) {
      out.set(name, { dtype: t.dtype, shape: t.shape, data: localArray(t) });
      t.dispose();
    }
    return out;
  }

  loadStateTensors(state: ReadonlyMap<string, PthTensor>): void {
    const tensors: Record<string, Tensor> = {};
    try {
      for (const [name, t] of state) tensors[name] = native().Tensor.fromArray(t.data, t.shape);
      this.handle.loadStateDict(tensors);
    } finally {
      for (const t of Object.values(tensors)) t.dispose();
    }
  }

  loadStateDict(state: ReadonlyMap<string, HostTensor>): void {
    const typed = new Map<string, PthTensor>();
    for (const [name, t] of state) {
      // Host states hold the batch counts as floats; the network keeps them as int64.
      if (name.endsWith('.num_batches_tracked')) typed.set(name, { dtype: 'int64', shape: t.shape, data: BigInt64Array.from(t.data, (v) => BigInt(Math.round(v))) });
      else typed.set(name, { dtype: t.data instanceof Float32Array ? 'float32' : 'float64', shape: t.shape, data: t.data });
    }
    this.loadStateTensors(typed);
  }

  forward(input: HostTensor, mode: 'train' | 'eval'): HostTensor {
    const x = toNative(input);
    try {
      const y = this.handle.forward(x, mode);
      const out = toHost(y);
      y.dispose();
      return out;
    } finally {
      x.dispose();
    }
  }

  createOptimizer(spec: OptimizerSpec): NativeBackendOptimizer {
    return new NativeBackendOptimizer(spec, this.handle.createOptimizer(spec));
  }

  trainStep(optimizer: Optimizer, input: HostTensor, labels: Int32Array, options: TrainStepOptions = {}): number {
    if (!(optimizer instanceof NativeBackendOptimizer)) throw new TypeError('trainStep: the optimizer was not made by this backend');
    const x = toNative(input);
    const y = native().Tensor.fromArray(labels);
    try {
      return this.handle.trainStep(optimizer.handle, x, y, options.labelSmoothing ?? 0);
    } finally {
      x.dispose();
      y.dispose();
    }
  }

  dispose(): void {
    this.handle.dispose();
  }
}

export const nativeBackend: Backend = {
  name: 'native',
  createNetwork(spec, options = {}) {
    return new NativeBackendNetwork(spec, options.precision ?? 'float32', options.seed);
  },
};
