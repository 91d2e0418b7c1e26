import { classCounts, describeDataset, splitDataset, subsetDataset, type ImageDataset } from '../lib/data';

/** An unbalanced toy set: 100 images of class 0, 50 of class 1, 10 of class 2, interleaved; image i's two
 * bytes are i's low and high byte, so every copied image can be traced back to its index. */
function toyDataset(): ImageDataset {
  const labels: number[] = [];
  for (let k = 0; k < 100; k++) labels.push(0, ...(k % 2 === 0 ? [1] : []), ...(k % 10 === 0 ? [2] : []));
  const images = new Uint8Array(labels.length * 2);
  labels.forEach((_, i) => {
    images.set([i & 0xff, i >> 8], 2 * i);
  });
  return {
    name: 'toy',
    images,
    labels: Int32Array.from(labels),
    count: labels.length,
    channels: 1,
    height: 1,
    width: 2,
    numClasses: 3,
    classNames: ['many', 'some', 'few'],
  };
}

/** The original indices of a subset's images, read back from their bytes. */
const sourceIndices = (ds: ImageDataset): number[] =>
  Array.from({ length: ds.count }, (_, k) => ds.images[2 * k] | (ds.images[2 * k + 1] << 8));

test('classCounts and describeDataset', () => {
  const ds = toyDataset();
  expect(Array.from(classCounts(ds))).toEqual([100, 50, 10]);
  expect(describeDataset(ds)).toBe('toy: 160 images 1x1x2, 3 classes (10 to 100 per class), 0.3 KiB');
});

test('subsetDataset copies the chosen images and labels, in the order given', () => {
  const ds = toyDataset();
  const sub = subsetDataset(ds, [5, 0, 159, 5]);
  expect(sub.name).toBe('toy[4 of 160]');
  expect(sub.count).toBe(4);
  expect(sourceIndices(sub)).toEqual([5, 0, 159, 5]);
  expect(Array.from(sub.labels)).toEqual([5, 0, 159, 5].map((i) => ds.labels[i]));
  expect(sub.classNames).toEqual(ds.classNames);
  expect([sub.channels, sub.height, sub.width, sub.numClasses]).toEqual([1, 1, 2, 3]);
  expect(sub.images.buffer).not.toBe(ds.images.buffer);
  expect(subsetDataset(ds, Int32Array.of(1), 'one').name).toBe('one');
  expect(() => subsetDataset(ds, [160])).toThrow(RangeError);
  expect(() => subsetDataset(ds, [-1])).toThrow(RangeError);
  expect(() => subsetDataset(ds, [0.5])).toThrow(RangeError);
});

describe('splitDataset', () => {
  test('takes each class in proportion, and the rest is the complement, both in original order', () => {
    const ds = toyDataset();
    const { subset, rest } = splitDataset(ds, 0.1, 7);
    expect(subset.name).toBe('toy[split 0.1 seed 7]');
    expect(rest.name).toBe('toy[split 0.1 seed 7, rest]');
    expect(Array.from(classCounts(subset))).toEqual([10, 5, 1]);
    expect(Array.from(classCounts(rest))).toEqual([90, 45, 9]);
    const picked = sourceIndices(subset);
    const others = sourceIndices(rest);
    expect(picked).toEqual([...picked].sort((a, b) => a - b));
    expect(others).toEqual([...others].sort((a, b) => a - b));
    expect([...picked, ...others].sort((a, b) => a - b)).toEqual(Array.from({ length: 160 }, (_, i) => i));
    expect(Array.from(subset.labels)).toEqual(picked.map((i) => ds.labels[i]));
  });

  test('the same seed gives the same split; another seed, another one', () => {
    const ds = toyDataset();
    const first = sourceIndices(splitDataset(ds, 0.25, 1).subset);
    expect(sourceIndices(splitDataset(ds, 0.25, 1).subset)).toEqual(first);
    expect(sourceIndices(splitDataset(ds, 0.25, 2).subset)).not.toEqual(first);
  });

  test('largest remainders settle the rounding so the total is round(fraction * count)', () => {
    // 0.25 of (100, 50, 10) is (25, 12.5, 2.5): 40 in all, the one spare image going to class 1 (ties to the lower class).
    expect(Array.from(classCounts(splitDataset(toyDataset(), 0.25, 0).subset))).toEqual([25, 13, 2]);
    // 0.03 of (100, 50, 10) is (3, 1.5, 0.3): round(4.8) = 5, the spare to class 1.
    expect(Array.from(classCounts(splitDataset(toyDataset(), 0.03, 0).subset))).toEqual([3, 2, 0]);
  });

  test('fractions 0 and 1', () => {
    const ds = toyDataset();
    expect(splitDataset(ds, 0, 0).subset.count).toBe(0);
    expect(splitDataset(ds, 0, 0).rest.count).toBe(160);
    expect(sourceIndices(splitDataset(ds, 1, 0).subset)).toEqual(Array.from({ length: 160 }, (_, i) => i));
  });

  test('arguments that make no sense', () => {
    const ds = toyDataset();
    expect(() => splitDataset(ds, 1.5, 0)).toThrow(RangeError);
    expect(() => splitDataset(ds, Number.NaN, 0)).toThrow(RangeError);
    expect(() => splitDataset(ds, 0.5, -1)).toThrow(RangeError);
    expect(() => splitDataset(ds, 0.5, 2 ** 32)).toThrow(RangeError);
    expect(() => splitDataset(ds, 0.5, 0.5)).toThrow(RangeError);
  });
});
