import { Tensor, manualSeed } from '../lib';
import { networkSpec } from '../lib/configs';
import { native } from '../lib/native';
import { NativeBackendNetwork } from '../lib/native-backend';
import { thrown, useTestThreads } from './helpers';

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

  test('async work runs with the thread count set last, also on pool threads that ran work before', async () => {
    const b = native();
    const before = b.info().threads;
    const onPool = () => Promise.all(Array.from({ length: 8 }, () => b.threadsAsync()));
    try {
      for (const threads of [1, 2, 1]) {
        b.setNumThreads(threads);
        expect(await onPool()).toEqual(Array(8).fill(threads));
      }
    } finally {
      b.setNumThreads(before);
    }
  });

  test('disposing an input during the call does not disturb it', async () => {
    const a = Tensor.fromArray(new Float64Array([1, 2, 3, 4]), [2, 2]);
    const p = a.matmulAsync(a);
    a.dispose();
    expect(Array.from((await p).toArray())).toEqual([7, 10, 15, 22]);
  });
});

describe('train and evaluate steps off the JS thread', () => {
  // A small RepOpt-VGG-XS on random 1x16x16 images; twins made with the same seeds.
  const spec = networkSpec('RepOpt-VGG-XS', { mode: 'target', numClasses: 4, inChannels: 1 });
  const N = 64;
  const images = Uint8Array.from({ length: N * 256 }, (_, i) => (i * 2654435761) % 251);
  const labels = Int32Array.from({ length: N }, (_, n) => (n * 7) % 4);
  const dataset = (labelsOf = labels) =>
    new (native().Dataset)(images, [N, 1, 16, 16], labelsOf, { mean: [0.5], std: [0.25], augmentSeed: 3 });
  const twin = () => {
    const net = new NativeBackendNetwork(spec, 'float32', 1);
    const opt = net.createOptimizer({ type: 'sgd', lr: 0.05, momentum: 0.9, nesterov: true, weightDecay: 1e-4 });
    const ds = dataset();
    return { net, opt, ds, perm: ds.permutation(0, 0) };
  };
  const options = { flip: true, pad: 2, labelSmoothing: 0.1 };

  test('async trainBatch and evaluate give bit-identical weights and metrics to the sync ones', async () => {
    const a = twin();
    const b = twin();
    for (let k = 0; k < 4; k++) {
      a.net.trainBatchSync(a.opt, a.ds, a.perm, k, 16, options);
      await b.net.trainBatch(b.opt, b.ds, b.perm, k, 16, options);
    }
    a.net.trainBatchSync(a.opt, a.ds, a.perm, 0, 16, options, 2);
    await b.net.trainBatch(b.opt, b.ds, b.perm, 0, 16, options, 2);
    expect(b.net.takeTrainMetrics()).toEqual(a.net.takeTrainMetrics());
    const sa = a.net.stateDict();
    for (const [name, t] of b.net.stateDict()) expect(Array.from(t.data)).toEqual(Array.from(sa.get(name)!.data));
    expect(await b.net.evaluate(b.ds, 24)).toEqual(a.net.evaluateSync(a.ds, 24));
    expect(b.opt.steps).toBe(a.opt.steps);
  });

  test('timers keep firing during a long async step', async () => {
    const { net, opt, ds, perm } = twin();
    let ticks = 0;
    const timer = setInterval(() => ticks++, 5);
    const start = Date.now();
    await net.trainBatch(opt, ds, perm, 0, 8, options, 8);
    const elapsed = Date.now() - start;
    clearInterval(timer);
    expect(elapsed).toBeGreaterThan(30);
    expect(ticks).toBeGreaterThanOrEqual(Math.floor(elapsed / 5 / 3));
  });

  test('while a step runs, every call on its network, optimizer and dataset is refused; afterwards they work', async () => {
    const { net, opt, ds, perm } = twin();
    const busy = (object: string, method: string) =>
      `${object}.${method}: an asynchronous step is running on this ${object.toLowerCase()}; await it first`;
    const refused = (fn: () => unknown, message: string) => expect(thrown(fn).message).toBe(message);
    const checkAll = (withOptimizer: boolean) => {
      const raw = native();
      refused(() => net.stateDict(), busy('Network', 'stateDict'));
      refused(() => net.device, busy('Network', 'device'));
      refused(() => net.setBatchNormMode('frozen'), busy('Network', 'setBatchNormMode'));
      refused(() => net.trainBatchSync(opt, ds, perm, 0, 8), busy('Network', 'trainBatch'));
      refused(() => net.takeTrainMetrics(), busy('Network', 'takeTrainMetrics'));
      refused(() => net.dispose(), busy('Network', 'dispose'));
      // The promise-returning facade methods reject (never throw).
      const rejected = [
        expect(net.trainBatch(opt, ds, perm, 0, 8)).rejects.toThrow(busy('Network', 'trainBatchAsync')),
        expect(net.evaluate(ds, 8)).rejects.toThrow(busy('Network', 'evaluateAsync')),
      ];
      if (withOptimizer) {
        refused(() => opt.setLr(0.1), busy('Optimizer', 'setLr'));
        refused(() => opt.steps, busy('Optimizer', 'steps'));
        refused(() => opt.stateBytes(), busy('Optimizer', 'stateBytes'));
        refused(() => opt.dispose(), busy('Optimizer', 'dispose'));
      }
      refused(() => ds.batch(raw.Tensor.fromArray(BigInt64Array.of(0n))), busy('Dataset', 'batch'));
      refused(() => ds.count, busy('Dataset', 'count'));
      refused(() => ds.setRngState(new Uint8Array(8)), busy('Dataset', 'setRngState'));
      refused(() => ds.dispose(), busy('Dataset', 'dispose'));
      // Another network may not read the dataset meanwhile either.
      const other = new NativeBackendNetwork(spec, 'float32', 2);
      const otherOpt = other.createOptimizer({ type: 'sgd', lr: 0.1 });
      expect(thrown(() => other.trainBatchSync(otherOpt, ds, perm, 0, 8)).message).toMatch(
        /an asynchronous step is running on this dataset/,
      );
      other.dispose();
      return Promise.all(rejected);
    };
    const step = net.trainBatch(opt, ds, perm, 0, 8, options, 2);
    const refusedWhileTraining = checkAll(true);
    await step;
    await refusedWhileTraining;
    const evaluation = net.evaluate(ds, 16);
    const refusedWhileEvaluating = checkAll(false);
    opt.setLr(0.2); // the optimizer is free during an evaluation
    expect((await evaluation).count).toBe(N);
    await refusedWhileEvaluating;
    // Settled: everything works again.
    opt.setLr(0.1);
    expect(opt.steps).toBe(2);
    net.trainBatchSync(opt, ds, perm, 1, 8);
    expect(net.takeTrainMetrics().count).toBe(24);
    expect(ds.count).toBe(N);
    opt.dispose();
    ds.dispose();
    net.dispose();
  });

  test('an error inside the async step rejects with libtorch’s message and frees the busy flags', async () => {
    const net = new NativeBackendNetwork(spec, 'float32', 1);
    const opt = net.createOptimizer({ type: 'sgd', lr: 0.05 });
    const bad = dataset(Int32Array.from({ length: N }, (_, n) => (n === 5 ? 9 : 0))); // label 9 of 4 classes
    const perm = bad.permutation(0, 0);
    await expect(net.trainBatch(opt, bad, perm, 0, N)).rejects.toThrow(/out of bounds/);
    await expect(net.evaluate(bad, 16)).rejects.toThrow(/out of bounds/);
    opt.setLr(0.1);
    expect(bad.count).toBe(N);
    expect(net.takeTrainMetrics().count).toBe(0);
    net.dispose();
    opt.dispose();
    bad.dispose();
  });
});

describe('int8 evaluation and calibration off the JS thread', () => {
  // A small deploy RepOpt-VGG-XS on random 1x16x16 images; twins made with the same seed.
  const spec = networkSpec('RepOpt-VGG-XS', { mode: 'deploy', numClasses: 4, inChannels: 1 });
  const N = 64;
  const images = Uint8Array.from({ length: N * 256 }, (_, i) => (i * 2654435761) % 251);
  const labels = Int32Array.from({ length: N }, (_, n) => (n * 7) % 4);
  const dataset = () => new (native().Dataset)(images, [N, 1, 16, 16], labels, { mean: [0.5], std: [0.25] });

  test('async calibration and int8 evaluation equal the sync ones', async () => {
    const a = new NativeBackendNetwork(spec, 'float32', 1);
    const b = new NativeBackendNetwork(spec, 'float32', 1);
    const ds = dataset();
    const perm = ds.permutation(5, 0);
    const options = { observer: 'percentile', percentile: 99.9 } as const;
    const sync = a.calibrateSync(ds, perm, 16, 3, options);
    const viaPromise = await b.calibrate(ds, perm, 16, 3, options);
    expect(viaPromise).toEqual(sync);
    expect(b.quantParams()).toEqual(a.quantParams());
    const metrics = a.evaluateInt8Sync(ds, 24);
    expect(metrics.count).toBe(N);
    expect(Number.isFinite(metrics.loss)).toBe(true);
    expect(await b.evaluateInt8(ds, 24)).toEqual(metrics);
    expect(await a.evaluateInt8(ds, 24)).toEqual(metrics);
    perm.dispose();
    ds.dispose();
    a.dispose();
    b.dispose();
  });

  test('while either runs, every call on its network and dataset is refused (the optimizer stays free); afterwards they work', async () => {
    const net = new NativeBackendNetwork(spec, 'float32', 1);
    const opt = net.createOptimizer({ type: 'sgd', lr: 0.1 });
    const ds = dataset();
    const perm = ds.permutation(0, 0);
    const x = native().Tensor.fromArray(new Float32Array(2 * 256), [2, 1, 16, 16]);
    net.calibrateSync(ds, perm, 16, 1);
    const busy = (object: string, method: string) =>
      `${object}.${method}: an asynchronous step is running on this ${object.toLowerCase()}; await it first`;
    const refused = (fn: () => unknown, message: string) => expect(thrown(fn).message).toBe(message);
    const checkAll = () => {
      refused(() => net.stateDict(), busy('Network', 'stateDict'));
      refused(() => net.quantParams(), busy('Network', 'quantParams'));
      refused(() => net.setFakeQuant(true), busy('Network', 'setFakeQuant'));
      refused(() => net.setQuantRanges({ points: [] }), busy('Network', 'setQuantRanges'));
      refused(() => net.forwardInt8(x), busy('Network', 'forwardInt8'));
      refused(() => net.quantizedWeights(), busy('Network', 'quantizedWeights'));
      refused(() => net.evaluateInt8Sync(ds, 16), busy('Network', 'evaluateInt8'));
      refused(() => net.calibrateSync(ds, perm, 16, 1), busy('Network', 'calibrate'));
      refused(() => net.trainBatchSync(opt, ds, perm, 0, 8), busy('Network', 'trainBatch'));
      refused(() => net.dispose(), busy('Network', 'dispose'));
      refused(() => ds.count, busy('Dataset', 'count'));
      refused(() => ds.batch(native().Tensor.fromArray(BigInt64Array.of(0n))), busy('Dataset', 'batch'));
      refused(() => ds.dispose(), busy('Dataset', 'dispose'));
      // Another network may not read the dataset meanwhile either.
      const other = new NativeBackendNetwork(spec, 'float32', 2);
      expect(thrown(() => other.calibrateSync(ds, perm, 16, 1)).message).toBe(
        'Network.calibrate: an asynchronous step is running on this dataset; await it first',
      );
      expect(thrown(() => other.evaluateSync(ds, 16)).message).toMatch(/an asynchronous step is running on this dataset/);
      other.dispose();
      opt.setLr(0.2); // the optimizer is not used by either
      // The promise-returning facade methods reject (never throw).
      return Promise.all([
        expect(net.evaluateInt8(ds, 16)).rejects.toThrow(busy('Network', 'evaluateInt8Async')),
        expect(net.calibrate(ds, perm, 16, 1)).rejects.toThrow(busy('Network', 'calibrateAsync')),
        expect(net.evaluate(ds, 16)).rejects.toThrow(busy('Network', 'evaluateAsync')),
      ]);
    };
    const evaluation = net.evaluateInt8(ds, 16);
    const refusedWhileEvaluating = checkAll();
    expect((await evaluation).count).toBe(N);
    await refusedWhileEvaluating;
    const calibration = net.calibrate(ds, perm, 16, 2);
    const refusedWhileCalibrating = checkAll();
    const params = await calibration;
    await refusedWhileCalibrating;
    // Settled: everything works again, with the new ranges.
    expect(net.quantParams()).toEqual(params);
    expect(net.evaluateInt8Sync(ds, 16).count).toBe(N);
    expect(ds.count).toBe(N);
    net.trainBatchSync(opt, ds, perm, 0, 8);
    expect(opt.steps).toBe(1);
    x.dispose();
    perm.dispose();
    opt.dispose();
    ds.dispose();
    net.dispose();
  });

  test('an error inside the async work rejects and frees the busy flags', async () => {
    const net = new NativeBackendNetwork(spec, 'float32', 1);
    const ds = dataset();
    const perm = ds.permutation(0, 0);
    await net.calibrate(ds, perm, 16, 1, { activations: 'int8' });
    await expect(net.evaluateInt8(ds, 16)).rejects.toThrow(/real int8 inference uses uint8 activations/);
    expect(ds.count).toBe(N);
    expect(net.quantParams()!.activations).toBe('int8');
    perm.dispose();
    ds.dispose();
    net.dispose();
  });
});
