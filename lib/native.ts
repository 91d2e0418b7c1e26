// The native addon as typed by this package. Loaded lazily, so that the pure-TypeScript backend and
// `repopt --help` work where the addon cannot load.
import * as path from 'path';
import { chooseBinary, describeLibtorch, HOW_TO_FIX } from './binary';
import type { RandAugmentOpName, RandAugmentSpec } from './data/randaugment';
import type { NativeOptimizerConfig } from './optimizer-spec';
import type { MixDraw } from './train/mixup';

export type DType = 'float32' | 'float64' | 'int32' | 'int64' | 'uint8';

export type TensorData = Float32Array | Float64Array | Int32Array | BigInt64Array | Uint8Array;

export type ArrayOf<D extends DType> = D extends 'float32'
  ? Float32Array
  : D extends 'float64'
    ? Float64Array
    : D extends 'int32'
      ? Int32Array
      : D extends 'int64'
        ? BigInt64Array
        : Uint8Array;

export type DTypeOf<A extends TensorData> = A extends Float32Array
  ? 'float32'
  : A extends Float64Array
    ? 'float64'
    : A extends Int32Array
      ? 'int32'
      : A extends BigInt64Array
        ? 'int64'
        : 'uint8';

/** A libtorch tensor owned by JS. Memory is freed by `dispose()` or, failing that, by the GC. */
export interface Tensor<D extends DType = DType> {
  readonly shape: number[];
  readonly dtype: D;
  /** 'cpu', 'cuda:0', ... */
  readonly device: string;
  readonly nbytes: number;
  readonly isDisposed: boolean;
  /** A copy of the elements in row-major order, on the host. */
  toArray(): ArrayOf<D>;
  /** A new tensor on `device`, optionally converted to `dtype`. */
  to(device: string): Tensor<D>;
  to<E extends DType>(device: string, dtype: E): Tensor<E>;
  matmul(other: Tensor<D>): Tensor<D>;
  /** matmul off the JS thread. */
  matmulAsync(other: Tensor<D>): Promise<Tensor<D>>;
  /** Frees the tensor now. Idempotent; any later use throws. */
  dispose(): void;
}

export interface TensorStatics {
  fromArray<A extends TensorData>(data: A, shape?: readonly number[]): Tensor<DTypeOf<A>>;
  zeros<D extends DType = 'float32'>(shape: readonly number[], dtype?: D): Tensor<D>;
  /** Standard normal samples from libtorch's generator (see manualSeed). */
  randn<D extends 'float32' | 'float64' = 'float32'>(shape: readonly number[], dtype?: D): Tensor<D>;
}

export interface NativeRuntimeInfo {
  torchVersion: string;
  cuda: boolean;
  deviceCount: number;
  cudnnVersion: number | null;
  threads: number;
  interopThreads: number;
  cxx11Abi: boolean;
  /** Whether this binary was built against a CUDA libtorch (REPOPT_CUDA); `cuda` says whether a device is usable. */
  cudaBuild: boolean;
}

export interface MemoryInfo {
  /** Bytes of the tensors that JS currently owns in this environment. */
  tensorBytes: number;
  /** V8's total of externally allocated memory (tensor bytes are reported to it). */
  v8ExternalBytes: number;
}

/** Spec objects as the native side reads them (see lib/spec.ts and lib/backend.ts). */
export interface NativeOptimizer {
  readonly kind: 'sgd' | 'adamw' | 'repopt-sgd' | 'repopt-adamw';
  readonly steps: number;
  /** Bytes held by GradMult tensors (0 for plain optimizers). */
  readonly gradMultBytes: number;
  /** Sets the learning rate of every group, or of one group. */
  setLr(lr: number, group?: number): void;
  /** repopt-sgd only: 'fused' (default; one pass per CPU parameter, foreach on other devices),
   * 'foreach' (multi-tensor ops, any device) or 'reference' (a per-parameter loop of ATen ops). All
   * three agree bit for bit. */
  setImplementation(implementation: 'fused' | 'foreach' | 'reference'): void;
  /** repopt-sgd: the step implementation in use; null for other optimizers. */
  readonly implementation: 'fused' | 'foreach' | 'reference' | null;
  /** The whole optimizer state (options, buffers, GradMults, steps) in libtorch's archive format. */
  stateBytes(): Uint8Array;
  /** Restores stateBytes() output; checks it fully before changing anything. */
  loadStateBytes(bytes: Uint8Array): void;
  dispose(): void;
}

export interface Augmentation {
  /** Random crop of the original size from the image zero-padded by `pad` pixels. */
  readonly pad?: number;
  /** Horizontal flip with probability 1/2. */
  readonly flip?: boolean;
  /** Random-resized crop (torchvision's RandomResizedCrop) back to the image size; excludes pad. */
  readonly resizedCrop?: boolean;
  /** Area fraction range of the crop box (default [0.08, 1]). */
  readonly cropScale?: readonly [number, number];
  /** Aspect ratio range of the crop box (default [3/4, 4/3]). */
  readonly cropRatio?: readonly [number, number];
}

/** Images (uint8) and labels uploaded once to a device; batches are gathered and augmented there. */
export interface NativeDataset {
  readonly count: number;
  /** [C, H, W] */
  readonly shape: number[];
  readonly device: string;
  /** The sample order of an epoch, a function of (seed, epoch) only. */
  permutation(seed: number, epoch: number): Tensor<'int64'>;
  /** Normalised images and labels of the given samples. */
  batch(indices: Tensor, augmentation?: Augmentation, dtype?: 'float32' | 'float64'): [Tensor, Tensor<'int64'>];
  /** The augmentation generator's state, for exact resume. */
  rngState(): Uint8Array;
  setRngState(state: Uint8Array): void;
  dispose(): void;
}

export interface EpochMetrics {
  readonly count: number;
  readonly loss: number;
  readonly accuracy: number;
  /** Steps skipped for non-finite values since the last read (trainBatch with skipNonFinite). */
  readonly skipped?: number;
}

export interface PrecisionOptions {
  /** Forward pass in bfloat16 where autocast allows (like torch.autocast); 'none' by default. */
  readonly autocast?: 'bf16' | 'none';
}

export interface TrainBatchOptions extends Augmentation, PrecisionOptions {
  readonly labelSmoothing?: number;
  /** Gradient-norm clipping (0: none). */
  readonly clipNorm?: number;
  /** Skip the optimizer step when the loss or a gradient is not finite (costs a sync per step). */
  readonly skipNonFinite?: boolean;
  /** Micro-batches per optimizer step (divides batchSize): each forward + backward with the loss / n,
   * then one optimizer step. Not on a network attached to a process group. */
  readonly accumulate?: number;
  /** After each optimizer step: network = decay * network + (1 - decay) * this network over every
   * floating parameter and buffer (integer buffers copied); same architecture, device and dtype. */
  readonly ema?: { readonly network: NativeNetwork; readonly decay: number };
  /** Mixup / CutMix of each step of the call (lib/train/mixup.ts): one entry per step, null: not mixed. */
  readonly mix?: readonly (MixDraw | null)[];
}

/** Which training batches a step takes: batch `batchIndex` of `permutation` in `dataset` (or `count`
 * consecutive ones, in one native loop), with the step's options. */
export type BatchSelection = [
  dataset: NativeDataset,
  permutation: Tensor,
  batchIndex: number,
  batchSize: number,
  options?: TrainBatchOptions,
  count?: number,
];

export interface QuantOptions {
  /** 'minmax' (running min and max) or 'percentile' (per batch the nearest-rank (100-p)-th and p-th
   * percentiles, averaged over batches). Default 'minmax'. */
  readonly observer?: 'minmax' | 'percentile';
  /** The upper percentile of the 'percentile' observer, in (50, 100]; default 99.99. */
  readonly percentile?: number;
  /** Activation type: 'uint8' [0, 255] (default; the only one real int8 inference runs) or 'int8'. */
  readonly activations?: 'uint8' | 'int8';
  /** QAT: the moving-average factor by which ranges follow each batch's min and max (default 0.01). */
  readonly qatMomentum?: number;
}

export interface QuantPointParams {
  /** 'input', a block name ('stage1.0'), 'pool' or 'logits'. */
  readonly name: string;
  readonly min: number;
  readonly max: number;
  readonly scale: number;
  readonly zeroPoint: number;
  readonly qmin: number;
  readonly qmax: number;
}

export interface QuantParams {
  readonly observer: 'minmax' | 'percentile';
  readonly percentile: number;
  readonly activations: 'uint8' | 'int8';
  readonly points: QuantPointParams[];
  /** Per-output-channel symmetric int8 scales of each conv weight and linear.weight. */
  readonly weights: { key: string; scales: Float64Array }[];
}

export interface QuantizedLayer {
  /** The float weight's state_dict key. */
  readonly key: string;
  readonly shape: number[];
  readonly weight: Int8Array;
  readonly scales: Float64Array;
  /** int32 bias with per-channel scale (input scale x weight scale); deploy convs and the linear layer. */
  readonly bias?: Int32Array;
}

export interface NativeNetwork {
  readonly device: string;
  readonly dtype: DType;
  /** Copies of parameters and buffers, keyed by the official names. */
  stateDict(): Record<string, Tensor>;
  loadStateDict(state: Record<string, Tensor>): void;
  forward(input: Tensor, mode: 'train' | 'eval'): Tensor;
  /** The resolved spec of lib/optimizer-spec.ts (nativeOptimizerConfig): every field present. */
  createOptimizer(config: NativeOptimizerConfig): NativeOptimizer;
  trainStep(optimizer: NativeOptimizer, input: Tensor, labels: Tensor, labelSmoothing?: number): number;
  trainStepAsync(optimizer: NativeOptimizer, input: Tensor, labels: Tensor, labelSmoothing?: number): Promise<number>;
  /** One training step on batch `batchIndex` of `permutation` (or `count` consecutive steps in one native
   * loop); loss and accuracy accumulate on the device. */
  trainBatch(optimizer: NativeOptimizer, ...batches: BatchSelection): void;
  /** trainBatch off the JS thread (libuv pool). Until it settles every call on this network, the
   * optimizer and the dataset throws ("...: an asynchronous step is running on this ...; await it first"). */
  trainBatchAsync(optimizer: NativeOptimizer, ...batches: BatchSelection): Promise<void>;
  /** Means since the last call (one device synchronisation). */
  takeTrainMetrics(): EpochMetrics;
  /** Loss and accuracy over the whole data set, eval mode, no augmentation. */
  evaluate(dataset: NativeDataset, batchSize: number, options?: PrecisionOptions): EpochMetrics;
  /** evaluate off the JS thread; the network and the dataset are busy until it settles. */
  evaluateAsync(dataset: NativeDataset, batchSize: number, options?: PrecisionOptions): Promise<EpochMetrics>;
  /** BatchNorm in training mode: per-process batch statistics (default) or frozen (running statistics,
   * not updated). SyncBatchNorm comes with ProcessGroup.attach. */
  setBatchNormMode(mode: 'batch' | 'frozen'): void;
  /** Conv weights (and inputs) in channels-last layout; only before optimizers are created. */
  setChannelsLast(on: boolean): void;
  /** Moves parameters and buffers to 'cpu' / 'cuda[:n]'; only before optimizers are created. */
  to(device: string): void;
  /** Benchmarks: sets fixed random gradients, then times `steps` optimizer steps (ms each). */
  timeOptimizerSteps(optimizer: NativeOptimizer, steps: number): Float64Array;
  /** Plain networks (target or deploy blocks), float32: eval-mode forwards of the first `batches`
   * batches in `permutation` order observe every quantization point; replaces earlier ranges. */
  calibrate(dataset: NativeDataset, permutation: Tensor, batchSize: number, batches: number, options?: QuantOptions): QuantParams;
  /** calibrate off the JS thread; the network and the dataset are busy until it settles. */
  calibrateAsync(
    dataset: NativeDataset,
    permutation: Tensor,
    batchSize: number,
    batches: number,
    options?: QuantOptions,
  ): Promise<QuantParams>;
  /** Ranges from elsewhere (another network of the same blocks, a file); names must match. */
  setQuantRanges(ranges: QuantOptions & { points: readonly { name: string; min: number; max: number }[] }): QuantParams;
  quantParams(): QuantParams | null;
  /** forward / evaluate / trainBatch run the fake-quantized network (QAT when training). */
  setFakeQuant(on: boolean): void;
  /** Real int8 inference with libtorch's quantized CPU kernels (QNNPACK); deploy networks. */
  evaluateInt8(dataset: NativeDataset, batchSize: number): EpochMetrics;
  /** evaluateInt8 off the JS thread; the network and the dataset are busy until it settles. */
  evaluateInt8Async(dataset: NativeDataset, batchSize: number): Promise<EpochMetrics>;
  forwardInt8(input: Tensor): Tensor<'float32'>;
  /** The int8 weights and int32 biases of the current weights and ranges. */
  quantizedWeights(): QuantizedLayer[];
  dispose(): void;
}

/** A c10d process group (TCPStore rendezvous; Gloo, or NCCL on CUDA builds). Collectives block
 * until every rank has called them, or fail after the group's timeout. */
export interface NativeProcessGroup {
  readonly rank: number;
  readonly worldSize: number;
  readonly backend: 'gloo' | 'nccl';
  /** A new tensor with the element-wise reduction over all ranks. */
  allreduce<D extends DType>(tensor: Tensor<D>, op?: 'sum' | 'mean' | 'max' | 'min'): Tensor<D>;
  /** A new tensor with root's values (same shape and dtype on every rank). */
  broadcast<D extends DType>(tensor: Tensor<D>, root?: number): Tensor<D>;
  barrier(): void;
  /** Every parameter and buffer of the network takes root's value. */
  broadcastState(network: NativeNetwork, root?: number): void;
  /** Rank 0's weights to every rank; from then on each train step averages the gradients over the
   * group (c10d Reducer: buckets, overlapped with the backward pass) before the optimizer step, and
   * broadcasts rank 0's buffers before the forward pass (as DDP). */
  attach(
    network: NativeNetwork,
    options?: { bucketCapMb?: number; firstBucketCapMb?: number; broadcastBuffers?: boolean; syncBatchNorm?: boolean },
  ): { buckets: number };
  detach(network: NativeNetwork): void;
  dispose(): void;
}

export interface ProcessGroupOptions {
  rank: number;
  worldSize: number;
  masterAddr: string;
  masterPort: number;
  backend?: 'gloo' | 'nccl';
  timeoutMs?: number;
  connectTimeoutMs?: number;
  /** Gloo: network interface to use (GLOO_SOCKET_IFNAME). */
  interface?: string;
  /** Gloo: host name or address to bind. */
  hostname?: string;
  /** One host: the rendezvous store is this file (c10d FileStore) instead of a TCPStore. */
  storeFile?: string;
  /** While ranks are missing, how often onWaiting hears of it (default 10 s). */
  reportEveryMs?: number;
  /** Called (on this thread, within the constructor) every reportEveryMs while ranks are missing, and
   * once at the connect timeout (timedOut); a throw ends the wait with that error. */
  onWaiting?: (status: { joined: number[]; waitedMs: number; timedOut: boolean }) => void;
}

/** What the image loader does to each image (lib/data/image-stream.ts validates it). 'train': torchvision's
 * RandomResizedCrop(size, scale, ratio), a flip with p 0.5 when `flip`, then RandAugment when set; 'eval': the
 * shorter side resized to floor(size / cropFraction), then CenterCrop(size). Random draws are keyed by
 * (seed, epoch, image index). */
export interface ImageTransformSpec {
  mode: 'train' | 'eval';
  size: number;
  cropFraction: number;
  scale: readonly [number, number];
  ratio: readonly [number, number];
  flip: boolean;
  /** JPEG: decode at 1/8, 1/4 or 1/2 scale (DCT scaling) where the crop keeps `size` pixels: faster, not pixel-equal to PIL. */
  shrinkOnLoad: boolean;
  seed: number;
  epoch: number;
  randAugment?: RandAugmentSpec;
}

/** One loaded batch: images [n, 3, size, size] uint8 (a failed image's slot is 0); per image a status
 * (0 loaded, 1 failed, 2 not JPEG or PNG: decode it elsewhere and use transformPixels) and a message ('' when loaded). */
export interface LoadedBatch {
  images: Uint8Array;
  status: Uint8Array;
  messages: string[];
}

/** The native loader's decoding threads (its own pool, not libuv's). */
export interface NativeImageLoader {
  readonly threads: number;
  /** Decodes and transforms files[k] as image indices[k]; several calls may be in flight (queued in order). */
  loadBatch(files: readonly string[], indices: Int32Array, spec: ImageTransformSpec): Promise<LoadedBatch>;
  /** The same transform on decoded HWC RGB pixels, into slot `slot` of out (synchronous). */
  transformPixels(
    rgb: Uint8Array,
    width: number,
    height: number,
    index: number,
    spec: ImageTransformSpec,
    out: Uint8Array,
    slot: number,
  ): void;
  /** The training crop (and flip) of image `index` of a width x height image ('train' spec). */
  cropBox(
    width: number,
    height: number,
    index: number,
    spec: ImageTransformSpec,
  ): { top: number; left: number; height: number; width: number; flip: boolean };
  /** Cancels queued batches (their promises reject) and joins the threads. Idempotent. */
  dispose(): void;
}

export interface NativeBinding {
  Tensor: TensorStatics;
  Network: new (spec: object, options?: { precision?: 'float32' | 'float64'; seed?: number }) => NativeNetwork;
  /** The sample order Dataset.permutation(seed, epoch) gives a data set of `count` samples (int64, CPU). */
  permutation(count: number, seed: number, epoch: number): Tensor<'int64'>;
  Dataset: new (
    images: Uint8Array,
    shape: readonly [number, number, number, number],
    labels: Int32Array,
    options: { device?: string; mean: readonly number[]; std: readonly number[]; augmentSeed?: number },
  ) => NativeDataset;
  info(): NativeRuntimeInfo;
  memory(): MemoryInfo;
  /** CUDA caching-allocator bytes on a device (CUDA builds); resetPeak starts a new peak after reading. */
  cudaMemory(device?: number, resetPeak?: boolean): { allocated: number; peakAllocated: number; reserved: number };
  setNumThreads(threads: number): void;
  /** The torch thread count asynchronous work runs with on a libuv pool thread (tests). */
  threadsAsync(): Promise<number>;
  manualSeed(seed: number | bigint): void;
  /** libtorch's CUDA math switches (TF32 in cuDNN and cuBLAS, deterministic and benchmark cuDNN); returns them. */
  setCudaMath(options: { tf32?: boolean; deterministic?: boolean; benchmark?: boolean }): {
    tf32: boolean;
    deterministic: boolean;
    benchmark: boolean;
  };
  /** The observer and qparam rules of calibration, applied to the given tensors. */
  observeRange(batches: readonly Tensor[], options?: QuantOptions): { min: number; max: number; scale: number; zeroPoint: number };
  /** Per-output-channel symmetric int8 scales (max |w| / 127.5). */
  channelScales(weight: Tensor): Float64Array;
  /** One RandAugment op at a given magnitude on an HWC uint8 RGB image; returns the changed copy. sign -1
   * negates signed ops; seed places Cutout. */
  randAugmentOp(
    hwc: Uint8Array,
    height: number,
    width: number,
    op: RandAugmentOpName,
    magnitude: number,
    options?: { sign?: 1 | -1; interpolation?: 'bilinear' | 'bicubic'; fill?: readonly number[]; solarizeAddMax?: number; seed?: number },
  ): Uint8Array;
  /** The whole RandAugment of one image as the loader applies it, its draws keyed by (seed, epoch, index). */
  randAugment(
    hwc: Uint8Array,
    height: number,
    width: number,
    spec: RandAugmentSpec,
    seed: number,
    epoch: number,
    index: number,
  ): Uint8Array;
  ProcessGroup: new (options: ProcessGroupOptions) => NativeProcessGroup;
  ImageLoader: new (options: { threads: number }) => NativeImageLoader;
  /** A JPEG or PNG file as HWC RGB (EXIF orientation applied); throws with the reason it cannot be read. */
  decodeImage(file: string): { width: number; height: number; rgb: Uint8Array };
}

export const packageRoot = path.resolve(__dirname, '..');

export interface LoadedBinding {
  binding: NativeBinding;
  path: string;
  /** 'prebuild' for a shipped binary from prebuilds/, 'source' for a local build (build/Release). */
  kind: 'prebuild' | 'source';
  /** The prebuild's variant (e.g. 'libtorch2_6-cuda12_4'), or null for a source build. */
  prebuild: string | null;
}

let loaded: LoadedBinding | undefined;

// What a failed dlopen means, in the user's terms.
function loadFailure(file: string, e: Error): string {
  const msg = e.message.split('\n')[0];
  const lib = /([\w.+-]+\.so[\w.]*): cannot open shared object file/.exec(msg)?.[1];
  if (lib?.startsWith('libcudnn')) return `${file}: ${msg} (libtorch's CUDA build needs cuDNN; Debian: the nvidia-cudnn package)`;
  if (lib) return `${file}: ${msg} (a library this binary or libtorch needs is not installed)`;
  return `${file}: ${msg}`;
}

/** Loads the addon: a source build first, else the prebuild made for the libtorch installed here
 * (see lib/binary.ts). Never loads a binary built for another libtorch. */
export function loadNative(): LoadedBinding {
  if (loaded) return loaded;
  const choice = chooseBinary(packageRoot);
  const failures: string[] = [];
  for (const c of choice.candidates) {
    let binding: NativeBinding;
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      binding = require(c.file) as NativeBinding;
    } catch (e) {
      failures.push(loadFailure(c.file, e as Error));
      continue;
    }
    loaded = { binding, path: c.file, kind: c.kind, prebuild: c.prebuild?.variant ?? null };
    return loaded;
  }
  throw new Error(
    [
      `repopt: no native addon could be loaded from ${packageRoot}.`,
      `Found here: ${describeLibtorch(choice.found)}.`,
      ...(choice.candidates.length === 0 && choice.passedOver.length === 0
        ? ['No source build (build/Release/repopt.node) and no prebuild for this platform.']
        : []),
      ...choice.passedOver.map((l) => `Passed over: ${l}.`),
      ...failures.map((l) => `Failed to load: ${l}.`),
      HOW_TO_FIX,
    ].join('\n'),
  );
}

export function native(): NativeBinding {
  return loadNative().binding;
}
