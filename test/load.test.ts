import { Worker } from 'worker_threads';
import * as path from 'path';

describe('the module in several environments', () => {
  test('two loads in one process (jest module registries) both work', () => {
    const loads: typeof import('../lib/native')[] = [];
    for (let k = 0; k < 2; k++) jest.isolateModules(() => loads.push(require('../lib/native')));
    expect(loads[0]).not.toBe(loads[1]);
    const [a, b] = loads.map((m) => m.native());
    const ta = a.Tensor.fromArray(new Float32Array([1, 2]), [1, 2]);
    const tb = b.Tensor.fromArray(new Float32Array([3, 4]), [2, 1]);
    expect(Array.from(ta.matmul(tb).toArray())).toEqual([11]);
    expect(Array.from(tb.matmul(ta).toArray())).toEqual([3, 6, 4, 8]);
  });

  test('worker threads load the addon concurrently and compute', async () => {
    const binding = require('../lib/native').loadNative().path as string;
    const script = `
      const { parentPort, workerData } = require('worker_threads');
      const b = require(workerData.binding);
      b.setNumThreads(1);
      const t = b.Tensor.fromArray(new Float64Array([workerData.k, 1, 0, 1]), [2, 2]);
      b.Tensor.zeros([1000]).dispose();
      parentPort.postMessage(Array.from(t.matmul(t).toArray()));`;
    const results = await Promise.all(
      [2, 3, 4].map(
        (k) =>
          new Promise<number[]>((resolve, reject) => {
            const w = new Worker(script, { eval: true, workerData: { binding, k } });
            w.once('message', resolve);
            w.once('error', reject);
          }),
      ),
    );
    expect(results).toEqual([
      [4, 3, 0, 1],
      [9, 4, 0, 1],
      [16, 5, 0, 1],
    ]);
    expect(path.isAbsolute(binding)).toBe(true);
  });
});
