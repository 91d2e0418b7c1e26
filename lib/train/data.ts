// Training data: which data set, loading it, an optional deterministic subset, and uploading it to
// the training device.
import { ImageDataset, loadCifar, loadFashionMnist, loadImageFolder, splitDataset } from '../data';
import { native, NativeDataset } from '../native';

export type DataSpec =
  | { readonly kind: 'fashion-mnist'; readonly dir?: string; readonly trainSubset?: number; readonly testSubset?: number }
  | { readonly kind: 'cifar10' | 'cifar100'; readonly dir: string; readonly trainSubset?: number; readonly testSubset?: number }
  | { readonly kind: 'folder'; readonly dir: string; readonly size: number; readonly trainSubset?: number; readonly testSubset?: number };

export interface TrainTestData {
  readonly train: ImageDataset;
  readonly test: ImageDataset;
}

/** A class-balanced subset of about `count` images (seeded), or the data set itself. */
function limited(ds: ImageDataset, count: number | undefined, seed: number): ImageDataset {
  if (count === undefined || count >= ds.count) return ds;
  return splitDataset(ds, count / ds.count, seed).subset;
}

export async function loadData(spec: DataSpec, seed: number): Promise<TrainTestData> {
  let train: ImageDataset;
  let test: ImageDataset;
  switch (spec.kind) {
    case 'fashion-mnist':
      [train, test] = [loadFashionMnist('train', spec.dir), loadFashionMnist('test', spec.dir)];
      break;
    case 'cifar10':
    case 'cifar100':
      [train, test] = [loadCifar(spec.dir, spec.kind, 'train'), loadCifar(spec.dir, spec.kind, 'test')];
      break;
    case 'folder':
      train = await loadImageFolder(`${spec.dir}/train`, { height: spec.size, width: spec.size });
      test = await loadImageFolder(`${spec.dir}/val`, { height: spec.size, width: spec.size });
      break;
  }
  return { train: limited(train, spec.trainSubset, seed), test: limited(test, spec.testSubset, seed + 1) };
}

/** Per-channel mean and std of the pixel values / 255 (the normalisation of the training set). */
export function channelStats(ds: ImageDataset): { mean: number[]; std: number[] } {
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

export function uploadDataset(ds: ImageDataset, stats: { mean: number[]; std: number[] }, device: string, augmentSeed: number): NativeDataset {
  return new (native().Dataset)(ds.images, [ds.count, ds.channels, ds.height, ds.width], ds.labels, { device, ...stats, augmentSeed });
}
