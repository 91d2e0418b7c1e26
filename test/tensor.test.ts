import { Tensor, isTensor, type DType, type TensorData, manualSeed, memory } from '../lib';
import { thrown, useTestThreads } from './helpers';

beforeAll(useTestThreads);

const cases: [DType, TensorData][] = [
  ['float32', new Float32Array([1.5, -2.25, 3e-7, 1e30, -0, Infinity])],
  ['float64', new Float64Array([Math.PI, -1e-300, 2 ** 52 + 1, Number.MAX_VALUE, NaN, -Infinity])],
  ['int32', new Int32Array([0, -1, 2147483647, -2147483648, 7, 42])],
  ['int64', new BigInt64Array([0n, -1n, 9007199254740993n, -(2n ** 63n), 2n ** 63n - 1n, 5n])],
  ['uint8', new Uint8Array([0, 1, 127, 128, 254, 255])],
];

describe('Tensor round trips', () => {
  test.each(cases)('%s keeps every value and the shape', (dtype, data) => {
    const t = Tensor.fromArray(data, [2, 3]);
    expect(t.dtype).toBe(dtype);
    expect(t.shape).toEqual([2, 3]);
    expect(t.device).toBe('cpu');
    expect(t.nbytes).toBe(data.byteLength);
    const back = t.toArray();
    expect(back.constructor.name).toBe(data.constructor.name);
    expect(Array.from(back as ArrayLike<number | bigint>)).toEqual(Array.from(data as ArrayLike<number | bigint>));
    t.dispose();
  });

  test('data is copied in, and a view with a byte offset is honoured', () => {
    const backing = new Float32Array([9, 1, 2, 3, 9]);
    const view = backing.subarray(1, 4);
    const t = Tensor.fromArray(view);
    backing[2] = 100;
    expect(Array.from(t.toArray())).toEqual([1, 2, 3]);
    expect(t.shape).toEqual([3]);
  });

  test('scalars and empty tensors', () => {
    const s = Tensor.fromArray(new Float64Array([7]), []);
    expect(s.shape).toEqual([]);
    expect(Array.from(s.toArray())).toEqual([7]);
    const e = Tensor.fromArray(new Int32Array(0), [0, 4]);
    expect(e.shape).toEqual([0, 4]);
    expect(e.toArray().length).toBe(0);
  });

  test('to() converts dtype into a new tensor', () => {
    const t = Tensor.fromArray(new Float64Array([1.9, -2.9, 3]));
    const i = t.to('cpu', 'int32');
    expect(i.dtype).toBe('int32');
    expect(Array.from(i.toArray())).toEqual([1, -2, 3]);
    t.dispose();
    expect(Array.from(i.toArray())).toEqual([1, -2, 3]);
  });

  test('matmul computes with libtorch', () => {
    const a = Tensor.fromArray(new Float64Array([1, 2, 3, 4, 5, 6]), [2, 3]);
    const b = Tensor.fromArray(new Float64Array([1, 0, 0, 1, 1, 1]), [3, 2]);
    expect(Array.from(a.matmul(b).toArray())).toEqual([4, 5, 10, 11]);
  });

  test('zeros and seeded randn', () => {
    expect(Array.from(Tensor.zeros([2, 2], 'int64').toArray())).toEqual([0n, 0n, 0n, 0n]);
    manualSeed(1234);
    const a = Tensor.randn([1000]).toArray();
    manualSeed(1234);
    const b = Tensor.randn([1000]).toArray();
    expect(Array.from(a)).toEqual(Array.from(b));
    const mean = a.reduce((s, x) => s + x, 0) / a.length;
    expect(Math.abs(mean)).toBeLessThan(0.15);
    manualSeed(2n ** 64n - 1n);
    expect(Tensor.randn([2], 'float64').dtype).toBe('float64');
  });

  test('isTensor', () => {
    expect(isTensor(Tensor.zeros([1]))).toBe(true);
    expect(isTensor({ shape: [1] })).toBe(false);
    expect(isTensor(null)).toBe(false);
  });
});

describe('dispose', () => {
  test('is idempotent and makes later use throw a clear error', () => {
    const t = Tensor.fromArray(new Float32Array([1, 2]));
    expect(t.isDisposed).toBe(false);
    t.dispose();
    t.dispose();
    expect(t.isDisposed).toBe(true);
    expect(thrown(() => t.toArray()).message).toBe('Tensor.toArray: the tensor has been disposed');
    expect(thrown(() => t.shape).message).toBe('Tensor.shape: the tensor has been disposed');
    expect(thrown(() => t.to('cpu')).message).toBe('Tensor.to: the tensor has been disposed');
    const live = Tensor.fromArray(new Float32Array([1, 2]), [1, 2]);
    expect(thrown(() => live.matmul(t)).message).toBe('Tensor.matmul: the tensor has been disposed');
  });

  test('tensor bytes are reported to V8 and released exactly once', () => {
    const bytes = 64 * 1024 * 1024;
    const before = memory();
    const t = Tensor.zeros([bytes / 4]);
    const during = memory();
    expect(during.tensorBytes - before.tensorBytes).toBe(bytes);
    // Other external memory (buffers of earlier suites) may be collected in between: 1 MiB of slack.
    expect(during.v8ExternalBytes - before.v8ExternalBytes).toBeGreaterThanOrEqual(bytes - 1024 * 1024);
    t.dispose();
    t.dispose();
    const after = memory();
    expect(after.tensorBytes).toBe(before.tensorBytes);
    expect(during.v8ExternalBytes - after.v8ExternalBytes).toBe(bytes);
  });
});
