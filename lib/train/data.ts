// Training data: which data set, loading it, an optional deterministic subset, and uploading it to
// the training device.
import { type ImageDataset, loadCifar, loadFashionMnist, loadImageFolder, splitDataset } from '../data';
import { native, type NativeDataset } from '../native';

export type DataSpec =
  | { readonly kind: 'fashion-mnist'; readonly dir?: string; readonly trainSubset?: number; readonly testSubset?: number }
  | { readonly kind: 'cifar10' | 'cifar100'; readonly dir: string; readonly trainSubset?: number; readonly testSubset?: number }
  | FolderSpec;

/** An image folder with train/ and val/ (one sub-folder per class in each). */
export interface FolderSpec {
  readonly kind: 'folder';
  readonly dir: string;
  /** Images are size x size. */
  readonly size: number;
  /** 'stream' (default): decoded per batch with torchvision's RandomResizedCrop / resize + centre crop, memory
   * bounded by the prefetch depth; 'memory': decoded once, resized + centre-cropped, held in memory (small sets). */
  readonly loader?: 'stream' | 'memory';
  /** Stream: decoding threads (default: the core count, shared among the processes of a data-parallel run on
   * one host) and batches decoded ahead (default 2). */
  readonly threads?: number;
  readonly prefetch?: number;
  /** Stream evaluation: resize the shorter side to floor(size / cropFraction), centre-crop (default 0.875). */
  readonly cropFraction?: number;
  /** Stream: JPEG DCT-domain downscaling where the crop allows (default true). */
  readonly shrinkOnLoad?: boolean;
  /** Stream: 'sample' (default: mean and std of 512 training images), 'imagenet' (the official constants), or
   * given per channel (R, G, B). */
  readonly normalization?: 'sample' | 'imagenet' | Normalization;
  readonly trainSubset?: number;
  readonly testSubset?: number;
}

/** True when the data set is read from files batch by batch rather than held in memory. */
export function isStreamed(spec: DataSpec): spec is FolderSpec {
  return spec.kind === 'folder' && spec.loader !== 'memory';
}

export interface TrainTestData {
  readonly train: ImageDataset;
  readonly test: ImageDataset;
}

/** A class-balanced subset of about `count` images (seeded), or the data set itself. */
function limited(ds: ImageDataset, count: number | undefined, seed: number): ImageDataset {
  if (count === undefined || count >= ds.count) return ds;
  return splitDataset(ds, count / ds.count, seed).subset;
}

/** One split of a data set (with its subset applied); evaluation reads only the test split. */
export async function loadSplit(spec: DataSpec, split: 'train' | 'test', seed: number): Promise<ImageDataset> {
  let ds: ImageDataset;
  switch (spec.kind) {
    case 'fashion-mnist':
      ds = loadFashionMnist(split, spec.dir);
      break;
    case 'cifar10':
    case 'cifar100':
      ds = loadCifar(spec.dir, spec.kind, split);
      break;
    case 'folder':
      ds = await loadImageFolder(`${spec.dir}/${split === 'train' ? 'train' : 'val'}`, { height: spec.size, width: spec.size });
      break;
  }
  return split === 'train' ? limited(ds, spec.trainSubset, seed) : limited(ds, spec.testSubset, seed + 1);
}

export async function loadData(spec: DataSpec, seed: number): Promise<TrainTestData> {
  return { train: await loadSplit(spec, 'train', seed), test: await loadSplit(spec, 'test', seed) };
}

/** Per-channel mean and std of the pixel values / 255: images are fed as (x / 255 - mean) / std. */
export interface Normalization {
  readonly mean: number[];
  readonly std: number[];
}

/** The normalisation of a training set: its per-channel mean and std. */
export function channelStats(ds: ImageDataset): Normalization {
  const plane = ds.height * ds.width;
  const mean: number[] = [];
  const std: number[] = [];
  for (let c = 0; c < ds.channels; c++) {
    let sum = 0;
    let squares = 0;
    for (let n = 0; n < ds.count; n++) {
      const offset = (n * ds.channels + c) * plane;
      for (let i = 0; i < plane; i++) {
        const v = ds.images[offset + i];
        sum += v;
        squares += v * v;
      }
    }
    const count = ds.count * plane;
    const m = sum / count;
    mean.push(m / 255);
    std.push(Math.sqrt(Math.max(squares / count - m * m, 1e-6)) / 255);
  }
  return { mean, std };
}

export function uploadDataset(ds: ImageDataset, stats: Normalization, device: string, augmentSeed: number): NativeDataset {
  return new (native().Dataset)(ds.images, [ds.count, ds.channels, ds.height, ds.width], ds.labels, { device, ...stats, augmentSeed });
}
