import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { gzipSync } from 'node:zlib';
import {
  DataFormatError,
  FASHION_MNIST_CLASSES,
  FASHION_MNIST_DIR,
  classCounts,
  describeDataset,
  loadFashionMnist,
  loadIdxDataset,
} from '../lib/data';

const IMAGES_MAGIC = 0x00000803;
const LABELS_MAGIC = 0x00000801;
const COUNT = 3;
const HEIGHT = 2;
const WIDTH = 3;
const LABELS = [3, 0, 9];

/** Pixel p (row-major) of image i: distinct everywhere, so any misplaced byte shows. */
const pixel = (i: number, p: number): number => i * 16 + p + 1;

function idxFile(magic: number, dims: readonly number[], data: Uint8Array): Buffer {
  const header = Buffer.alloc(4 + 4 * dims.length);
  header.writeUInt32BE(magic, 0);
  dims.forEach((size, k) => {
    header.writeUInt32BE(size, 4 + 4 * k);
  });
  return Buffer.concat([header, data]);
}

const goodPixels = Uint8Array.from({ length: COUNT * HEIGHT * WIDTH }, (_, k) =>
  pixel(Math.floor(k / (HEIGHT * WIDTH)), k % (HEIGHT * WIDTH)),
);
const goodImages = idxFile(IMAGES_MAGIC, [COUNT, HEIGHT, WIDTH], goodPixels);
const goodLabels = idxFile(LABELS_MAGIC, [COUNT], Uint8Array.from(LABELS));

let root: string;
let caseNumber = 0;

beforeAll(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'repopt-idx-'));
});
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

interface IdxCase {
  readonly prefix?: 'train' | 't10k';
  readonly images?: Buffer;
  readonly labels?: Buffer;
  readonly gzipImages?: boolean;
  readonly gzipLabels?: boolean;
}

/** A fresh folder holding the given IDX files (by default the good ones, uncompressed, as the train split). */
function writeIdx({ prefix = 'train', images = goodImages, labels = goodLabels, gzipImages = false, gzipLabels = false }: IdxCase): string {
  const dir = path.join(root, `case-${++caseNumber}`);
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, `${prefix}-images-idx3-ubyte${gzipImages ? '.gz' : ''}`), gzipImages ? gzipSync(images) : images);
  fs.writeFileSync(path.join(dir, `${prefix}-labels-idx1-ubyte${gzipLabels ? '.gz' : ''}`), gzipLabels ? gzipSync(labels) : labels);
  return dir;
}

function loadError(dir: string, split: 'train' | 'test' = 'train'): DataFormatError {
  try {
    loadIdxDataset(dir, split);
  } catch (e) {
    expect(e).toBeInstanceOf(DataFormatError);
    return e as DataFormatError;
  }
  throw new Error('expected loadIdxDataset to throw');
}

function expectGoodDataset(dir: string, split: 'train' | 'test'): void {
  const ds = loadIdxDataset(dir, split);
  expect(ds.name).toBe(`${path.basename(dir)}/${split}`);
  expect([ds.count, ds.channels, ds.height, ds.width, ds.numClasses]).toEqual([COUNT, 1, HEIGHT, WIDTH, 10]);
  expect(ds.classNames).toBeUndefined();
  expect(Array.from(ds.images)).toEqual(Array.from(goodPixels));
  expect(Array.from(ds.labels)).toEqual(LABELS);
  // The native side uploads from byte 0 of the buffer: no header bytes before the pixels, nothing after.
  expect(ds.images.byteOffset).toBe(0);
  expect(ds.images.buffer.byteLength).toBe(COUNT * HEIGHT * WIDTH);
  expect(ds.labels).toBeInstanceOf(Int32Array);
}

describe('IDX files that are well formed', () => {
  test('uncompressed train files: every pixel and label', () => {
    expectGoodDataset(writeIdx({}), 'train');
  });

  test('gzipped t10k files as the test split', () => {
    expectGoodDataset(writeIdx({ prefix: 't10k', gzipImages: true, gzipLabels: true }), 'test');
  });

  test('gzipped images beside uncompressed labels', () => {
    expectGoodDataset(writeIdx({ gzipImages: true }), 'train');
  });

  test('gzip is recognised by its magic, not by the file name', () => {
    const dir = writeIdx({});
    fs.writeFileSync(path.join(dir, 'train-images-idx3-ubyte'), gzipSync(goodImages));
    expectGoodDataset(dir, 'train');
  });

  test('options: name, class names, and a wider label range', () => {
    const dir = writeIdx({ labels: idxFile(LABELS_MAGIC, [COUNT], Uint8Array.from([12, 0, 9])) });
    const names = Array.from({ length: 13 }, (_, k) => `class ${k}`);
    const ds = loadIdxDataset(dir, 'train', { classNames: names, name: 'toy' });
    expect(ds.name).toBe('toy');
    expect(ds.numClasses).toBe(13);
    expect(ds.classNames).toEqual(names);
    expect(Array.from(ds.labels)).toEqual([12, 0, 9]);
    expect(loadIdxDataset(dir, 'train', { numClasses: 20 }).numClasses).toBe(20);
    expect(() => loadIdxDataset(dir, 'train', { numClasses: 10, classNames: names })).toThrow(RangeError);
  });
});

describe('IDX files that are malformed', () => {
  test('bad magic in a gzipped images file: offsets count decompressed bytes', () => {
    const dir = writeIdx({ images: idxFile(0x12345678, [COUNT, HEIGHT, WIDTH], goodPixels), gzipImages: true });
    const err = loadError(dir);
    expect(err.message).toBe(
      'train-images-idx3-ubyte.gz (decompressed): bad magic 0x12345678 at byte 0 (expected 0x00000803 for IDX images)',
    );
    expect(err.file).toBe(path.join(dir, 'train-images-idx3-ubyte.gz'));
    expect(err.offset).toBe(0);
    expect(err.name).toBe('DataFormatError');
  });

  test('images with the wrong dimension count', () => {
    const dir = writeIdx({ images: idxFile(0x00000802, [COUNT, HEIGHT * WIDTH], goodPixels) });
    expect(loadError(dir).message).toBe(
      'train-images-idx3-ubyte: bad magic 0x00000802 at byte 0 (expected 0x00000803 for IDX images; this file declares 2 dimensions, not 3)',
    );
  });

  test('labels with the wrong dimension count', () => {
    const dir = writeIdx({ labels: idxFile(0x00000802, [COUNT, 1], Uint8Array.from(LABELS)) });
    const err = loadError(dir);
    expect(err.message).toBe(
      'train-labels-idx1-ubyte: bad magic 0x00000802 at byte 0 (expected 0x00000801 for IDX labels; this file declares 2 dimensions, not 1)',
    );
    expect(err.file).toBe(path.join(dir, 'train-labels-idx1-ubyte'));
  });

  test('a header cut short', () => {
    const err = loadError(writeIdx({ images: goodImages.subarray(0, 10) }));
    expect(err.message).toBe('train-images-idx3-ubyte: truncated header at byte 10 (IDX images need a 16-byte header)');
    expect(err.offset).toBe(10);
  });

  test('an empty image size', () => {
    const err = loadError(writeIdx({ images: idxFile(IMAGES_MAGIC, [COUNT, 0, WIDTH], new Uint8Array(0)) }));
    expect(err.message).toBe('train-images-idx3-ubyte: empty image size 0x3 at byte 8');
  });

  test('truncated images, gzipped', () => {
    const dir = writeIdx({ images: goodImages.subarray(0, goodImages.length - 4), gzipImages: true });
    const err = loadError(dir);
    expect(err.message).toBe(
      'train-images-idx3-ubyte.gz (decompressed): truncated at byte 30, inside item 2 (the header declares 3 images of 2x3, 34 bytes in all)',
    );
    expect(err.offset).toBe(30);
  });

  test('bytes after the last image', () => {
    const err = loadError(writeIdx({ images: Buffer.concat([goodImages, Buffer.from([1, 2])]) }));
    expect(err.message).toBe(
      'train-images-idx3-ubyte: 2 unexpected bytes after the last item, at byte 34 (the header declares 3 images of 2x3, 34 bytes in all)',
    );
    expect(err.offset).toBe(34);
  });

  test('truncated labels', () => {
    const err = loadError(writeIdx({ labels: goodLabels.subarray(0, goodLabels.length - 1) }));
    expect(err.message).toBe(
      'train-labels-idx1-ubyte: truncated at byte 10, inside item 2 (the header declares 3 labels, 11 bytes in all)',
    );
  });

  test('image and label counts that disagree', () => {
    const err = loadError(writeIdx({ labels: idxFile(LABELS_MAGIC, [COUNT - 1], Uint8Array.from(LABELS.slice(1))) }));
    expect(err.message).toBe('train-labels-idx1-ubyte: 2 labels declared at byte 4, but train-images-idx3-ubyte declares 3 images');
    expect(err.offset).toBe(4);
  });

  test('a label out of range', () => {
    const err = loadError(writeIdx({ labels: idxFile(LABELS_MAGIC, [COUNT], Uint8Array.from([12, 0, 9])) }));
    expect(err.message).toBe('train-labels-idx1-ubyte: label 12 at byte 8 is out of range [0, 10)');
    expect(err.offset).toBe(8);
  });

  test('a missing labels file names both names it looked for', () => {
    const dir = writeIdx({});
    fs.rmSync(path.join(dir, 'train-labels-idx1-ubyte'));
    const err = loadError(dir);
    expect(err.message).toBe(`train-labels-idx1-ubyte: not found in ${dir} (nor train-labels-idx1-ubyte.gz)`);
    expect(err.offset).toBeUndefined();
  });

  test('the test split of a folder holding only the train split', () => {
    expect(loadError(writeIdx({}), 'test').message).toMatch(/^t10k-images-idx3-ubyte: not found in /);
  });

  test('a FIFO, a folder or /dev/zero in place of a data file fails at once, naming it', () => {
    const dir = writeIdx({});
    const images = path.join(dir, 'train-images-idx3-ubyte');
    fs.rmSync(images);
    execFileSync('mkfifo', [images]);
    const started = Date.now();
    expect(loadError(dir).message).toBe(`train-images-idx3-ubyte ${images}: not a regular file (a device, FIFO or socket)`);
    fs.rmSync(images);
    fs.mkdirSync(images);
    expect(loadError(dir).message).toBe(`train-images-idx3-ubyte ${images}: is a folder, not a file`);
    fs.rmSync(images, { recursive: true });
    fs.symlinkSync('/dev/zero', images);
    expect(loadError(dir).message).toBe(`train-images-idx3-ubyte ${images}: not a regular file (a device, FIFO or socket)`);
    expect(Date.now() - started).toBeLessThan(1000);
  });

  test('a cut-off gzip stream', () => {
    const dir = writeIdx({});
    const gzipped = gzipSync(goodImages);
    fs.rmSync(path.join(dir, 'train-images-idx3-ubyte'));
    fs.writeFileSync(path.join(dir, 'train-images-idx3-ubyte.gz'), gzipped.subarray(0, gzipped.length - 12));
    expect(loadError(dir).message).toMatch(/^train-images-idx3-ubyte\.gz: corrupt gzip data: /);
  });
});

// Debian's dataset-fashion-mnist package; counts, first labels and pixel sums checked against Python's gzip.
test('Fashion-MNIST as Debian installs it', () => {
  const started = process.hrtime.bigint();
  const train = loadFashionMnist('train');
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const test = loadFashionMnist('test');
  expect(train.name).toBe('fashion-mnist/train');
  expect(test.name).toBe('fashion-mnist/test');
  for (const ds of [train, test]) {
    expect([ds.channels, ds.height, ds.width, ds.numClasses]).toEqual([1, 28, 28, 10]);
    expect(ds.classNames).toEqual(FASHION_MNIST_CLASSES);
    expect(ds.images.length).toBe(ds.count * 28 * 28);
  }
  expect(train.count).toBe(60000);
  expect(test.count).toBe(10000);
  expect(Array.from(classCounts(train))).toEqual(new Array(10).fill(6000));
  expect(Array.from(classCounts(test))).toEqual(new Array(10).fill(1000));
  expect(Array.from(train.labels.subarray(0, 10))).toEqual([9, 0, 0, 3, 0, 2, 7, 2, 5, 5]);
  expect(Array.from(test.labels.subarray(0, 10))).toEqual([9, 2, 1, 1, 6, 1, 4, 6, 5, 7]);
  const sum = (bytes: Uint8Array): number => bytes.reduce((total, value) => total + value, 0);
  expect(sum(train.images)).toBe(3431114169);
  expect(sum(test.images)).toBe(573469082);
  expect(sum(train.images.subarray(0, 784))).toBe(76247);
  expect(describeDataset(train)).toBe('fashion-mnist/train: 60000 images 1x28x28, 10 classes (6000 per class), 44.9 MiB');
  // Generous bound for a shared 2-core machine; it takes about a third of a second alone.
  expect(seconds).toBeLessThan(3);
  expect(FASHION_MNIST_DIR).toBe('/usr/share/datasets/fashion-mnist');
});
