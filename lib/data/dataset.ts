// The in-memory image data set every reader produces, and whole-data-set helpers (summaries, subsets, splits).

/** The two halves of the classic data sets. */
export type Split = 'train' | 'test';

/** Images as the native side uploads them to the training device in one copy. Every reader returns arrays
 * that own their ArrayBuffer from byte 0. */
export interface ImageDataset {
  /** e.g. 'fashion-mnist/train'. */
  readonly name: string;
  /** count*channels*height*width bytes, NCHW order, row-major. */
  readonly images: Uint8Array;
  /** count labels in [0, numClasses). */
  readonly labels: Int32Array;
  readonly count: number;
  readonly channels: number;
  readonly height: number;
  readonly width: number;
  readonly numClasses: number;
  readonly classNames?: readonly string[];
}

/** Two disjoint parts of a data set, as `splitDataset` makes them. */
export interface DatasetSplit {
  /** About `fraction` of each class. */
  readonly subset: ImageDataset;
  /** Everything else. */
  readonly rest: ImageDataset;
}

/** Images per class: element c counts the labels equal to c. */
export function classCounts(ds: ImageDataset): Int32Array {
  const counts = new Int32Array(ds.numClasses);
  for (const label of ds.labels) counts[label]++;
  return counts;
}

/** One line, e.g. 'fashion-mnist/train: 60000 images 1x28x28, 10 classes (6000 per class), 44.9 MiB'. */
export function describeDataset(ds: ImageDataset): string {
  const counts = classCounts(ds);
  const fewest = counts.length > 0 ? Math.min(...counts) : 0;
  const most = counts.length > 0 ? Math.max(...counts) : 0;
  const perClass = fewest === most ? `${fewest}` : `${fewest} to ${most}`;
  const bytes = ds.images.length;
  const size = bytes < 2 ** 20 ? `${(bytes / 2 ** 10).toFixed(1)} KiB` : `${(bytes / 2 ** 20).toFixed(1)} MiB`;
  return (
    `${ds.name}: ${ds.count} images ${ds.channels}x${ds.height}x${ds.width}, ${ds.numClasses} classes ` + `(${perClass} per class), ${size}`
  );
}

/** The images at `indices`, in that order (repeats allowed), copied into new arrays. */
export function subsetDataset(
  ds: ImageDataset,
  indices: ArrayLike<number>,
  name = `${ds.name}[${indices.length} of ${ds.count}]`,
): ImageDataset {
  const imageSize = ds.channels * ds.height * ds.width;
  const images = new Uint8Array(indices.length * imageSize);
  const labels = new Int32Array(indices.length);
  for (let k = 0; k < indices.length; k++) {
    const i = indices[k];
    if (!Number.isInteger(i) || i < 0 || i >= ds.count) {
      throw new RangeError(`subsetDataset: index ${i} (position ${k}) is outside ${ds.name}'s ${ds.count} images`);
    }
    images.set(ds.images.subarray(i * imageSize, (i + 1) * imageSize), k * imageSize);
    labels[k] = ds.labels[i];
  }
  return { ...ds, name, images, labels, count: indices.length };
}

/** Splits off round(fraction * count) images, stratified: each class gives its share (largest remainders
 * settle the rounding), its members picked by a shuffle seeded with `seed`, so the same arguments always give
 * the same split. Both parts keep the original order. For quick runs take `.subset`; for validation, both. */
export function splitDataset(ds: ImageDataset, fraction: number, seed: number): DatasetSplit {
  if (!(fraction >= 0 && fraction <= 1)) throw new RangeError(`splitDataset: fraction ${fraction} is not in [0, 1]`);
  if (!Number.isInteger(seed) || seed < 0 || seed >= 2 ** 32) {
    throw new RangeError(`splitDataset: seed ${seed} is not an integer in [0, 2^32)`);
  }
  const { subset, rest } = stratifiedSplit(ds.labels, ds.numClasses, fraction, seed);
  const tag = `split ${fraction} seed ${seed}`;
  return { subset: subsetDataset(ds, subset, `${ds.name}[${tag}]`), rest: subsetDataset(ds, rest, `${ds.name}[${tag}, rest]`) };
}

/** The indices splitDataset puts in each part (ascending), from the labels alone: for data sets that are
 * not held in memory. Arguments as splitDataset's, checked there. */
export function stratifiedSplit(
  labels: Int32Array,
  numClasses: number,
  fraction: number,
  seed: number,
): { subset: number[]; rest: number[] } {
  const counts = new Int32Array(numClasses);
  for (const label of labels) counts[label]++;
  const quotas = classQuotas(counts, fraction, Math.round(fraction * labels.length));
  const picked = new Uint8Array(labels.length);
  for (const i of seededPermutation(labels.length, seed)) {
    const label = labels[i];
    if (quotas[label] > 0) {
      quotas[label]--;
      picked[i] = 1;
    }
  }
  const subset: number[] = [];
  const rest: number[] = [];
  for (let i = 0; i < labels.length; i++) (picked[i] ? subset : rest).push(i);
  return { subset, rest };
}

/** Per-class shares of `total`: floor(fraction * count), plus one for the classes with the largest remainders
 * (ties to the lower class) until they sum to `total`. */
function classQuotas(counts: Int32Array, fraction: number, total: number): Int32Array {
  const quotas = counts.map((n) => Math.floor(fraction * n));
  let missing = total - quotas.reduce((sum, q) => sum + q, 0);
  const byRemainder = [...counts.keys()].sort((a, b) => fraction * counts[b] - quotas[b] - (fraction * counts[a] - quotas[a]));
  for (const c of byRemainder) {
    if (missing <= 0) break;
    if (quotas[c] < counts[c]) {
      quotas[c]++;
      missing--;
    }
  }
  return quotas;
}

/** 0..n-1 shuffled by Fisher-Yates driven by mulberry32: small, fast, and the same on every platform. */
function seededPermutation(n: number, seed: number): Uint32Array {
  let state = seed >>> 0;
  const nextUnit = (): number => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
  const order = new Uint32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(nextUnit() * (i + 1));
    [order[i], order[j]] = [order[j], order[i]];
  }
  return order;
}
