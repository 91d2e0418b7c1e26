// The official recipe's training pieces: gradient accumulation (equal to one big batch where BatchNorm
// does not look at the batch), the EMA of the weights (the formula, checkpointed, restored on resume),
// and Mixup / CutMix (the draws, the mixed batch and the soft-target loss against a reference).
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { evaluate, train } from '../lib';
import type { TrainOptions } from '../lib';
import { networkSpec } from '../lib/configs';
import { native, type NativeDataset } from '../lib/native';
import { NativeBackendNetwork } from '../lib/native-backend';
import type { Precision } from '../lib/spec';
import { Tensor } from '../lib/tensor';
import { readCheckpoint, readLatestCheckpoint } from '../lib/train/checkpoint';
import { type MixDraw, mixDraw, StepRng } from '../lib/train/mixup';
import { useTestThreads } from './helpers';

beforeAll(useTestThreads);

const spec = networkSpec('RepOpt-VGG-XS', { mode: 'target', numClasses: 4, inChannels: 1 });
const N = 64;
const SIDE = 16;
const images = Uint8Array.from({ length: N * SIDE * SIDE }, (_, i) => (i * 2654435761) % 251);
const labels = Int32Array.from({ length: N }, (_, n) => (n * 7) % 4);
const dataset = (): NativeDataset =>
  new (native().Dataset)(images, [N, 1, SIDE, SIDE], labels, { mean: [0.5], std: [0.25], augmentSeed: 3 });
// Samples in order: batch k is samples [k * size, (k + 1) * size).
const inOrder = () => Tensor.fromArray(BigInt64Array.from({ length: N }, (_, i) => BigInt(i)));

function model(precision: Precision = 'float32', seed = 1) {
  const net = new NativeBackendNetwork(spec, precision, seed);
  const opt = net.createOptimizer({ type: 'sgd', lr: 0.05, momentum: 0.9, nesterov: true, weightDecay: 1e-4 });
  return { net, opt };
}

/** Largest |a - b| over the floating state, relative to the largest |a|. */
function stateDistance(a: NativeBackendNetwork, b: NativeBackendNetwork): number {
  const sb = b.stateTensors();
  let diff = 0;
  let scale = 0;
  for (const [name, t] of a.stateTensors()) {
    if (t.dtype === 'int64') continue;
    const u = t.data as Float32Array | Float64Array;
    const v = sb.get(name)!.data as Float32Array | Float64Array;
    for (let i = 0; i < u.length; i++) {
      diff = Math.max(diff, Math.abs(u[i]! - v[i]!));
      scale = Math.max(scale, Math.abs(u[i]!));
    }
  }
  return diff / scale;
}

describe('gradient accumulation', () => {
  // Three steps of batch 32 on the same samples, in 1 or 4 micro-batches.
  async function trained(precision: Precision, accumulate: number, batchNorm: 'batch' | 'frozen') {
    const { net, opt } = model(precision);
    if (batchNorm === 'frozen') net.setBatchNormMode('frozen');
    const ds = dataset();
    const order = inOrder();
    for (let k = 0; k < 3; k++) await net.trainBatch(opt, ds, order, k % 2, 32, { labelSmoothing: 0.1, accumulate });
    const metrics = net.takeTrainMetrics();
    order.dispose();
    ds.dispose();
    opt.dispose();
    return { net, metrics };
  }

  test('with eval-mode BatchNorm, 4 micro-batches equal one batch: float32 within 1e-7, float64 within 1e-15', async () => {
    for (const [precision, bound] of [
      ['float32', 1e-7],
      ['float64', 1e-15],
    ] as const) {
      const one = await trained(precision, 1, 'frozen');
      const four = await trained(precision, 4, 'frozen');
      const distance = stateDistance(one.net, four.net);
      // Relative to the largest weight; measured on a 2-core Debian 12 host, libtorch 1.13.1: float32 7.5e-9, float64 1.4e-17.
      expect(distance).toBeLessThan(bound);
      // The reported loss is the mean over the whole batch either way.
      expect(Math.abs(four.metrics.loss - one.metrics.loss)).toBeLessThan(bound * 10);
      expect(four.metrics.accuracy).toBe(one.metrics.accuracy);
      expect(four.metrics.count).toBe(96);
      one.net.dispose();
      four.net.dispose();
    }
  });

  test('with batch BatchNorm they differ: the statistics are per micro-batch', async () => {
    const one = await trained('float64', 1, 'batch');
    const four = await trained('float64', 4, 'batch');
    expect(stateDistance(one.net, four.net)).toBeGreaterThan(1e-4);
    one.net.dispose();
    four.net.dispose();
  });

  test('an accumulate that does not divide the batch is refused, naming it', async () => {
    const { net, opt } = model();
    const ds = dataset();
    const order = inOrder();
    await expect(net.trainBatch(opt, ds, order, 0, 16, { accumulate: 3 })).rejects.toThrow(
      'Network.trainBatchAsync: options.accumulate must divide batchSize 16, got 3',
    );
    await expect(net.trainBatch(opt, ds, order, 0, 16, { accumulate: 0 })).rejects.toThrow(
      /options\.accumulate must be an integer in \[1, 16\]/,
    );
    net.dispose();
  });
});

describe('EMA of the weights', () => {
  test('after each step: ema = decay * ema + (1 - decay) * weights for parameters and BN statistics, counts copied', async () => {
    const { net, opt } = model();
    const ema = new NativeBackendNetwork(spec, 'float32', 2); // other weights than net's
    const ds = dataset();
    const order = inOrder();
    const decay = 0.9;
    for (let k = 0; k < 2; k++) {
      const before = ema.stateTensors();
      await net.trainBatch(opt, ds, order, k, 16, { flip: true, pad: 2, ema: { network: ema, decay } });
      const weights = net.stateTensors();
      let worst = 0;
      let buffers = 0;
      for (const [name, t] of ema.stateTensors()) {
        const w = weights.get(name)!.data;
        if (t.dtype === 'int64') {
          expect(Array.from(t.data as BigInt64Array)).toEqual(Array.from(w as BigInt64Array));
          continue;
        }
        if (name.endsWith('running_mean') || name.endsWith('running_var')) buffers++;
        const e0 = before.get(name)!.data as Float32Array;
        const e1 = t.data as Float32Array;
        for (let i = 0; i < e1.length; i++) {
          const expected = decay * e0[i]! + (1 - decay) * (w as Float32Array)[i]!;
          worst = Math.max(worst, Math.abs(e1[i]! - expected) / (1 + Math.abs(expected)));
        }
      }
      expect(buffers).toBeGreaterThan(0);
      expect(worst).toBeLessThan(1e-6);
    }
    net.dispose();
    ema.dispose();
  });

  test('the EMA network is busy while the step runs, and must match the trained network', async () => {
    const { net, opt } = model();
    const ema = new NativeBackendNetwork(spec, 'float32', 2);
    const ds = dataset();
    const order = inOrder();
    const step = net.trainBatch(opt, ds, order, 0, 16, { ema: { network: ema, decay: 0.5 } });
    expect(() => ema.stateDict()).toThrow(/asynchronous step is running/);
    await step;
    expect(ema.stateDict().size).toBeGreaterThan(0);
    const other = new NativeBackendNetwork(networkSpec('RepOpt-VGG-XS', { mode: 'target', numClasses: 5, inChannels: 1 }), 'float32');
    await expect(net.trainBatch(opt, ds, order, 0, 16, { ema: { network: other, decay: 0.5 } })).rejects.toThrow(
      /options\.ema\.network has another architecture than the trained network/,
    );
    await expect(net.trainBatch(opt, ds, order, 0, 16, { ema: { network: net, decay: 0.5 } })).rejects.toThrow(
      /options\.ema\.network is the trained network itself/,
    );
    await expect(net.trainBatch(opt, ds, order, 0, 16, { ema: { network: ema, decay: 2 } })).rejects.toThrow(
      /options\.ema\.decay must be in \[0, 1\]/,
    );
    for (const n of [net, ema, other]) n.dispose();
  });
});

describe('Mixup / CutMix draws', () => {
  const config = { mixupAlpha: 1, cutmixAlpha: 0, prob: 1, switchProb: 0.5 };

  test('Beta(1, 1) lambdas: mean 1/2, variance 1/12; Beta(0.5, 2) through the shape < 1 path: mean 0.2', () => {
    const lams = Array.from({ length: 20000 }, (_, step) => mixDraw(config, 7, step, 32, 32)!.lam);
    const mean = lams.reduce((a, b) => a + b) / lams.length;
    const variance = lams.reduce((a, b) => a + (b - mean) ** 2, 0) / lams.length;
    // Standard errors: 0.002 for the mean, 0.0005 for the variance.
    expect(Math.abs(mean - 0.5)).toBeLessThan(0.01);
    expect(Math.abs(variance - 1 / 12)).toBeLessThan(0.003);
    expect(lams.every((l) => l > 0 && l < 1)).toBe(true);
    const rng = new StepRng(3, 0);
    const betas = Array.from({ length: 20000 }, () => rng.beta(0.5, 2));
    expect(Math.abs(betas.reduce((a, b) => a + b) / betas.length - 0.2)).toBeLessThan(0.006);
  });

  test('the same (seed, step) gives the same draw; prob and switchProb set how often each happens', () => {
    const both = { mixupAlpha: 0.8, cutmixAlpha: 1, prob: 0.6, switchProb: 0.25 };
    expect(mixDraw(both, 5, 123, 28, 28)).toEqual(mixDraw(both, 5, 123, 28, 28));
    expect(mixDraw(both, 5, 123, 28, 28)).not.toEqual(mixDraw(both, 5, 124, 28, 28));
    const draws = Array.from({ length: 10000 }, (_, step) => mixDraw(both, 5, step, 28, 28));
    const mixed = draws.filter((d) => d !== null);
    expect(Math.abs(mixed.length / draws.length - 0.6)).toBeLessThan(0.02);
    expect(Math.abs(mixed.filter((d) => d.kind === 'cutmix').length / mixed.length - 0.25)).toBeLessThan(0.02);
  });

  test('the CutMix box lies in the image, and lam is the share outside it (correct_lam)', () => {
    const cutmix = { mixupAlpha: 0, cutmixAlpha: 1, prob: 1, switchProb: 0.5 };
    let inside = 0;
    for (let step = 0; step < 5000; step++) {
      const d = mixDraw(cutmix, 11, step, 24, 32)!;
      if (d.kind !== 'cutmix') throw new Error('expected CutMix');
      expect(d.top).toBeGreaterThanOrEqual(0);
      expect(d.bottom).toBeLessThanOrEqual(24);
      expect(d.left).toBeGreaterThanOrEqual(0);
      expect(d.right).toBeLessThanOrEqual(32);
      expect(d.lam).toBe(1 - ((d.bottom - d.top) * (d.right - d.left)) / (24 * 32));
      inside += 1 - d.lam;
    }
    // Clipping at the border makes boxes smaller than 1 - lam of Beta(1, 1) (mean 1/2) asks for.
    expect(inside / 5000).toBeGreaterThan(0.2);
    expect(inside / 5000).toBeLessThan(0.5);
  });
});

describe('Mixup / CutMix steps', () => {
  const smoothing = 0.1;
  const size = 16;

  /** The first `size` samples as the network sees them (no augmentation), mixed on the host as `draw` says. */
  function mixedBatch(draw: MixDraw | null): { x: Float64Array; y: number[] } {
    const ds = dataset();
    const indices = Tensor.fromArray(BigInt64Array.from({ length: size }, (_, i) => BigInt(i)));
    const [xt, yt] = ds.batch(indices, {}, 'float64');
    const x = xt.toArray() as Float64Array;
    const y = Array.from(yt.toArray() as BigInt64Array, Number);
    for (const t of [xt, yt, indices]) t.dispose();
    ds.dispose();
    if (!draw) return { x, y };
    const per = SIDE * SIDE;
    const out = Float64Array.from(x);
    for (let n = 0; n < size; n++) {
      const r = size - 1 - n;
      for (let i = 0; i < per; i++) {
        const [row, col] = [Math.floor(i / SIDE), i % SIDE];
        if (draw.kind === 'mixup') out[n * per + i] = x[n * per + i]! * draw.lam + x[r * per + i]! * (1 - draw.lam);
        else if (row >= draw.top && row < draw.bottom && col >= draw.left && col < draw.right) out[n * per + i] = x[r * per + i]!;
      }
    }
    return { x: out, y };
  }

  /** mean over samples of sum(-target * log_softmax(logits)), target = lam * t(y) + (1 - lam) * t(y reversed). */
  function softLoss(logits: Float64Array | Float32Array, y: number[], lam: number): number {
    const classes = 4;
    const off = smoothing / classes;
    let total = 0;
    for (let n = 0; n < y.length; n++) {
      const row = Array.from(logits.subarray(n * classes, (n + 1) * classes));
      const max = Math.max(...row);
      const logSum = max + Math.log(row.reduce((a, v) => a + Math.exp(v - max), 0));
      for (let c = 0; c < classes; c++) {
        const target = lam * (c === y[n] ? 1 - smoothing + off : off) + (1 - lam) * (c === y[y.length - 1 - n] ? 1 - smoothing + off : off);
        total -= target * (row[c]! - logSum);
      }
    }
    return total / y.length;
  }

  test.each([
    ['mixup', { kind: 'mixup', lam: 0.3 }],
    ['cutmix', { kind: 'cutmix', lam: 1 - (6 * 9) / 256, top: 3, bottom: 9, left: 7, right: 16 }],
  ] as const)('%s: the step loss equals the soft-target loss of the logits of the mixed batch (1e-6 relative)', async (_, draw) => {
    for (const precision of ['float64', 'float32'] as const) {
      // Twins: one runs the forward pass on the host-mixed batch (batch statistics, as in the step), the other the step.
      const reference = model(precision);
      const stepped = model(precision);
      const { x, y } = mixedBatch(draw);
      const logits = reference.net.forward({ shape: [size, 1, SIDE, SIDE], data: x }, 'train').data;
      const ds = dataset();
      const order = inOrder();
      await stepped.net.trainBatch(stepped.opt, ds, order, 0, size, { labelSmoothing: smoothing, mix: [draw] });
      const m = stepped.net.takeTrainMetrics();
      const expected = softLoss(logits, y, draw.lam);
      expect(Math.abs(m.loss - expected) / expected).toBeLessThan(1e-6);
      // Accuracy counts the larger share's label (lam < 1/2: the reversed batch's).
      const dominant = draw.lam >= 0.5 ? y : [...y].reverse();
      let correct = 0;
      for (let n = 0; n < size; n++) {
        const row = Array.from(logits.subarray(n * 4, n * 4 + 4));
        if (row.indexOf(Math.max(...row)) === dominant[n]) correct++;
      }
      expect(m.accuracy).toBe(correct / size);
      for (const n of [reference.net, stepped.net]) n.dispose();
      ds.dispose();
    }
  });

  test('an unmixed step is the plain step, bit for bit; lam = 1 gives the label-smoothed loss', async () => {
    const ds = dataset();
    const order = inOrder();
    const plain = model();
    const unmixed = model();
    const whole = model();
    await plain.net.trainBatch(plain.opt, ds, order, 0, size, { labelSmoothing: smoothing });
    await unmixed.net.trainBatch(unmixed.opt, ds, order, 0, size, { labelSmoothing: smoothing, mix: [null] });
    await whole.net.trainBatch(whole.opt, ds, order, 0, size, { labelSmoothing: smoothing, mix: [{ kind: 'mixup', lam: 1 }] });
    expect(stateDistance(plain.net, unmixed.net)).toBe(0);
    const [a, b, c] = [plain, unmixed, whole].map((m) => m.net.takeTrainMetrics().loss);
    expect(b).toBe(a);
    expect(Math.abs(c! - a!) / a!).toBeLessThan(1e-6);
    for (const m of [plain, unmixed, whole]) m.net.dispose();
  });

  test('draws are checked: one per step, the box inside the image', async () => {
    const { net, opt } = model();
    const ds = dataset();
    const order = inOrder();
    await expect(net.trainBatch(opt, ds, order, 0, size, { mix: [] })).rejects.toThrow(
      /options\.mix must hold one entry per step \(1\), got 0/,
    );
    await expect(
      net.trainBatch(opt, ds, order, 0, size, { mix: [{ kind: 'cutmix', lam: 0.5, top: 0, bottom: 17, left: 0, right: 4 }] }),
    ).rejects.toThrow(/options\.mix\[0\]\.bottom must be an integer in \[0, 16\]/);
    net.dispose();
  });
});

describe('train() with ema, accumulate and mixup', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'repopt-recipe-'));
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
  const options = (out: string, extra: Partial<TrainOptions> = {}): TrainOptions => ({
    arch: 'RepOpt-VGG-XS',
    mode: 'vgg',
    data: { kind: 'fashion-mnist', trainSubset: 320, testSubset: 100 },
    epochs: 2,
    batchSize: 32,
    logEvery: 5,
    accumulate: 2,
    ema: { decay: 0.8 },
    mixup: { mixupAlpha: 0.8, cutmixAlpha: 1 },
    threads: Number(process.env.REPOPT_TEST_THREADS ?? 2),
    outDir: path.join(tmp, out),
    ...extra,
  });

  test('the EMA is evaluated each epoch, checkpointed and restored: a resumed run ends bit-identical to an uninterrupted one', async () => {
    const whole = await train(options('whole')).result;
    expect(whole.ema).toBeDefined();
    expect(whole.history.map((h) => Number.isFinite(h.testAccuracyEma))).toEqual([true, true]);
    expect(whole.ema!.test.accuracy).toBe(whole.history[1]!.testAccuracyEma);
    const evals = fs
      .readFileSync(path.join(tmp, 'whole', 'metrics.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l))
      .filter((r) => r.type === 'eval');
    expect(evals.map((r) => typeof r.testLossEma)).toEqual(['number', 'number']);

    const first = await train(options('split', { stopAfterSteps: 13 })).result;
    expect(first.status).toBe('stopped');
    first.network.dispose();
    first.ema!.network.dispose();
    const rest = await train(options('split', { resume: true })).result;
    expect(rest.steps).toBe(20);
    expect(stateDistance(whole.network, rest.network)).toBe(0);
    expect(stateDistance(whole.ema!.network, rest.ema!.network)).toBe(0);
    expect(rest.ema!.test).toEqual(whole.ema!.test);
    // The EMA differs from the weights (it lags them).
    expect(stateDistance(whole.network, whole.ema!.network)).toBeGreaterThan(1e-3);

    // ema.pth is one of the checkpoint's files, covered by the sealed meta.json; eval still reads the model.
    const ckpt = readLatestCheckpoint(path.join(tmp, 'whole', 'checkpoints'))!;
    expect(Object.keys(ckpt.meta.files).sort()).toEqual(['ema.pth', 'model.pth', 'optimizer.bin']);
    expect(ckpt.ema!.size).toBe(ckpt.model.size);
    const m = await evaluate({ checkpoint: path.join(tmp, 'whole'), threads: Number(process.env.REPOPT_TEST_THREADS ?? 2) });
    expect(m.accuracy).toBe(whole.test.accuracy);
    const file = path.join(ckpt.dir, 'ema.pth');
    const bytes = fs.readFileSync(file);
    bytes[bytes.length - 100] ^= 1;
    fs.writeFileSync(file, bytes);
    expect(() => readCheckpoint(ckpt.dir)).toThrow(/ema\.pth: checksum mismatch/);
    for (const r of [whole, rest]) {
      r.network.dispose();
      r.ema!.network.dispose();
    }
  });

  test('accumulate is refused with data parallelism, before any process joins', async () => {
    const saved = { RANK: process.env.RANK, WORLD_SIZE: process.env.WORLD_SIZE };
    Object.assign(process.env, { RANK: '0', WORLD_SIZE: '2' });
    try {
      await expect(train(options('parallel')).result).rejects.toThrow(
        'accumulate 2: gradient accumulation does not run data-parallel (2 processes)',
      );
    } finally {
      for (const [key, value] of Object.entries(saved)) {
        if (value === undefined) delete process.env[key];
        else process.env[key] = value;
      }
    }
  });

  test('options are checked: accumulate divides batchSize, ema.decay in [0, 1), mixup values', () => {
    expect(() => train(options('bad', { accumulate: 5 }))).toThrow('accumulate 5 must divide batchSize 32');
    expect(() => train(options('bad', { ema: { decay: 1 } }))).toThrow('ema.decay must be a number in [0, 1), got 1');
    expect(() => train(options('bad', { mixup: { prob: 2 } }))).toThrow('mixup.prob must be in [0, 1], got 2');
    expect(() => train(options('bad', { mixup: { cutmixAlpha: -1 } }))).toThrow('mixup.cutmixAlpha must be a number >= 0 (0: off), got -1');
  });
});
