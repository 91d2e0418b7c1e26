import { Tensor, info, setNumThreads, manualSeed } from '../lib';
import { native } from '../lib/native';
import { thrown, useTestThreads } from './helpers';

beforeAll(useTestThreads);

const loose = Tensor as unknown as Record<string, (...args: unknown[]) => unknown>;

function expectError(fn: () => unknown, name: string, message: RegExp | string): void {
  const e = thrown(fn);
  expect(e.name).toBe(name);
  if (typeof message === 'string') expect(e.message).toBe(message);
  else expect(e.message).toMatch(message);
  expect(e.message).not.toMatch(/Exception raised from|frame #\d/);
}

describe('argument errors name the argument', () => {
  test('wrong types', () => {
    expectError(() => loose.fromArray([1, 2, 3]), 'TypeError', /^Tensor\.fromArray: argument 'data' must be a Float32Array/);
    expectError(() => loose.fromArray(new Int16Array(2)), 'TypeError', /argument 'data'/);
    expectError(
      () => loose.fromArray(new Float32Array(2), 'abc'),
      'TypeError',
      /argument 'shape' must be an array of non-negative integers, got a string/,
    );
    expectError(() => loose.fromArray(new Float32Array(2), [1, '2']), 'TypeError', /got a string at index 1/);
    expectError(() => loose.zeros([2], 7), 'TypeError', "Tensor.zeros: argument 'dtype' must be a string, got the number 7");
    expectError(() => loose.zeros([2], 'float16'), 'RangeError', /argument 'dtype' must be one of float32/);
    expectError(() => loose.randn([2], 'int32'), 'RangeError', /must be float32 or float64 for randn/);
    expectError(() => setNumThreads('2' as unknown as number), 'TypeError', /setNumThreads: argument 'threads' must be an integer/);
    expectError(() => manualSeed(-1), 'RangeError', /manualSeed: argument 'seed' must be in/);
    expectError(() => manualSeed(2n ** 64n), 'RangeError', /must fit in an unsigned 64-bit integer/);
  });

  test('wrong argument counts', () => {
    expectError(() => loose.fromArray(), 'TypeError', 'Tensor.fromArray: expected 1 to 2 argument(s), got 0');
    expectError(() => loose.zeros([1], 'float32', 3), 'TypeError', 'Tensor.zeros: expected 1 to 2 argument(s), got 3');
    const t = Tensor.zeros([2, 2]) as unknown as Record<string, (...a: unknown[]) => unknown>;
    expectError(() => t.matmul(), 'TypeError', 'Tensor.matmul: expected 1 argument(s), got 0');
    expectError(() => (native().info as (...a: unknown[]) => unknown)(1), 'TypeError', 'info: expected 0 argument(s), got 1');
  });

  test('negative, NaN, fractional, infinite and huge shapes', () => {
    const d = new Float32Array(4);
    expectError(
      () => Tensor.fromArray(d, [2, -2]),
      'RangeError',
      "Tensor.fromArray: argument 'shape' must hold non-negative integers, got -2 at index 1",
    );
    expectError(() => Tensor.fromArray(d, [NaN, 4]), 'RangeError', /got NaN at index 0/);
    expectError(() => Tensor.fromArray(d, [1.5, 2]), 'RangeError', /got 1.5 at index 0/);
    expectError(() => Tensor.fromArray(d, [Infinity]), 'RangeError', /got Infinity/);
    expectError(() => Tensor.zeros([2 ** 30, 2 ** 30]), 'RangeError', /more than 2\^48 elements/);
    expectError(() => Tensor.zeros(new Array(65).fill(1)), 'RangeError', /at most 64 are supported/);
    expectError(() => setNumThreads(0), 'RangeError', /must be in \[1, 1024\]/);
    expectError(() => setNumThreads(NaN), 'RangeError', /must be an integer, got NaN/);
  });

  test('mismatched lengths', () => {
    expectError(
      () => Tensor.fromArray(new Float32Array(5), [2, 3]),
      'RangeError',
      "Tensor.fromArray: argument 'shape' describes 6 elements but 'data' holds 5",
    );
  });

  test('objects that are not Tensors', () => {
    const t = Tensor.zeros([2, 2]);
    const impostor = Object.create(Object.getPrototypeOf(t));
    expectError(() => t.matmul({} as never), 'TypeError', "Tensor.matmul: argument 'other' must be a Tensor");
    expectError(() => t.matmul(impostor), 'TypeError', "Tensor.matmul: argument 'other' must be a Tensor");
    expectError(() => Object.getPrototypeOf(t).toArray.call({}), 'TypeError', /Illegal invocation/);
    // Getters are not receiver-checked by V8: ours check the class themselves.
    const shapeGetter = Object.getOwnPropertyDescriptor(Object.getPrototypeOf(t), 'shape')!.get!;
    const net = new (native().Network)({
      mode: 'target',
      inChannels: 1,
      numClasses: 2,
      blocks: [{ name: 'stage0', inChannels: 1, outChannels: 2, stride: 1 }],
    });
    expectError(() => shapeGetter.call(net), 'TypeError', 'Tensor.shape: called on an object of another class');
    const netDevice = Object.getOwnPropertyDescriptor(Object.getPrototypeOf(net), 'device')!.get!;
    expectError(() => netDevice.call(t), 'TypeError', 'Network.device: called on an object of another class');
    const Ctor = (t as unknown as { constructor: new () => unknown }).constructor;
    expectError(() => new Ctor(), 'TypeError', /use Tensor\.fromArray/);
  });

  test('libtorch errors arrive as JS errors with libtorch’s message and no backtrace', () => {
    const a = Tensor.zeros([2, 3]);
    expectError(() => a.matmul(Tensor.zeros([2, 3])), 'Error', /^mat1 and mat2 shapes cannot be multiplied \(2x3 and 2x3\)$/);
    expectError(() => a.to('tpu'), 'RangeError', /argument 'device' is not a device name/);
    // A CUDA request without CUDA says which case it is and names the libtorch it found.
    const i = info();
    if (!i.cuda && !i.cudaBuild)
      expectError(
        () => a.to('cuda:0'),
        'Error',
        new RegExp(
          `^Tensor\\.to: CUDA is not available: this binary is built for a CPU-only libtorch ${i.torchVersion}; CUDA needs a CUDA libtorch`,
        ),
      );
    if (!i.cuda && i.cudaBuild)
      expectError(
        () => a.to('cuda:0'),
        'Error',
        new RegExp(
          `^Tensor\\.to: CUDA is not available: this binary and libtorch ${i.torchVersion} are built with CUDA, but no CUDA device is visible`,
        ),
      );
    expectError(() => a.to('meta'), 'RangeError', /must be 'cpu' or a CUDA device/);
    expectError(() => Tensor.zeros([2 ** 46]), 'Error', /memory|allocate/i);
  });
});
