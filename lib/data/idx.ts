// MNIST-style IDX files (MNIST, Fashion-MNIST, KMNIST...): a big-endian header, then raw unsigned bytes.
// Images: magic 0x00000803 (unsigned bytes, 3 dimensions), count, rows, columns, pixels.
// Labels: magic 0x00000801 (unsigned bytes, 1 dimension), count, one byte per label.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ImageDataset, Split } from './dataset';
import { DataFormatError, firstExisting, formatError, readDataFile, readLabels, type DataFile } from './files';

/** Where Debian's dataset-fashion-mnist package installs the four gzipped IDX files. */
export const FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist';

/** Fashion-MNIST's labels 0..9, as the data set's authors name them. */
export const FASHION_MNIST_CLASSES: readonly string[] = [
  'T-shirt/top',
  'Trouser',
  'Pullover',
  'Dress',
  'Coat',
  'Sandal',
  'Shirt',
  'Sneaker',
  'Bag',
  'Ankle boot',
];

export interface IdxOptions {
  /** Labels must lie in [0, numClasses); default: classNames.length if given, else 10. */
  readonly numClasses?: number;
  readonly classNames?: readonly string[];
  /** Default: '<directory name>/<split>'. */
  readonly name?: string;
}

const IMAGES_MAGIC = 0x00000803;
const LABELS_MAGIC = 0x00000801;
/** IDX element type code for unsigned bytes, the third byte of the magic. */
const UBYTE_TYPE = 0x08;

/** Reads `<prefix>-images-idx3-ubyte` and `<prefix>-labels-idx1-ubyte` from `dir`, each plain or gzipped
 * (`.gz`), where prefix is 'train' or 't10k'. Images come out as N x 1 x rows x columns. */
export function loadIdxDataset(dir: string, split: Split, options: IdxOptions = {}): ImageDataset {
  const { classNames } = options;
  const numClasses = options.numClasses ?? classNames?.length ?? 10;
  if (!Number.isInteger(numClasses) || numClasses < 1)
    throw new RangeError(`loadIdxDataset: numClasses ${numClasses} is not a positive integer`);
  if (classNames !== undefined && classNames.length !== numClasses) {
    throw new RangeError(`loadIdxDataset: ${classNames.length} class names for ${numClasses} classes`);
  }
  const prefix = split === 'train' ? 'train' : 't10k';
  const idxFile = (kind: string): DataFile => {
    const base = path.join(dir, `${prefix}-${kind}-ubyte`);
    return readDataFile(firstExisting([base, `${base}.gz`]));
  };

  const imageFile = idxFile('images-idx3');
  const [count, height, width] = readHeader(imageFile, IMAGES_MAGIC, 'IDX images', 3);
  if (height === 0 || width === 0) throw formatError(imageFile, 8, `empty image size ${height}x${width} at byte 8`);
  const imagesStart = 16;
  checkLength(imageFile, imagesStart, count, height * width, `images of ${height}x${width}`);

  const labelFile = idxFile('labels-idx1');
  const [labelCount] = readHeader(labelFile, LABELS_MAGIC, 'IDX labels', 1);
  if (labelCount !== count) {
    throw formatError(labelFile, 4, `${labelCount} labels declared at byte 4, but ${imageFile.label} declares ${count} images`);
  }
  const labelsStart = 8;
  checkLength(labelFile, labelsStart, count, 1, 'labels');

  return {
    name: options.name ?? `${path.basename(path.resolve(dir))}/${split}`,
    // A copy: the file's buffer also holds the header, and the native side wants the pixels from byte 0.
    images: new Uint8Array(imageFile.bytes.subarray(imagesStart, imagesStart + count * height * width)),
    labels: readLabels(labelFile, labelsStart, 1, count, numClasses),
    count,
    channels: 1,
    height,
    width,
    numClasses,
    ...(classNames !== undefined && { classNames }),
  };
}

/** Fashion-MNIST from `dir` (default: Debian's package), with its class names. */
export function loadFashionMnist(split: Split, dir: string = FASHION_MNIST_DIR): ImageDataset {
  if (dir === FASHION_MNIST_DIR && !fs.existsSync(dir)) {
    throw new DataFormatError(dir, undefined, `${dir}: not found (apt-get install dataset-fashion-mnist)`);
  }
  return loadIdxDataset(dir, split, { classNames: FASHION_MNIST_CLASSES });
}

/** Checks the magic number and returns the `dims` sizes that follow it. */
function readHeader(file: DataFile, magic: number, what: string, dims: number): number[] {
  const headerLength = 4 + 4 * dims;
  const { bytes } = file;
  if (bytes.length < headerLength) {
    throw formatError(file, bytes.length, `truncated header at byte ${bytes.length} (${what} need a ${headerLength}-byte header)`);
  }
  const found = uint32At(bytes, 0);
  if (found !== magic) {
    const isUbyteIdx = bytes[0] === 0 && bytes[1] === 0 && bytes[2] === UBYTE_TYPE;
    const why = isUbyteIdx ? `; this file declares ${bytes[3]} dimensions, not ${dims}` : '';
    throw formatError(file, 0, `bad magic ${hex(found)} at byte 0 (expected ${hex(magic)} for ${what}${why})`);
  }
  return Array.from({ length: dims }, (_, k) => uint32At(bytes, 4 + 4 * k));
}

/** The file must hold exactly `count` items of `itemSize` bytes after its header. */
function checkLength(file: DataFile, start: number, count: number, itemSize: number, items: string): void {
  const expected = start + count * itemSize;
  const actual = file.bytes.length;
  const declared = `the header declares ${count} ${items}, ${expected} bytes in all`;
  if (actual < expected) {
    const inside = Math.floor((actual - start) / itemSize);
    throw formatError(file, actual, `truncated at byte ${actual}, inside item ${inside} (${declared})`);
  }
  if (actual > expected) {
    throw formatError(file, expected, `${actual - expected} unexpected bytes after the last item, at byte ${expected} (${declared})`);
  }
}

function uint32At(bytes: Uint8Array, offset: number): number {
  return ((bytes[offset] << 24) | (bytes[offset + 1] << 16) | (bytes[offset + 2] << 8) | bytes[offset + 3]) >>> 0;
}

function hex(value: number): string {
  return `0x${value.toString(16).padStart(8, '0')}`;
}
