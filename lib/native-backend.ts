// The libtorch backend: networks and optimizers live in the addon; whole steps cross the seam.
import type { Backend, HostTensor, Network, Optimizer, OptimizerSpec, TrainStepOptions } from './backend';
import {
  type BatchSelection,
  type EpochMetrics,
  native,
  type NativeDataset,
  type NativeNetwork,
  type NativeOptimizer,
  type NativeProcessGroup,
  type PrecisionOptions,
  type QuantizedLayer,
  type QuantOptions,
  type QuantParams,
  type Tensor,
  type TrainBatchOptions,
} from './native';
import { nativeOptimizerConfig, resolveOptimizerSpec, type SgdImplementation } from './optimizer-spec';
import { frameOptimizerState, unframeOptimizerState } from './optimizer-state';
import type { PthTensor } from './pth';
import { bufferInfo, type NetworkSpec, parameterInfo, type Precision, validateSpec } from './spec';

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
  const floating =
    data instanceof Float32Array || data instanceof Float64Array ? data : Float64Array.from(data as ArrayLike<number | bigint>, Number);
  return { shape: t.shape, data: floating };
}

// The addon objects behind the facades: reachable from this module only, so that product code goes
// through the facade methods.
const optimizerHandles = new WeakMap<NativeBackendOptimizer, NativeOptimizer>();
const networkHandles = new WeakMap<NativeBackendNetwork, NativeNetwork>();

function optimizerHandle(optimizer: NativeBackendOptimizer): NativeOptimizer {
  const h = optimizerHandles.get(optimizer);
  if (h === undefined) throw new TypeError('the optimizer was not made by the native backend');
  return h;
}

function networkHandle(network: NativeBackendNetwork): NativeNetwork {
  return networkHandles.get(network)!;
}

/** trainBatch's options, the EMA network given as a network of this backend. */
export type BackendBatchOptions = Omit<TrainBatchOptions, 'ema'> & {
  readonly ema?: { readonly network: NativeBackendNetwork; readonly decay: number };
};
export type BackendBatchSelection = [
  dataset: BatchSelection[0],
  permutation: BatchSelection[1],
  batchIndex: number,
  batchSize: number,
  options?: BackendBatchOptions,
  count?: number,
];

function nativeSelection([dataset, permutation, batchIndex, batchSize, options, count]: BackendBatchSelection): BatchSelection {
  const ema = options?.ema && { network: networkHandle(options.ema.network), decay: options.ema.decay };
  return [dataset, permutation, batchIndex, batchSize, ema ? { ...options, ema } : (options as TrainBatchOptions | undefined), count];
}

export interface AttachOptions {
  bucketCapMb?: number;
  firstBucketCapMb?: number;
  broadcastBuffers?: boolean;
  syncBatchNorm?: boolean;
}

export class NativeBackendOptimizer implements Optimizer {
  constructor(
    readonly spec: OptimizerSpec,
    handle: NativeOptimizer,
  ) {
    optimizerHandles.set(this, handle);
  }
  get steps(): number {
    return optimizerHandle(this).steps;
  }
  get kind(): NativeOptimizer['kind'] {
    return optimizerHandle(this).kind;
  }
  /** repopt-sgd: the step implementation in use; null for other optimizers. */
  get implementation(): SgdImplementation | null {
    return optimizerHandle(this).implementation;
  }
  setImplementation(implementation: SgdImplementation): void {
    optimizerHandle(this).setImplementation(implementation);
  }
  /** Bytes held by GradMult tensors (0 for plain optimizers). */
  get gradMultBytes(): number {
    return optimizerHandle(this).gradMultBytes;
  }
  setLr(lr: number, group?: number): void {
    optimizerHandle(this).setLr(lr, group);
  }
  /** The whole optimizer state (options, buffers, GradMults, steps), framed with its length and
   * SHA-256 (lib/optimizer-state.ts). */
  stateBytes(): Uint8Array {
    return frameOptimizerState(optimizerHandle(this).stateBytes());
  }
  /** Restores stateBytes() output. The frame is verified first: damaged bytes throw `optimizer state: …`
   * and never reach libtorch's archive reader, which a few flipped bits can crash. */
  loadStateBytes(bytes: Uint8Array): void {
    optimizerHandle(this).loadStateBytes(unframeOptimizerState(bytes));
  }
  dispose(): void {
    optimizerHandle(this).dispose();
  }
}

export class NativeBackendNetwork implements Network {
  readonly backend = 'native' as const;

  constructor(
    readonly spec: NetworkSpec,
    readonly precision: Precision,
    seed?: number,
  ) {
    validateSpec(spec);
    networkHandles.set(this, new (native().Network)(spec, seed === undefined ? { precision } : { precision, seed }));
  }

  private get handle(): NativeNetwork {
    return networkHandle(this);
  }

  /** 'cpu', 'cuda:0', ... */
  get device(): string {
    return this.handle.device;
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
      if (name.endsWith('.num_batches_tracked'))
        typed.set(name, { dtype: 'int64', shape: t.shape, data: BigInt64Array.from(t.data, (v) => BigInt(Math.round(v))) });
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

  /** Validated and defaulted once here (lib/optimizer-spec.ts); the addon takes the result as given. */
  createOptimizer(spec: OptimizerSpec): NativeBackendOptimizer {
    const resolved = resolveOptimizerSpec(spec, this.parameters());
    return new NativeBackendOptimizer(spec, this.handle.createOptimizer(nativeOptimizerConfig(resolved)));
  }

  trainStep(optimizer: Optimizer, input: HostTensor, labels: Int32Array, options: TrainStepOptions = {}): number {
    if (!(optimizer instanceof NativeBackendOptimizer)) throw new TypeError('trainStep: the optimizer was not made by this backend');
    const x = toNative(input);
    const y = native().Tensor.fromArray(labels);
    try {
      return this.handle.trainStep(optimizerHandle(optimizer), x, y, options.labelSmoothing ?? 0);
    } finally {
      x.dispose();
      y.dispose();
    }
  }

  /** trainStep off the JS thread. */
  async trainStepAsync(
    optimizer: NativeBackendOptimizer,
    input: HostTensor,
    labels: Int32Array,
    options: TrainStepOptions = {},
  ): Promise<number> {
    const x = toNative(input);
    const y = native().Tensor.fromArray(labels);
    try {
      return await this.handle.trainStepAsync(optimizerHandle(optimizer), x, y, options.labelSmoothing ?? 0);
    } finally {
      x.dispose();
      y.dispose();
    }
  }

  /** Moves parameters and buffers to 'cpu' / 'cuda[:n]'; only before optimizers are created. */
  to(device: string): void {
    this.handle.to(device);
  }

  /** Conv weights (and inputs) in channels-last layout; only before optimizers are created. */
  setChannelsLast(on: boolean): void {
    this.handle.setChannelsLast(on);
  }

  /** BatchNorm in training mode: per-process batch statistics (default) or frozen (running statistics,
   * not updated). SyncBatchNorm comes with attach(pg, { syncBatchNorm: true }). */
  setBatchNormMode(mode: 'batch' | 'frozen'): void {
    this.handle.setBatchNormMode(mode);
  }

  /** One training step on batch `batchIndex` of `permutation` (or `count` consecutive ones), off the
   * JS thread. Until it settles, the network, the optimizer and the dataset refuse every call. */
  async trainBatch(optimizer: NativeBackendOptimizer, ...batches: BackendBatchSelection): Promise<void> {
    // async: a refused call (busy, bad argument) rejects like a failed step, never throws.
    return this.handle.trainBatchAsync(optimizerHandle(optimizer), ...nativeSelection(batches));
  }

  /** trainBatch on the JS thread. */
  trainBatchSync(optimizer: NativeBackendOptimizer, ...batches: BackendBatchSelection): void {
    this.handle.trainBatch(optimizerHandle(optimizer), ...nativeSelection(batches));
  }

  /** Means since the last call (one device synchronisation). */
  takeTrainMetrics(): EpochMetrics {
    return this.handle.takeTrainMetrics();
  }

  /** Loss and accuracy over the whole data set, eval mode, no augmentation; off the JS thread. */
  async evaluate(dataset: NativeDataset, batchSize: number, options?: PrecisionOptions): Promise<EpochMetrics> {
    return this.handle.evaluateAsync(dataset, batchSize, options);
  }

  /** evaluate on the JS thread. */
  evaluateSync(dataset: NativeDataset, batchSize: number, options?: PrecisionOptions): EpochMetrics {
    return this.handle.evaluate(dataset, batchSize, options);
  }

  /** Benchmarks: sets fixed random gradients, then times `steps` optimizer steps (ms each). */
  timeOptimizerSteps(optimizer: NativeBackendOptimizer, steps: number): Float64Array {
    return this.handle.timeOptimizerSteps(optimizerHandle(optimizer), steps);
  }

  /** Plain float32 networks: quantization ranges from eval-mode forwards of the first `batches`
   * batches in `permutation` order (replacing earlier ranges once every batch succeeded); off the JS
   * thread. Until it settles, the network and the dataset refuse every call. */
  async calibrate(
    dataset: NativeDataset,
    permutation: Tensor,
    batchSize: number,
    batches: number,
    options?: QuantOptions,
  ): Promise<QuantParams> {
    // async: a refused call (busy, bad argument) rejects, never throws.
    return this.handle.calibrateAsync(dataset, permutation, batchSize, batches, options);
  }

  /** calibrate on the JS thread. */
  calibrateSync(dataset: NativeDataset, permutation: Tensor, batchSize: number, batches: number, options?: QuantOptions): QuantParams {
    return this.handle.calibrate(dataset, permutation, batchSize, batches, options);
  }

  setQuantRanges(ranges: QuantOptions & { points: readonly { name: string; min: number; max: number }[] }): QuantParams {
    return this.handle.setQuantRanges(ranges);
  }

  quantParams(): QuantParams | null {
    return this.handle.quantParams();
  }

  setFakeQuant(on: boolean): void {
    this.handle.setFakeQuant(on);
  }

  /** Loss and accuracy of real int8 inference (QNNPACK kernels; deploy networks with uint8 ranges) over
   * the whole data set; off the JS thread. Until it settles, the network and the dataset refuse every call. */
  async evaluateInt8(dataset: NativeDataset, batchSize: number): Promise<EpochMetrics> {
    return this.handle.evaluateInt8Async(dataset, batchSize);
  }

  /** evaluateInt8 on the JS thread. */
  evaluateInt8Sync(dataset: NativeDataset, batchSize: number): EpochMetrics {
    return this.handle.evaluateInt8(dataset, batchSize);
  }

  forwardInt8(input: Tensor): Tensor<'float32'> {
    return this.handle.forwardInt8(input);
  }

  quantizedWeights(): QuantizedLayer[] {
    return this.handle.quantizedWeights();
  }

  /** Data parallelism over `pg` (see NativeProcessGroup.attach). */
  attach(pg: NativeProcessGroup, options?: AttachOptions): { buckets: number } {
    return pg.attach(this.handle, options);
  }

  detach(pg: NativeProcessGroup): void {
    pg.detach(this.handle);
  }

  /** Every parameter and buffer takes rank `root`'s value. */
  broadcastState(pg: NativeProcessGroup, root?: number): void {
    pg.broadcastState(this.handle, root);
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
