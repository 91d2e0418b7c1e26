import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { gzipSync } from 'node:zlib';
import { CIFAR10_CLASSES, DataFormatError, loadCifar, type CifarOptions, type CifarVariant } from '../lib/data';

const IMAGE_SIZE = 3 * 32 * 32;

/** Byte p of image i (CHW): distinct between neighbouring images and pixels, so misplaced bytes show. */
const pixel = (i: number, p: number): number => (i * 7 + p * 3) & 0xff;

/** Records of the given label bytes, each followed by image i's pixels. */
function records(first: number, labelRows: readonly (readonly number[])[]): Buffer {
  const recordSize = labelRows[0].length + IMAGE_SIZE;
  const out = Buffer.alloc(labelRows.length * recordSize);
  labelRows.forEach((labelBytes, r) => {
    out.set(labelBytes, r * recordSize);
    for (let p = 0; p < IMAGE_SIZE; p++) out[r * recordSize + labelBytes.length + p] = pixel(first + r, p);
  });
  return out;
}

let root: string;
let caseNumber = 0;
beforeAll(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'repopt-cifar-'));
});
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

function folderWith(files: Readonly<Record<string, Uint8Array | string>>): string {
  const dir = path.join(root, `case-${++caseNumber}`);
  fs.mkdirSync(dir);
  for (const [name, contents] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(dir, name)), { recursive: true });
    fs.writeFileSync(path.join(dir, name), contents);
  }
  return dir;
}

/** CIFAR-10 train batches of two records each: image i has label (3 * i) % 10. */
const CIFAR10_TRAIN_LABELS = Array.from({ length: 10 }, (_, i) => (3 * i) % 10);
function cifar10TrainFiles(): Record<string, Buffer> {
  const files: Record<string, Buffer> = {};
  for (let k = 1; k <= 5; k++) {
    const first = 2 * (k - 1);
    files[`data_batch_${k}.bin`] = records(first, [[CIFAR10_TRAIN_LABELS[first]], [CIFAR10_TRAIN_LABELS[first + 1]]]);
  }
  return files;
}

function expectPixels(images: Uint8Array, count: number): void {
  expect(images.length).toBe(count * IMAGE_SIZE);
  const expected = Uint8Array.from({ length: count * IMAGE_SIZE }, (_, k) => pixel(Math.floor(k / IMAGE_SIZE), k % IMAGE_SIZE));
  expect(Buffer.from(images).equals(Buffer.from(expected))).toBe(true);
}

function loadError(dir: string, variant: CifarVariant, split: 'train' | 'test', options?: CifarOptions): DataFormatError {
  try {
    loadCifar(dir, variant, split, options);
  } catch (e) {
    expect(e).toBeInstanceOf(DataFormatError);
    return e as DataFormatError;
  }
  throw new Error('expected loadCifar to throw');
}

describe('CIFAR files that are well formed', () => {
  test('CIFAR-10 train: five batches in order, every pixel and label', () => {
    const ds = loadCifar(folderWith(cifar10TrainFiles()), 'cifar10', 'train');
    expect(ds.name).toBe('cifar10/train');
    expect([ds.count, ds.channels, ds.height, ds.width, ds.numClasses]).toEqual([10, 3, 32, 32, 10]);
    expect(Array.from(ds.labels)).toEqual(CIFAR10_TRAIN_LABELS);
    expectPixels(ds.images, 10);
    expect(ds.classNames).toEqual(CIFAR10_CLASSES);
  });

  test('CIFAR-10 test from the folder the tarball unpacks in, gzipped, with batches.meta.txt', () => {
    const names = ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j'];
    const dir = folderWith({
      'cifar-10-batches-bin/test_batch.bin': gzipSync(records(0, [[9], [0], [4]])),
      'cifar-10-batches-bin/batches.meta.txt': `${names.join('\n')}\n\n`,
    });
    const ds = loadCifar(dir, 'cifar10', 'test', { name: 'small' });
    expect(ds.name).toBe('small');
    expect(Array.from(ds.labels)).toEqual([9, 0, 4]);
    expect(ds.classNames).toEqual(names);
    expectPixels(ds.images, 3);
  });

  const cifar100Dir = (): string =>
    folderWith({
      'train.bin': records(0, [
        [19, 99],
        [0, 0],
        [7, 42],
      ]),
      'fine_label_names.txt': Array.from({ length: 100 }, (_, k) => `fine${k}`).join('\n'),
    });

  test('CIFAR-100: fine labels by default, names from fine_label_names.txt', () => {
    const ds = loadCifar(cifar100Dir(), 'cifar100', 'train');
    expect(ds.name).toBe('cifar100/train');
    expect(ds.numClasses).toBe(100);
    expect(Array.from(ds.labels)).toEqual([99, 0, 42]);
    expect(ds.classNames?.[42]).toBe('fine42');
    expectPixels(ds.images, 3);
  });

  test('CIFAR-100: coarse labels on request, no names without coarse_label_names.txt', () => {
    const ds = loadCifar(cifar100Dir(), 'cifar100', 'train', { labels: 'coarse' });
    expect(ds.name).toBe('cifar100/train-coarse');
    expect(ds.numClasses).toBe(20);
    expect(Array.from(ds.labels)).toEqual([19, 0, 7]);
    expect(ds.classNames).toBeUndefined();
    expectPixels(ds.images, 3);
  });

  test('CIFAR-10 has no coarse labels', () => {
    expect(() => loadCifar(folderWith(cifar10TrainFiles()), 'cifar10', 'train', { labels: 'coarse' })).toThrow(RangeError);
  });
});

describe('CIFAR files that are malformed', () => {
  test('a length that is not a multiple of the record size', () => {
    const files = cifar10TrainFiles();
    files['data_batch_3.bin'] = Buffer.concat([
      records(
        0,
        Array.from({ length: 10 }, () => [1]),
      ),
      Buffer.alloc(5),
    ]);
    const dir = folderWith(files);
    const err = loadError(dir, 'cifar10', 'train');
    expect(err.message).toBe('data_batch_3.bin: truncated record at byte 30730 (record size 3073; the file has 30735 bytes)');
    expect(err.offset).toBe(30730);
    expect(err.file).toBe(path.join(dir, 'data_batch_3.bin'));
  });

  test('CIFAR-10 records read as CIFAR-100 do not fit', () => {
    const err = loadError(folderWith({ 'test.bin': records(0, [[1], [2]]) }), 'cifar100', 'test');
    expect(err.message).toBe('test.bin: truncated record at byte 3074 (record size 3074; the file has 6146 bytes)');
  });

  test('an empty file', () => {
    const err = loadError(folderWith({ 'test_batch.bin': Buffer.alloc(0) }), 'cifar10', 'test');
    expect(err.message).toBe('test_batch.bin: no records at byte 0 (empty file; record size 3073)');
  });

  test('a CIFAR-10 label out of range, in the second record', () => {
    const err = loadError(folderWith({ 'test_batch.bin': records(0, [[1], [10]]) }), 'cifar10', 'test');
    expect(err.message).toBe('test_batch.bin: label 10 at byte 3073 is out of range [0, 10)');
    expect(err.offset).toBe(3073);
  });

  test('a CIFAR-100 fine label out of range', () => {
    const err = loadError(
      folderWith({
        'test.bin': records(0, [
          [1, 2],
          [3, 100],
        ]),
      }),
      'cifar100',
      'test',
    );
    expect(err.message).toBe('test.bin: label 100 at byte 3075 is out of range [0, 100)');
  });

  test('a CIFAR-100 coarse label out of range, even when loading fine labels', () => {
    const err = loadError(folderWith({ 'test.bin': records(0, [[20, 2]]) }), 'cifar100', 'test');
    expect(err.message).toBe('test.bin: label 20 at byte 0 is out of range [0, 20)');
  });

  test('a missing batch in the middle', () => {
    const files = cifar10TrainFiles();
    delete files['data_batch_4.bin'];
    const dir = folderWith(files);
    const err = loadError(dir, 'cifar10', 'train');
    expect(err.message).toBe(`data_batch_4.bin: not found in ${dir}`);
    expect(err.file).toBe(path.join(dir, 'data_batch_4.bin'));
    expect(err.offset).toBeUndefined();
  });

  test('a folder with no CIFAR files names both places it looked', () => {
    const dir = folderWith({});
    expect(loadError(dir, 'cifar100', 'train').message).toBe(`train.bin: not found in ${dir} (nor cifar-100-binary/train.bin)`);
  });

  test('a class-name file with the wrong number of names', () => {
    const err = loadError(folderWith({ 'test_batch.bin': records(0, [[1]]), 'batches.meta.txt': 'cat\ndog\n' }), 'cifar10', 'test');
    expect(err.message).toBe('batches.meta.txt: 2 class names for 10 classes');
  });
});
