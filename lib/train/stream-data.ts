// Training and evaluation data that streams from an image folder (train/ and val/): batches decoded on
// the loader threads, uploaded to the device one at a time (pinned memory on CUDA), normalised there.
import * as os from 'node:os';
import * as path from 'node:path';
import { stratifiedSplit } from '../data/dataset';
import { DataFormatError } from '../data/files';
import { ImageFolderStream, type SkippedImage, type StreamAugment, type StreamBatch } from '../data/image-stream';
import { rendezvousFromEnv, shardPermutation } from '../distributed/worker';
import { native, type EpochMetrics, type NativeDataset, type PrecisionOptions, type Tensor } from '../native';
import type { NativeBackendNetwork } from '../native-backend';
import { channelStats, type FolderSpec, type Normalization } from './data';

/** ImageNet's per-channel mean and std (of pixel / 255), as the official code normalises. */
export const IMAGENET_NORMALIZATION: Normalization = { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] };

/** Images the 'sample' normalisation estimates the mean and std from. */
const NORMALIZATION_SAMPLE = 512;

/** One split of a streaming folder: the stream and the indices used (all, or a class-balanced subset). */
class StreamSplit {
  constructor(
    readonly stream: ImageFolderStream,
    readonly indices: Int32Array,
  ) {}

  get count(): number {
    return this.indices.length;
  }

  /** The data set indices of an epoch in sample order (of this rank, with data parallelism). */
  order(seed: number, epoch: number, shard?: { rank: number; worldSize: number; batchSize: number }): Int32Array {
    const full = native().permutation(this.count, seed, epoch);
    const permutation: Tensor<'int64'> = shard ? shardPermutation(full, shard.rank, shard.worldSize, shard.batchSize) : full;
    const positions = permutation.toArray();
    permutation.dispose();
    if (shard) full.dispose();
    return Int32Array.from(positions, (p) => this.indices[Number(p)]!);
  }
}

export class StreamData {
  private constructor(
    readonly train: StreamSplit,
    readonly test: StreamSplit,
    readonly spec: FolderSpec,
  ) {}

  /** Opens `dir/train` and `dir/val`; their class folders must be the same. */
  static open(spec: FolderSpec, seed: number): StreamData {
    // Data parallel on one host: the cores shared among its processes' loaders.
    const processes = rendezvousFromEnv()?.localWorldSize ?? 1;
    const options = {
      size: spec.size,
      threads: spec.threads ?? Math.max(1, Math.floor(os.availableParallelism() / processes)),
      ...(spec.prefetch !== undefined ? { prefetch: spec.prefetch } : {}),
      ...(spec.cropFraction !== undefined ? { cropFraction: spec.cropFraction } : {}),
      ...(spec.shrinkOnLoad !== undefined ? { shrinkOnLoad: spec.shrinkOnLoad } : {}),
    };
    const train = ImageFolderStream.open(path.join(spec.dir, 'train'), options);
    let test: ImageFolderStream;
    try {
      test = ImageFolderStream.open(path.join(spec.dir, 'val'), options);
    } catch (e) {
      train.close();
      throw e;
    }
    const differ = classDifference(train.classNames, test.classNames);
    if (differ) {
      train.close();
      test.close();
      throw new DataFormatError(spec.dir, undefined, `${spec.dir}: train/ and val/ have different classes: ${differ}`);
    }
    const subset = (s: ImageFolderStream, count: number | undefined, splitSeed: number): Int32Array =>
      count === undefined || count >= s.count
        ? Int32Array.from({ length: s.count }, (_, i) => i)
        : Int32Array.from(stratifiedSplit(s.labels, s.numClasses, count / s.count, splitSeed).subset);
    return new StreamData(
      new StreamSplit(train, subset(train, spec.trainSubset, seed)),
      new StreamSplit(test, subset(test, spec.testSubset, seed + 1)),
      spec,
    );
  }

  get numClasses(): number {
    return this.train.stream.numClasses;
  }

  /** As data.normalization says: given, ImageNet's, or the mean and std of up to 512 training images (a seeded
   * choice, evaluation transform). */
  async normalization(seed: number): Promise<Normalization> {
    const given = this.spec.normalization;
    if (given === 'imagenet') return IMAGENET_NORMALIZATION;
    if (typeof given === 'object') return { mean: [...given.mean], std: [...given.std] };
    const order = this.train.order(seed, 0).subarray(0, NORMALIZATION_SAMPLE);
    const images: Uint8Array[] = [];
    let count = 0;
    for await (const b of this.train.stream.batches({ epoch: 0, seed, batchSize: 64, transform: 'eval', order })) {
      images.push(b.images);
      count += b.count;
    }
    if (count === 0)
      throw new DataFormatError(this.train.stream.dir, undefined, `${this.train.stream.dir}: none of the sampled images could be read`);
    const size = this.spec.size;
    const all = new Uint8Array(count * 3 * size * size);
    let at = 0;
    for (const part of images) {
      all.set(part, at);
      at += part.length;
    }
    return channelStats({
      name: 'sample',
      images: all,
      labels: new Int32Array(count),
      count,
      channels: 3,
      height: size,
      width: size,
      numClasses: 1,
    });
  }

  /** The training batches of one epoch from batch `startBatch` on. */
  trainBatches(o: {
    seed: number;
    epoch: number;
    batchSize: number;
    startBatch: number;
    augment: StreamAugment;
    shard?: { rank: number; worldSize: number; batchSize: number };
  }): AsyncGenerator<StreamBatch, void, undefined> {
    return this.train.stream.batches({
      epoch: o.epoch,
      seed: o.seed,
      batchSize: o.batchSize,
      transform: 'train',
      augment: o.augment,
      order: this.train.order(o.seed, o.epoch, o.shard),
      startBatch: o.startBatch,
      dropLast: true,
    });
  }

  /** Loss and accuracy over the validation images (evaluation transform); unreadable ones are reported. */
  async evaluate(
    network: NativeBackendNetwork,
    o: {
      batchSize: number;
      normalization: Normalization;
      device: string;
      precision?: PrecisionOptions;
      onSkipped?: (s: readonly SkippedImage[]) => void;
    },
  ): Promise<EpochMetrics> {
    let count = 0;
    let lossSum = 0;
    let correct = 0;
    for await (const b of this.test.stream.batches({
      epoch: 0,
      seed: 0,
      batchSize: o.batchSize,
      transform: 'eval',
      order: this.test.indices,
    })) {
      if (b.skipped.length) o.onSkipped?.(b.skipped);
      if (b.count === 0) continue;
      const ds = uploadBatch(b, o.normalization, o.device);
      try {
        const m = await network.evaluate(ds, b.count, o.precision);
        count += m.count;
        lossSum += m.loss * m.count;
        correct += m.accuracy * m.count;
      } finally {
        ds.dispose();
      }
    }
    return { count, loss: count ? lossSum / count : NaN, accuracy: count ? correct / count : NaN };
  }

  close(): void {
    this.train.stream.close();
    this.test.stream.close();
  }
}

/** A stream batch on the device, as a one-batch data set. */
export function uploadBatch(b: StreamBatch, normalization: Normalization, device: string): NativeDataset {
  return new (native().Dataset)(b.images, [b.count, 3, b.size, b.size], b.labels, { device, ...normalization, augmentSeed: 0 });
}

/** Where two class lists differ, in words; '' when they are the same. */
function classDifference(train: readonly string[], val: readonly string[]): string {
  const onlyTrain = train.filter((c) => !val.includes(c));
  const onlyVal = val.filter((c) => !train.includes(c));
  const list = (names: string[]) => names.slice(0, 5).join(', ') + (names.length > 5 ? `, … (${names.length})` : '');
  return [onlyTrain.length ? `only in train/: ${list(onlyTrain)}` : '', onlyVal.length ? `only in val/: ${list(onlyVal)}` : '']
    .filter(Boolean)
    .join('; ');
}
