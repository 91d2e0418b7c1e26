// The reference backend's autograd and ops: hand-computed values and finite-difference gradients.
import {
  type BatchNormStats,
  Random,
  Variable,
  accumulateGrad,
  add,
  backward,
  batchNorm2d,
  channelScale,
  conv2d,
  crossEntropy,
  globalAvgPool,
  gradCheck,
  linear,
  relu,
} from '../lib/reference';

const GRAD_TOLERANCE = 1e-6;

function randomInput(shape: number[], seed: number, low = -1, high = 1): { data: Float64Array; shape: number[] } {
  const random = new Random(seed);
  let size = 1;
  for (const d of shape) size *= d;
  return { data: Float64Array.from({ length: size }, () => random.uniform(low, high)), shape };
}

function f64(values: number[], shape: number[], requiresGrad = false): Variable {
  return Variable.leaf(Float64Array.from(values), shape, requiresGrad);
}

function freshStats(channels: number): BatchNormStats {
  return { runningMean: new Float64Array(channels), runningVar: new Float64Array(channels).fill(1), numBatchesTracked: 0 };
}

function expectAllClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tolerance: number): void {
  expect(actual.length).toBe(expected.length);
  for (let i = 0; i < expected.length; i++) {
    if (!(Math.abs(actual[i] - expected[i]) <= tolerance)) {
      throw new Error(`element ${i}: ${actual[i]} differs from ${expected[i]} by more than ${tolerance}`);
    }
  }
}

describe('forward values by hand', () => {
  test('conv2d with padding 1 and stride 2', () => {
    // 3x3 input 1..9, 2x2 kernel [[1, 0], [0, -1]]: out[oy, ox] = P[2oy, 2ox] - P[2oy+1, 2ox+1] on the zero-padded input.
    const x = f64([1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 1, 3, 3]);
    const w = f64([1, 0, 0, -1], [1, 1, 2, 2]);
    const y = conv2d(x, w, { stride: 2, padding: 1 });
    expect(y.shape).toEqual([1, 1, 2, 2]);
    expect(Array.from(y.data)).toEqual([-1, -3, -7, -4]);
  });

  test('conv2d sums over input channels; groups keep channels apart', () => {
    const x = f64([2, 3], [1, 2, 1, 1]);
    expect(Array.from(conv2d(x, f64([10, 100, -1, 1], [2, 2, 1, 1])).data)).toEqual([320, 1]);
    expect(Array.from(conv2d(x, f64([10, 100], [2, 1, 1, 1]), { groups: 2 }).data)).toEqual([20, 300]);
  });

  test('relu, channel scale, add, global average pool, linear', () => {
    const x = f64([-1, 2, 0, 4, 5, -6, 7, 8], [1, 2, 2, 2]);
    expect(Array.from(relu(x).data)).toEqual([0, 2, 0, 4, 5, 0, 7, 8]);
    expect(Array.from(channelScale(x, f64([2, -1], [2])).data)).toEqual([-2, 4, 0, 8, -5, 6, -7, -8]);
    expect(Array.from(add(x, x).data)).toEqual([-2, 4, 0, 8, 10, -12, 14, 16]);
    expect(Array.from(globalAvgPool(x).data)).toEqual([1.25, 3.5]);
    // [1, 2] W^T + b with W = [[1, 0], [2, -1], [0.5, 0.5]], b = [0, 1, -1]
    const y = linear(f64([1, 2], [1, 2]), f64([1, 0, 2, -1, 0.5, 0.5], [3, 2]), f64([0, 1, -1], [3]));
    expect(Array.from(y.data)).toEqual([1, 1, 0.5]);
  });

  test('float32 inputs give float32 results, rounded once per op', () => {
    const a = Variable.leaf(new Float32Array([0.1, 1e8]), [2]);
    const b = Variable.leaf(new Float32Array([0.2, 1]), [2]);
    const sum = add(a, b);
    expect(sum.data).toBeInstanceOf(Float32Array);
    expect(sum.data[0]).toBe(Math.fround(Math.fround(0.1) + Math.fround(0.2)));
    expect(sum.data[1]).toBe(1e8); // 1e8 + 1 is not a float32
    expect(() => add(a, f64([1, 2], [2]))).toThrow(/mix float32 and float64/);
  });
});

describe('batch norm 2d', () => {
  // x [N=2, C=2, H=1, W=2]: channel 0 holds 1, 2, 3, 6 (mean 3, biased var 3.5, unbiased 14/3);
  // channel 1 holds -1, -1, 1, 1 (mean 0, biased var 1, unbiased 4/3).
  const x = f64([1, 2, -1, -1, 3, 6, 1, 1], [2, 2, 1, 2]);
  const weight = f64([2, 1], [2]);
  const bias = f64([0.5, 0], [2]);

  test('training normalises with the biased batch variance and updates running stats (momentum 0.1, unbiased var)', () => {
    const stats = freshStats(2);
    const y = batchNorm2d(x, weight, bias, stats, { training: true });
    const s0 = Math.sqrt(3.5 + 1e-5);
    const s1 = Math.sqrt(1 + 1e-5);
    const expected = [
      (2 * (1 - 3)) / s0 + 0.5,
      (2 * (2 - 3)) / s0 + 0.5,
      -1 / s1,
      -1 / s1,
      (2 * (3 - 3)) / s0 + 0.5,
      (2 * (6 - 3)) / s0 + 0.5,
      1 / s1,
      1 / s1,
    ];
    expectAllClose(y.data, expected, 1e-15);
    expectAllClose(stats.runningMean, [0.3, 0], 1e-15);
    expectAllClose(stats.runningVar, [0.9 + 0.1 * (14 / 3), 0.9 + 0.1 * (4 / 3)], 1e-15);
    expect(stats.numBatchesTracked).toBe(1);

    batchNorm2d(x, weight, bias, stats, { training: true });
    expectAllClose(stats.runningMean, [0.9 * 0.3 + 0.3, 0], 1e-15);
    expectAllClose(stats.runningVar, [0.9 * (0.9 + 0.1 * (14 / 3)) + 0.1 * (14 / 3), 0.9 * (0.9 + 0.1 * (4 / 3)) + 0.1 * (4 / 3)], 1e-15);
    expect(stats.numBatchesTracked).toBe(2);
  });

  test('eval uses the running statistics and leaves them alone', () => {
    const stats: BatchNormStats = {
      runningMean: Float64Array.from([1, -2]),
      runningVar: Float64Array.from([4, 0.25]),
      numBatchesTracked: 5,
    };
    const y = batchNorm2d(x, weight, bias, stats, { training: false });
    const s0 = Math.sqrt(4 + 1e-5);
    const s1 = Math.sqrt(0.25 + 1e-5);
    const expected = [0.5, 2 / s0 + 0.5, 1 / s1, 1 / s1, (2 * 2) / s0 + 0.5, (2 * 5) / s0 + 0.5, 3 / s1, 3 / s1];
    expectAllClose(y.data, expected, 1e-15);
    expect(Array.from(stats.runningMean)).toEqual([1, -2]);
    expect(Array.from(stats.runningVar)).toEqual([4, 0.25]);
    expect(stats.numBatchesTracked).toBe(5);
  });

  test('training with one value per channel is refused, like torch', () => {
    const single = f64([1, 2], [1, 2, 1, 1]);
    expect(() => batchNorm2d(single, weight, bias, freshStats(2), { training: true })).toThrow(/more than 1 value per channel/);
    expect(() => batchNorm2d(single, weight, bias, freshStats(2), { training: false })).not.toThrow();
  });
});

describe('cross-entropy with label smoothing', () => {
  const logits = f64([1, 2, 3, 0, 0, 0], [2, 3]);
  const labels = new Int32Array([2, 0]);
  // Row 0: log-softmax = x - logsumexp(1, 2, 3); row 1: -log 3 for every class.
  const lse0 = Math.log(Math.exp(1) + Math.exp(2) + Math.exp(3));
  const nll = [lse0 - 3, Math.log(3)];
  const smooth = [(lse0 - 1 + (lse0 - 2) + (lse0 - 3)) / 3, Math.log(3)];

  test.each([0, 0.1, 0.25, 1])('smoothing %p: (1 - eps) * mean nll + eps * mean over classes of -log p', (eps) => {
    const expected = (1 - eps) * ((nll[0] + nll[1]) / 2) + eps * ((smooth[0] + smooth[1]) / 2);
    expect(crossEntropy(logits, labels, eps).data[0]).toBeCloseTo(expected, 14);
  });

  test('the gradient is (softmax - smoothed target) / N', () => {
    const z = f64([1, 2, 3, 0, 0, 0], [2, 3], true);
    backward(crossEntropy(z, labels, 0.1));
    const p0 = [1, 2, 3].map((v) => Math.exp(v - lse0));
    const target = (k: number, label: number) => (k === label ? 0.9 : 0) + 0.1 / 3;
    const expected = [0, 1, 2].map((k) => (p0[k] - target(k, 2)) / 2).concat([0, 1, 2].map((k) => (1 / 3 - target(k, 0)) / 2));
    expectAllClose(z.grad as Float64Array, expected, 1e-15);
  });

  test('labels are checked', () => {
    expect(() => crossEntropy(logits, new Int32Array([3, 0]))).toThrow(/label 3 of sample 0/);
    expect(() => crossEntropy(logits, new Int32Array([0]))).toThrow(/1 labels for a batch of 2/);
    expect(() => crossEntropy(logits, labels, 1.5)).toThrow(/label_smoothing/);
  });
});

describe('finite-difference gradient checks (float64, relative error < 1e-6)', () => {
  const cases: [string, (v: Variable[]) => Variable, { data: Float64Array; shape: number[] }[]][] = [
    [
      'conv2d 3x3 stride 1 pad 1',
      ([x, w]) => conv2d(x, w, { stride: 1, padding: 1 }),
      [randomInput([2, 3, 5, 5], 1), randomInput([4, 3, 3, 3], 2)],
    ],
    [
      'conv2d 3x3 stride 2 pad 1',
      ([x, w]) => conv2d(x, w, { stride: 2, padding: 1 }),
      [randomInput([2, 3, 6, 6], 3), randomInput([2, 3, 3, 3], 4)],
    ],
    ['conv2d 1x1 stride 2', ([x, w]) => conv2d(x, w, { stride: 2 }), [randomInput([2, 3, 5, 5], 5), randomInput([4, 3, 1, 1], 6)]],
    ['conv2d groups 2', ([x, w]) => conv2d(x, w, { padding: 1, groups: 2 }), [randomInput([1, 4, 4, 4], 7), randomInput([6, 2, 3, 3], 8)]],
    [
      'batch norm (train)',
      ([x, w, b]) => batchNorm2d(x, w, b, freshStats(3), { training: true }),
      [randomInput([3, 3, 2, 2], 9), randomInput([3], 10, 0.5, 2), randomInput([3], 11)],
    ],
    [
      'batch norm (eval)',
      ([x, w, b]) =>
        batchNorm2d(
          x,
          w,
          b,
          { runningMean: Float64Array.from([0.1, -0.2, 0.3]), runningVar: Float64Array.from([0.5, 2, 1]), numBatchesTracked: 0 },
          { training: false },
        ),
      [randomInput([2, 3, 2, 2], 12), randomInput([3], 13, 0.5, 2), randomInput([3], 14)],
    ],
    ['relu', ([x]) => relu(x), [randomInput([2, 3, 3, 3], 15)]],
    ['channel scale', ([x, w]) => channelScale(x, w), [randomInput([2, 3, 2, 2], 16), randomInput([3], 17)]],
    ['add', ([a, b]) => add(a, b), [randomInput([2, 3, 2, 2], 18), randomInput([2, 3, 2, 2], 19)]],
    ['global average pool', ([x]) => globalAvgPool(x), [randomInput([2, 3, 3, 2], 20)]],
    ['linear', ([x, w, b]) => linear(x, w, b), [randomInput([3, 4], 21), randomInput([5, 4], 22), randomInput([5], 23)]],
    ['cross-entropy', ([z]) => crossEntropy(z, new Int32Array([0, 4, 2]), 0), [randomInput([3, 5], 24, -3, 3)]],
    ['cross-entropy, smoothing 0.2', ([z]) => crossEntropy(z, new Int32Array([1, 1, 3]), 0.2), [randomInput([3, 5], 25, -3, 3)]],
    // A variable feeding three branches: the gradients must add up.
    [
      'shared input (gradient accumulation)',
      ([x, w, s]) => relu(add(add(conv2d(x, w, { padding: 1 }), channelScale(x, s)), x)),
      [randomInput([2, 2, 3, 3], 26), randomInput([2, 2, 3, 3], 27), randomInput([2], 28)],
    ],
  ];

  test.each(cases)('%s', (_name, op, inputs) => {
    const result = gradCheck(op, inputs);
    for (const error of result.relativeErrors) expect(error).toBeLessThan(GRAD_TOLERANCE);
    // Not vacuous: every input received a non-zero gradient.
    for (const g of result.analytic) expect(g.some((v) => v !== 0)).toBe(true);
  });

  test('the checker catches a wrong backward', () => {
    // y = 3x whose backward claims dy/dx = 2
    const wrong = ([x]: Variable[]) =>
      Variable.result(
        x.data.map((v) => 3 * v),
        x.shape,
        [x],
        (g) =>
          accumulateGrad(
            x,
            g.map((v) => 2 * v),
          ),
      );
    expect(gradCheck(wrong, [randomInput([4], 29)]).relativeErrors[0]).toBeGreaterThan(0.3);
  });

  test('inputs that need no gradient get none', () => {
    const x = Variable.leaf(randomInput([1, 1, 3, 3], 30).data, [1, 1, 3, 3], false);
    const w = Variable.leaf(randomInput([1, 1, 3, 3], 31).data, [1, 1, 3, 3], true);
    backward(conv2d(x, w, { padding: 1 }), new Float64Array(9).fill(1));
    expect(x.grad).toBeNull();
    expect(w.grad).not.toBeNull();
  });
});
