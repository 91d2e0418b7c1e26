// The training loop on a small synthetic data set: exact resume, learning, the official weight-decay
// grouping, clipping refusal, the lr schedule.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import type { ImageDataset } from '../lib/data';
import { Random } from '../lib/reference/random';
import { parameterInfo } from '../lib/spec';
import { networkSpec } from '../lib/configs';
import { officialParamGroups } from '../lib/train/param-groups';
import { lrAt } from '../lib/train/schedule';
import { train, TRAIN_DEFAULTS } from '../lib';
import { checkConfig, type TrainConfig } from '../lib/train/config';
import { thrown } from './helpers';

/** 4 classes of 8x8 grey images: a bright quadrant per class, plus noise. */
function synthetic(count: number, seed: number): ImageDataset {
  const random = new Random(seed);
  const images = new Uint8Array(count * 64);
  const labels = new Int32Array(count);
  for (let n = 0; n < count; n++) {
    const label = n % 4;
    labels[n] = label;
    for (let y = 0; y < 8; y++) {
      for (let x = 0; x < 8; x++) {
        const quadrant = (y >= 4 ? 2 : 0) + (x >= 4 ? 1 : 0);
        images[n * 64 + y * 8 + x] = Math.min(255, (quadrant === label ? 150 : 40) + Math.floor(random.nextDouble() * 80));
      }
    }
  }
  return { name: `synthetic-${seed}`, images, labels, count, channels: 1, height: 8, width: 8, numClasses: 4 };
}

const data = { train: synthetic(2048, 1), test: synthetic(256, 2) };
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'repopt-train-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function config(outDir: string, extra: Partial<TrainConfig> = {}): TrainConfig {
  return {
    ...TRAIN_DEFAULTS,
    arch: 'RepOpt-VGG-XS',
    mode: 'vgg',
    data: { kind: 'fashion-mnist' },
    epochs: 16,
    batchSize: 16,
    lr: 0.4,
    warmupEpochs: 1,
    augment: { pad: 1, flip: false }, // no flip: it would swap the left and right quadrants' classes
    logEvery: 50,
    outDir: path.join(tmp, outDir),
    ...extra,
  };
}

describe('training loop', () => {
  test('2048 steps in one run == 1000 steps + resume + 1048 steps, bit for bit', async () => {
    const whole = await train(config('whole'), { data }).result;
    expect(whole.steps).toBe(2048);
    expect(whole.test.accuracy).toBeGreaterThan(0.9); // learnable task, chance is 0.25

    const first = await train(config('split', { stopAfterSteps: 1000 }), { data }).result;
    expect(first.steps).toBe(1000);
    const rest = await train(config('split', { resume: true }), { data }).result;
    expect(rest.steps).toBe(2048);
    const a = whole.network.stateTensors();
    const b = rest.network.stateTensors();
    for (const [name, t] of a)
      expect([name, Buffer.compare(Buffer.from(t.data.buffer), Buffer.from(b.get(name)!.data.buffer))]).toEqual([name, 0]);
    expect(rest.history.map((h) => h.testAccuracy)).toEqual(whole.history.map((h) => h.testAccuracy));
    const lines = fs
      .readFileSync(path.join(tmp, 'whole', 'metrics.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(lines.filter((l) => l.type === 'eval')).toHaveLength(16);
    expect(lines.filter((l) => l.type === 'train').every((l) => Number.isFinite(l.loss))).toBe(true);
  });
});

describe('quantization-aware training', () => {
  test('fake-quantized training learns, keeps its int8 ranges in checkpoints and resumes bit for bit', async () => {
    const qat = { quant: { calibBatches: 4 }, epochs: 2 };
    const whole = await train(config('qat-whole', qat), { data }).result;
    expect(whole.test.accuracy).toBeGreaterThan(0.9); // evaluated fake-quantized
    const ranges = whole.network.quantParams()!;
    expect(ranges.points.map((p) => p.name)).toEqual(['input', 'stage0', 'stage1.0', 'stage2.0', 'stage3.0', 'stage4.0', 'pool', 'logits']);
    await train(config('qat-split', { ...qat, stopAfterSteps: 100 }), { data }).result;
    const rest = await train(config('qat-split', { ...qat, resume: true }), { data }).result;
    const a = whole.network.stateTensors();
    const b = rest.network.stateTensors();
    for (const [name, t] of a)
      expect([name, Buffer.compare(Buffer.from(t.data.buffer), Buffer.from(b.get(name)!.data.buffer))]).toEqual([name, 0]);
    expect(rest.network.quantParams()!.points).toEqual(ranges.points);
  });

  test('QAT is for plain networks and needs calibration batches', () => {
    expect(thrown(() => checkConfig(config('q', { mode: 'repvgg', quant: { calibBatches: 2 } }))).message).toMatch(
      /fine-tunes plain networks \(target, vgg\), not repvgg/,
    );
    expect(thrown(() => checkConfig(config('q', { quant: { calibBatches: 0 } }))).message).toMatch(
      /^quant\.calibBatches must be a positive integer, got 0/,
    );
  });
});

describe('official weight-decay grouping', () => {
  test('decay on conv / linear weights and identity scales; none on BN, biases, branch scales', () => {
    const spec = networkSpec('RepOpt-VGG-XS', { mode: 'hs', numClasses: 10, inChannels: 1 });
    const [decay, none] = officialParamGroups(parameterInfo(spec), 4e-5);
    expect(decay.weightDecay).toBe(4e-5);
    expect(none.weightDecay).toBe(0);
    expect(decay.params).toContain('stage0.conv.weight');
    expect(decay.params).toContain('stage1.0.conv_1x1.weight');
    expect(decay.params).toContain('linear.weight');
    for (const k of ['stage0.bn.weight', 'stage0.bn.bias', 'linear.bias', 'stage0.scale_conv.weight', 'stage0.scale_1x1.weight'])
      expect(none.params).toContain(k);
    const identity = parameterInfo(spec)
      .filter((p) => p.role === 'scale_identity')
      .map((p) => p.name);
    for (const k of identity) expect(decay.params).toContain(k);
    expect(decay.params.length + none.params.length).toBe(parameterInfo(spec).length);
  });
});

describe('gradient clipping', () => {
  test('refused with the RepOptimizer unless forced; allowed for plain optimizers', () => {
    const base = config('clip', { mode: 'target', scales: 'x.json', clipNorm: 5 });
    expect(thrown(() => checkConfig(base)).message).toMatch(/gradient clipping breaks the RepOptimizer equivalence/);
    expect(() => checkConfig({ ...base, forceClip: true })).not.toThrow();
    expect(() => checkConfig({ ...base, mode: 'hs', scales: undefined })).not.toThrow();
    expect(thrown(() => checkConfig({ ...base, clipNorm: 0, scales: undefined })).message).toMatch(
      /^scales is needed for mode target \(RepOpt-VGG\)/,
    );
  });
});

describe('lr schedule', () => {
  // As timm's CosineLRScheduler in the official loop (test/fidelity.test.ts): the cosine runs over the raw
  // step (half-way at 55 of 110, not at 60), and iteration i runs with the scheduler's value for i - 1.
  test('linear scaling, linear warm-up, cosine per iteration', () => {
    const s = { baseLr: 0.1, batchSize: 128, totalSteps: 110, warmupSteps: 10 };
    expect(lrAt(0, s)).toBe(0);
    expect(lrAt(6, s)).toBeCloseTo(0.025, 12); // half-way up the warm-up to 0.1 * 128 / 256
    expect(lrAt(56, s)).toBeCloseTo(0.025, 12); // half-way down the cosine
    expect(lrAt(111, s)).toBeCloseTo(0, 12);
  });
});

describe('precision and layout options (CPU)', () => {
  test('channels-last gives the same training as NCHW; bf16 autocast still learns', async () => {
    // Small: bf16 is emulated (slow) on CPUs without bf16 instructions.
    const small = { train: synthetic(512, 3), test: synthetic(256, 4) };
    const short = { epochs: 3, logEvery: 32 };
    const nchw = await train(config('nchw', { ...short, channelsLast: false }), { data: small }).result;
    const cl = await train(config('cl', { ...short, channelsLast: true }), { data: small }).result;
    const a = nchw.network.stateDict();
    const b = cl.network.stateDict();
    let worst = 0;
    for (const [name, t] of a) {
      const other = b.get(name)!.data;
      const scale = Math.max(...Array.from(t.data, Math.abs), 1e-3);
      t.data.forEach((v, i) => {
        worst = Math.max(worst, Math.abs(v - other[i]) / scale);
      });
    }
    expect(worst).toBeLessThan(1e-3);
    const bf16 = await train(config('bf16', { ...short, autocast: 'bf16' }), { data: small }).result;
    expect(nchw.test.accuracy).toBeGreaterThan(0.8);
    expect(bf16.test.accuracy).toBeGreaterThan(0.8);
    expect(Math.abs(bf16.test.accuracy - nchw.test.accuracy)).toBeLessThan(0.1);
  });
});
