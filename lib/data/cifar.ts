// CIFAR-10 and CIFAR-100 in their "binary version": fixed-size records of label byte(s) then 3072 pixel bytes,
// the red, green and blue planes of a 32x32 image, each row-major, which is already CHW.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { INPUT_LIMITS, readInputFile } from '../input-file';
import type { ImageDataset, Split } from './dataset';
import { DataFormatError, firstExisting, formatError, readDataFile, readLabels, type DataFile } from './files';

export type CifarVariant = 'cifar10' | 'cifar100';

/** CIFAR-10's labels 0..9, as batches.meta.txt lists them. */
export const CIFAR10_CLASSES: readonly string[] = [
  'airplane',
  'automobile',
  'bird',
  'cat',
  'deer',
  'dog',
  'frog',
  'horse',
  'ship',
  'truck',
];

export interface CifarOptions {
  /** CIFAR-100 only: the 100 fine labels (default) or the 20 coarse super-classes. */
  readonly labels?: 'fine' | 'coarse';
  /** Default: '<variant>/<split>', with '-coarse' for coarse labels. */
  readonly name?: string;
}

const SIDE = 32;
const CHANNELS = 3;
const IMAGE_SIZE = CHANNELS * SIDE * SIDE;

interface LabelColumn {
  /** Position of this label in each record. */
  readonly offset: number;
  readonly numClasses: number;
  /** Text file, one class name a line, shipped beside the records. */
  readonly namesFile: string;
}

interface Layout {
  /** The folder the official tarball unpacks to; `dir` may be it or its parent. */
  readonly folder: string;
  readonly files: Readonly<Record<Split, readonly string[]>>;
  /** Label bytes before the pixels of each record. */
  readonly labelBytes: number;
  readonly fine: LabelColumn;
  readonly coarse?: LabelColumn;
}

const LAYOUTS: Readonly<Record<CifarVariant, Layout>> = {
  cifar10: {
    folder: 'cifar-10-batches-bin',
    files: { train: [1, 2, 3, 4, 5].map((k) => `data_batch_${k}.bin`), test: ['test_batch.bin'] },
    labelBytes: 1,
    fine: { offset: 0, numClasses: 10, namesFile: 'batches.meta.txt' },
  },
  cifar100: {
    folder: 'cifar-100-binary',
    files: { train: ['train.bin'], test: ['test.bin'] },
    labelBytes: 2,
    fine: { offset: 1, numClasses: 100, namesFile: 'fine_label_names.txt' },
    coarse: { offset: 0, numClasses: 20, namesFile: 'coarse_label_names.txt' },
  },
};

/** Reads a CIFAR split from `dir` (the folder holding the .bin files, or the folder the tarball unpacked in).
 * Every label byte of every record is range-checked, including the column not returned. */
export function loadCifar(dir: string, variant: CifarVariant, split: Split, options: CifarOptions = {}): ImageDataset {
  const layout = LAYOUTS[variant];
  const choice = options.labels ?? 'fine';
  const column = choice === 'coarse' ? layout.coarse : layout.fine;
  if (column === undefined) throw new RangeError(`loadCifar: ${variant} has no ${choice} labels`);
  const recordSize = layout.labelBytes + IMAGE_SIZE;
  const [firstName] = layout.files[split];
  const folder = path.dirname(firstExisting([path.join(dir, firstName), path.join(dir, layout.folder, firstName)]));

  const files = layout.files[split].map((name) => readDataFile(path.join(folder, name)));
  const recordCounts = files.map((file) => countRecords(file, recordSize));
  const count = recordCounts.reduce((sum, n) => sum + n, 0);
  const images = new Uint8Array(count * IMAGE_SIZE);
  const labels = new Int32Array(count);
  let first = 0;
  files.forEach((file, k) => {
    const n = recordCounts[k];
    // The column not returned is checked too: a bad byte there means a damaged or misread record.
    for (const other of [layout.fine, layout.coarse]) {
      if (other !== undefined && other !== column) readLabels(file, other.offset, recordSize, n, other.numClasses);
    }
    labels.set(readLabels(file, column.offset, recordSize, n, column.numClasses), first);
    for (let r = 0; r < n; r++) {
      const pixels = r * recordSize + layout.labelBytes;
      images.set(file.bytes.subarray(pixels, pixels + IMAGE_SIZE), (first + r) * IMAGE_SIZE);
    }
    first += n;
  });

  const classNames =
    readClassNames(path.join(folder, column.namesFile), column.numClasses) ?? (variant === 'cifar10' ? CIFAR10_CLASSES : undefined);
  return {
    name: options.name ?? `${variant}/${split}${choice === 'coarse' ? '-coarse' : ''}`,
    images,
    labels,
    count,
    channels: CHANNELS,
    height: SIDE,
    width: SIDE,
    numClasses: column.numClasses,
    ...(classNames !== undefined && { classNames }),
  };
}

function countRecords(file: DataFile, recordSize: number): number {
  const length = file.bytes.length;
  if (length === 0) throw formatError(file, 0, `no records at byte 0 (empty file; record size ${recordSize})`);
  const whole = Math.floor(length / recordSize);
  if (whole * recordSize !== length) {
    throw formatError(
      file,
      whole * recordSize,
      `truncated record at byte ${whole * recordSize} (record size ${recordSize}; the file has ${length} bytes)`,
    );
  }
  return whole;
}

/** The names in a one-name-a-line file, or undefined when there is no such file. */
function readClassNames(file: string, numClasses: number): readonly string[] | undefined {
  if (!fs.existsSync(file)) return undefined;
  const names = readInputFile(file, path.basename(file), INPUT_LIMITS.small)
    .toString('utf8')
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '');
  if (names.length !== numClasses) {
    throw new DataFormatError(file, undefined, `${path.basename(file)}: ${names.length} class names for ${numClasses} classes`);
  }
  return names;
}
