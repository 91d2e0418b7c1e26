import { Tensor, manualSeed } from '../lib';
import { useTestThreads } from './helpers';

beforeAll(useTestThreads);

describe('async native work', () => {
  test('matmulAsync equals matmul', async () => {
    manualSeed(7);
    const a = Tensor.randn([64, 32], 'float64');
    const b = Tensor.randn([32, 16], 'float64');
    const sync = a.matmul(b).toArray();
    const viaPromise = (await a.matmulAsync(b)).toArray();
    expect(Array.from(viaPromise)).toEqual(Array.from(sync));
  });

  test('a long call leaves the event loop free for timers', async () => {
    const n = 1200;
    const a = Tensor.randn([n, n], 'float64');
    let ticks = 0;
    const timer = setInterval(() => ticks++, 5);
    const start = Date.now();
    const out = await a.matmulAsync(a);
    const elapsed = Date.now() - start;
    clearInterval(timer);
    expect(out.shape).toEqual([n, n]);
    // The timer must keep firing while libtorch works: most 5 ms slots of the call got a tick.
    expect(elapsed).toBeGreaterThan(50);
    expect(ticks).toBeGreaterThanOrEqual(Math.floor(elapsed / 5 / 3));
  });

  test('errors reject the promise with libtorch’s message', async () => {
    const a = Tensor.zeros([2, 3]);
    await expect(a.matmulAsync(Tensor.zeros([4, 5]))).rejects.toThrow(/^mat1 and mat2 shapes cannot be multiplied/);
  });

  test('disposing an input during the call does not disturb it', async () => {
    const a = Tensor.fromArray(new Float64Array([1, 2, 3, 4]), [2, 2]);
    const p = a.matmulAsync(a);
    a.dispose();
    expect(Array.from((await p).toArray())).toEqual([7, 10, 15, 22]);
  });
});
