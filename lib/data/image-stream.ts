// An image folder read as a stream: the files are listed once, and each batch is read, decoded and
// transformed when it is asked for, on the addon's loader threads (JPEG and PNG; other formats through
// sharp), with a few batches prefetched. Memory holds the prefetched batches only, whatever the folder's size.
import * as os from 'node:os';
import * as path from 'node:path';
import sharp from 'sharp';
import { type ImageTransformSpec, type LoadedBatch, native, type NativeImageLoader } from '../native';
import type { RandAugmentSpec } from './randaugment';
import { listImageFolder } from './image-folder';

export interface ImageStreamOptions {
  /** Output images are size x size, RGB. */
  readonly size: number;
  /** Loader threads (decoding in parallel); default os.availableParallelism(). */
  readonly threads?: number;
  /** Batches decoded ahead of the one being used; default 2. */
  readonly prefetch?: number;
  /** Evaluation: the shorter side is resized to floor(size / cropFraction), then centre-cropped; default 0.875. */
  readonly cropFraction?: number;
  /** JPEG: decode at 1/2, 1/4 or 1/8 scale (DCT scaling) when the crop box is still at least size there. */
  readonly shrinkOnLoad?: boolean;
}

/** The training transform: torchvision's RandomResizedCrop(size, scale, ratio), then a horizontal flip. */
export interface StreamAugment {
  readonly scale: readonly [number, number];
  readonly ratio: readonly [number, number];
  readonly flip: boolean;
  readonly randAugment?: RandAugmentSpec;
}

export interface SkippedImage {
  readonly file: string;
  readonly message: string;
}

/** One batch: `count` images as uint8 [count, 3, size, size] (CHW each) and their labels. Images that could
 * not be read are left out and listed in `skipped` (so count can be below the batch size). */
export interface StreamBatch {
  readonly images: Uint8Array;
  readonly labels: Int32Array;
  readonly count: number;
  readonly size: number;
  /** The data set indices of the images. */
  readonly indices: Int32Array;
  readonly skipped: readonly SkippedImage[];
}

export interface BatchesOptions {
  /** With seed and each image's index, what the random transforms draw: the same batch every time. */
  readonly epoch: number;
  readonly seed: number;
  readonly batchSize: number;
  readonly transform: 'train' | 'eval';
  /** Train only; default torchvision's RandomResizedCrop defaults and a flip. */
  readonly augment?: StreamAugment;
  /** Data set indices in the order to read them; default 0..count-1. */
  readonly order?: ArrayLike<number>;
  /** Start at this batch of `order` (resuming within an epoch). */
  readonly startBatch?: number;
  /** Leave out a last, partial batch; default false. */
  readonly dropLast?: boolean;
}

export const IMAGE_STREAM_DEFAULTS = {
  prefetch: 2,
  cropFraction: 0.875,
  shrinkOnLoad: true,
  augment: { scale: [0.08, 1], ratio: [3 / 4, 4 / 3], flip: true },
} as const satisfies Partial<ImageStreamOptions> & { augment: StreamAugment };

const LOADED = 0;
const NOT_JPEG_OR_PNG = 2;

export class ImageFolderStream {
  readonly classNames: readonly string[];
  readonly files: readonly string[];
  readonly labels: Int32Array;
  private readonly loader: NativeImageLoader;
  private readonly options: Required<ImageStreamOptions>;

  private constructor(
    readonly dir: string,
    options: ImageStreamOptions,
  ) {
    const listing = listImageFolder(dir);
    this.classNames = listing.classNames;
    this.files = listing.files;
    this.labels = listing.labels;
    this.options = {
      threads: os.availableParallelism(),
      prefetch: IMAGE_STREAM_DEFAULTS.prefetch,
      cropFraction: IMAGE_STREAM_DEFAULTS.cropFraction,
      shrinkOnLoad: IMAGE_STREAM_DEFAULTS.shrinkOnLoad,
      ...Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)),
    } as Required<ImageStreamOptions>;
    checkStreamOptions(this.options);
    this.loader = new (native().ImageLoader)({ threads: this.options.threads });
  }

  /** Lists `dir/<class>/**` (as listImageFolder) and starts the loader threads; close() stops them. */
  static open(dir: string, options: ImageStreamOptions): ImageFolderStream {
    return new ImageFolderStream(dir, options);
  }

  get count(): number {
    return this.files.length;
  }

  get numClasses(): number {
    return this.classNames.length;
  }

  get size(): number {
    return this.options.size;
  }

  /** The batches of one pass over `order`, `prefetch` of them decoding ahead of the one returned. */
  async *batches(options: BatchesOptions): AsyncGenerator<StreamBatch, void, undefined> {
    const { epoch, seed, batchSize, transform, startBatch = 0, dropLast = false } = options;
    const order = options.order ?? Array.from({ length: this.count }, (_, i) => i);
    const augment: StreamAugment = options.augment ?? IMAGE_STREAM_DEFAULTS.augment;
    const spec: ImageTransformSpec = {
      mode: transform,
      size: this.options.size,
      cropFraction: this.options.cropFraction,
      scale: augment.scale,
      ratio: augment.ratio,
      flip: transform === 'train' && augment.flip,
      shrinkOnLoad: this.options.shrinkOnLoad,
      seed,
      epoch,
      ...(transform === 'train' && augment.randAugment ? { randAugment: augment.randAugment } : {}),
    };
    const batchCount = dropLast ? Math.floor(order.length / batchSize) : Math.ceil(order.length / batchSize);
    const pending: Promise<StreamBatch>[] = [];
    let next = startBatch;
    const request = () => {
      const indices = Int32Array.from(
        { length: Math.min(batchSize, order.length - next * batchSize) },
        (_, k) => order[next * batchSize + k]!,
      );
      const promise = this.load(indices, spec);
      // Awaited in turn below; a batch left behind by an early return must not surface as unhandled.
      promise.catch(() => {});
      pending.push(promise);
      next++;
    };
    try {
      while (next < batchCount && pending.length < this.options.prefetch) request();
      while (pending.length > 0) {
        const batch = await pending.shift()!;
        if (next < batchCount) request();
        yield batch;
      }
    } finally {
      await Promise.allSettled(pending);
    }
  }

  /** Stops the loader threads (after the batches in flight). */
  close(): void {
    this.loader.dispose();
  }

  private async load(indices: Int32Array, spec: ImageTransformSpec): Promise<StreamBatch> {
    const files = Array.from(indices, (i) => this.files[i]!);
    const loaded: LoadedBatch = await this.loader.loadBatch(files, indices, spec);
    const { images, status, messages } = loaded;
    const imageBytes = 3 * spec.size * spec.size;
    for (let slot = 0; slot < files.length; slot++) {
      if (status[slot] !== NOT_JPEG_OR_PNG) continue;
      try {
        const { data, info } = await sharp(files[slot]!)
          .rotate()
          .removeAlpha()
          .toColourspace('srgb')
          .raw()
          .toBuffer({ resolveWithObject: true });
        this.loader.transformPixels(
          new Uint8Array(data.buffer, data.byteOffset, data.length),
          info.width,
          info.height,
          indices[slot]!,
          spec,
          images,
          slot,
        );
        status[slot] = LOADED;
      } catch (e) {
        messages[slot] = `cannot decode: ${(e as Error).message}`;
      }
    }
    const skipped: SkippedImage[] = [];
    const kept: number[] = [];
    for (let slot = 0; slot < files.length; slot++) {
      if (status[slot] === LOADED) kept.push(slot);
      else skipped.push({ file: files[slot]!, message: `${path.relative(this.dir, files[slot]!)}: ${messages[slot]}` });
    }
    // Left out in place: the images after a skipped one move up.
    kept.forEach((slot, k) => {
      if (slot !== k) images.copyWithin(k * imageBytes, slot * imageBytes, (slot + 1) * imageBytes);
    });
    const keptIndices = Int32Array.from(kept, (slot) => indices[slot]!);
    return {
      images: kept.length === files.length ? images : images.subarray(0, kept.length * imageBytes),
      labels: Int32Array.from(keptIndices, (i) => this.labels[i]!),
      count: kept.length,
      size: spec.size,
      indices: keptIndices,
      skipped,
    };
  }
}

function checkStreamOptions(o: Required<ImageStreamOptions>): void {
  const positive = (v: number) => Number.isInteger(v) && v > 0;
  if (!positive(o.size)) throw new RangeError(`ImageFolderStream: size must be a positive integer, got ${o.size}`);
  if (!positive(o.threads)) throw new RangeError(`ImageFolderStream: threads must be a positive integer, got ${o.threads}`);
  if (!positive(o.prefetch)) throw new RangeError(`ImageFolderStream: prefetch must be a positive integer, got ${o.prefetch}`);
  if (!(o.cropFraction > 0 && o.cropFraction <= 1))
    throw new RangeError(`ImageFolderStream: cropFraction must be in (0, 1], got ${o.cropFraction}`);
}
