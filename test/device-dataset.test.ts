// Device data sets: upload, normalisation, seeded permutations, crop + flip augmentation, RNG state.
import { native } from '../lib/native';
import { thrown, useTestThreads } from './helpers';

beforeAll(useTestThreads);

// 6 images 1x3x4 with distinct pixels: image n, pixel (y, x) = 100 + 12n + 4y + x.
const N = 6;
const images = Uint8Array.from({ length: N * 12 }, (_, i) => 100 + i);
const labels = Int32Array.from({ length: N }, (_, n) => n % 3);
const make = (seed = 0) => new (native().Dataset)(images, [N, 1, 3, 4], labels, { mean: [0], std: [1 / 255], augmentSeed: seed });
const pixels = (n: number) => Array.from(images.subarray(n * 12, n * 12 + 12));
const rows = (flat: number[]) => [0, 1, 2].map((y) => flat.slice(y * 4, y * 4 + 4));

describe('device dataset', () => {
  test('plain batches are the images, normalised, with their labels', () => {
    const ds = make();
    expect(ds.count).toBe(N);
    expect(ds.shape).toEqual([1, 3, 4]);
    const [x, y] = ds.batch(native().Tensor.fromArray(BigInt64Array.of(4n, 1n)));
    expect(x.shape).toEqual([2, 1, 3, 4]);
    // (v / 255 - 0) / (1 / 255) = v, up to float rounding
    Array.from(x.toArray() as Float32Array).forEach((v, i) => {
      expect(v).toBeCloseTo([...pixels(4), ...pixels(1)][i], 3);
    });
    expect(Array.from(y.toArray())).toEqual([1n, 1n]);
  });

  test('permutations depend on (seed, epoch) only', () => {
    const ds = make();
    const p = (seed: number, epoch: number) => Array.from(ds.permutation(seed, epoch).toArray());
    expect(p(3, 0)).toEqual(p(3, 0));
    expect([...p(3, 0)].sort()).toEqual([0n, 1n, 2n, 3n, 4n, 5n]);
    expect([p(3, 1), p(4, 0)]).not.toEqual([p(3, 0), p(3, 0)]);
    expect(Array.from(make(9).permutation(3, 0).toArray())).toEqual(p(3, 0));
  });

  test('flip gives each image or its mirror; crop gives a window of the zero-padded image', () => {
    const ds = make(1);
    const index = native().Tensor.fromArray(BigInt64Array.from({ length: 64 }, (_, k) => BigInt(k % N)));
    const [flipped] = ds.batch(index, { flip: true });
    const f = Array.from(flipped.toArray() as Float32Array, Math.round);
    let mirrors = 0;
    for (let k = 0; k < 64; k++) {
      const got = rows(f.slice(k * 12, k * 12 + 12));
      const orig = rows(pixels(k % N));
      const isMirror = JSON.stringify(got) === JSON.stringify(orig.map((r) => [...r].reverse()));
      expect(isMirror || JSON.stringify(got) === JSON.stringify(orig)).toBe(true);
      if (isMirror) mirrors++;
    }
    expect(mirrors).toBeGreaterThan(16);
    expect(mirrors).toBeLessThan(48);

    const [cropped] = ds.batch(index, { pad: 1 });
    const c = Array.from(cropped.toArray() as Float32Array, Math.round);
    const offsets = new Set<string>();
    for (let k = 0; k < 64; k++) {
      const got = rows(c.slice(k * 12, k * 12 + 12));
      const orig = rows(pixels(k % N));
      const padded = [-1, 0, 1, 2, 3].map((y) => [-1, 0, 1, 2, 3, 4].map((x) => (y >= 0 && y < 3 && x >= 0 && x < 4 ? orig[y][x] : 0)));
      let match = '';
      for (let oy = 0; oy <= 2; oy++)
        for (let ox = 0; ox <= 2; ox++)
          if (JSON.stringify(got) === JSON.stringify(padded.slice(oy, oy + 3).map((r) => r.slice(ox, ox + 4)))) match = `${oy},${ox}`;
      expect(match).not.toBe('');
      offsets.add(match);
    }
    expect(offsets.size).toBeGreaterThan(5);
  });

  test('the augmentation generator state round-trips', () => {
    const ds = make(2);
    const index = native().Tensor.fromArray(BigInt64Array.from({ length: 32 }, (_, k) => BigInt(k % N)));
    const state = ds.rngState();
    const first = Array.from(ds.batch(index, { pad: 1, flip: true })[0].toArray() as Float32Array);
    ds.setRngState(state);
    expect(Array.from(ds.batch(index, { pad: 1, flip: true })[0].toArray() as Float32Array)).toEqual(first);
  });

  test('bad input is refused', () => {
    const D = native().Dataset;
    expect(thrown(() => new D(images, [N, 1, 3, 5], labels, { mean: [0], std: [1] })).message).toMatch(
      /describes 90 bytes but 'images' holds 72/,
    );
    expect(thrown(() => new D(images, [N, 1, 3, 4], labels.subarray(1), { mean: [0], std: [1] })).message).toMatch(
      /holds 5 labels for 6 images/,
    );
    expect(thrown(() => new D(images, [N, 1, 3, 4], labels, { mean: [0, 0], std: [1] })).message).toMatch(
      /options\.mean must hold 1 numbers/,
    );
    expect(thrown(() => new D(images, [N, 1, 3, 4], labels, { mean: [0], std: [0] })).message).toMatch(/std must be positive/);
    expect(thrown(() => make().batch(native().Tensor.fromArray(BigInt64Array.of(6n)))).message).toMatch(/indices.*must lie in \[0, 6\)/);
  });
});

describe('random-resized crop', () => {
  test('the full box at ratio 1 reproduces the image; random boxes stay in range and vary', () => {
    const ds = make(3);
    const index = native().Tensor.fromArray(BigInt64Array.from({ length: 16 }, (_, k) => BigInt(k % N)));
    const [plain] = ds.batch(index);
    const [identity] = ds.batch(index, { resizedCrop: true, cropScale: [1, 1], cropRatio: [4 / 3, 4 / 3] });
    Array.from(identity.toArray() as Float32Array).forEach((v, i) => {
      expect(v).toBeCloseTo((plain.toArray() as Float32Array)[i], 3);
    });
    const [random] = ds.batch(index, { resizedCrop: true, flip: true });
    const values = Array.from(random.toArray() as Float32Array);
    expect(random.shape).toEqual([16, 1, 3, 4]);
    expect(Math.min(...values)).toBeGreaterThanOrEqual(-1e-3);
    expect(Math.max(...values)).toBeLessThanOrEqual(171 + 1e-3);
    expect(JSON.stringify(values)).not.toEqual(JSON.stringify(Array.from(plain.toArray() as Float32Array)));
    expect(thrown(() => ds.batch(index, { resizedCrop: true, pad: 2 })).message).toMatch(/pad and resizedCrop exclude each other/);
    expect(thrown(() => ds.batch(index, { resizedCrop: true, cropScale: [0, 1] })).message).toMatch(
      /cropScale must satisfy 0 < min <= max <= 1/,
    );
  });
});
