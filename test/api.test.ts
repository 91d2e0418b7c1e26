// The public training API: typed events in order, AbortSignal (stop after the step, checkpoint,
// exact resume), options checked before anything runs, the event loop free while steps run, and
// the normalisation kept in the checkpoint.
import { spawn, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import type { ImageDataset } from '../lib/data';
import { evaluate, HYPER_SEARCH_DEFAULTS, hyperSearch, train, TRAIN_DEFAULTS } from '../lib';
import type { EpochEvent, StepEvent, TrainOptions } from '../lib';
import { Random } from '../lib/reference/random';
import { checkpointName, readLatestCheckpoint } from '../lib/train/checkpoint';
import { channelStats } from '../lib/train/data';
import type { TrainCheckpointExtra } from '../lib/train/trainer';

function synthetic(count: number, seed: number): ImageDataset {
  // Four classes, one per bright quadrant, with noise: learnable by a tiny network in a few steps.
  const random = new Random(seed);
  const labels = Int32Array.from({ length: count }, (_, n) => n % 4);
  const images = new Uint8Array(count * 64);
  for (let n = 0; n < count; n++) {
    for (let i = 0; i < 64; i++) {
      const quadrant = (Math.floor(i / 8) >= 4 ? 2 : 0) + (i % 8 >= 4 ? 1 : 0);
      images[n * 64 + i] = Math.floor((quadrant === labels[n] ? 160 : 40) + random.nextDouble() * 60);
    }
  }
  return { name: `synthetic-${seed}`, images, labels, count, channels: 1, height: 8, width: 8, numClasses: 4 };
}

const data = { train: synthetic(512, 1), test: synthetic(128, 2) };
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'repopt-api-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

// The synthetic sets are passed in memory; `data` is what checkpoints record (unused here).
const options = (out: string, extra: Partial<TrainOptions> = {}): TrainOptions => ({
  arch: 'RepOpt-VGG-XS',
  mode: 'vgg',
  data: { kind: 'fashion-mnist' },
  epochs: 3,
  batchSize: 16,
  lr: 0.2,
  logEvery: 8,
  augment: { pad: 1, flip: false },
  threads: Number(process.env.REPOPT_TEST_THREADS ?? 2),
  outDir: path.join(tmp, out),
  ...extra,
});

describe('train(): events', () => {
  test('start, step every logEvery, epoch with eval, checkpoint, finished: in order, with values', async () => {
    const run = train(options('events'), { data });
    const seen: string[] = [];
    const steps: StepEvent[] = [];
    run.on('start', (e) => seen.push(`start ${e.step}->${e.stopAt} (${e.stepsPerEpoch}/epoch)`));
    run.on('step', (e) => {
      seen.push(`step ${e.step}`);
      steps.push(e);
    });
    run.on('epoch', (e) => seen.push(`epoch ${e.epoch} at ${e.step}`));
    run.on('checkpoint', (e) => seen.push(`checkpoint ${e.step} ${path.basename(e.dir)}`));
    let finished: unknown;
    run.on('finished', (r) => (finished = r));
    const r = await run.result;
    expect(finished).toBe(r);
    // 512 / 16 = 32 steps per epoch; logEvery 8.
    const end = (k: number) => 32 * (k + 1);
    const epoch = (k: number) => [
      ...[8, 16, 24, 32].map((s) => `step ${s + 32 * k}`),
      `epoch ${k + 1} at ${end(k)}`,
      `checkpoint ${end(k)} ${checkpointName(end(k))}`,
    ];
    expect(seen).toEqual(['start 0->96 (32/epoch)', ...epoch(0), ...epoch(1), ...epoch(2)]);
    expect(r.status).toBe('completed');
    expect(r.steps).toBe(96);
    expect(r.history.map((h) => h.epoch)).toEqual([1, 2, 3]);
    expect(r.history[2].testAccuracy).toBe(r.test.accuracy);
    expect(r.test.accuracy).toBeGreaterThan(0.9); // chance is 0.25
    for (const s of steps) {
      expect(Number.isFinite(s.loss) && s.loss > 0).toBe(true);
      expect(s.accuracy).toBeGreaterThanOrEqual(0);
      expect(s.accuracy).toBeLessThanOrEqual(1);
      expect(s.imagesPerSecond).toBeGreaterThan(0);
      expect(s.skipped).toBe(0);
    }
    r.network.dispose();
  });

  test('options are checked when the run is made, before anything is written', () => {
    expect(() => train(options('bad', { epochs: 0 }))).toThrow(/epochs must be a positive integer, got 0/);
    expect(() => train(options('bad', { mode: 'target' }))).toThrow(/^scales is needed for mode target \(RepOpt-VGG\)/);
    expect(() => train(options('bad', { logEvery: 1.5 }))).toThrow(/logEvery must be a positive integer, got 1.5/);
    expect(() => train({ outDir: '' })).toThrow(/outDir must name the run folder/);
    expect(() => train(options('bad', { labelSmoothing: 2 }))).toThrow(/^labelSmoothing must be in \[0, 1\], got 2/);
    expect(() => train(options('bad', { arch: 'VGG-16' }))).toThrow(/arch must be one of RepOpt-VGG-B1, .*; got VGG-16/);
    const { data: _, ...withoutData } = options('bad');
    expect(() => train(withoutData, { data })).toThrow(/data given in memory needs options.data saying what it is/);
    expect(fs.existsSync(path.join(tmp, 'bad'))).toBe(false);
  });

  test('defaults come from TRAIN_DEFAULTS', async () => {
    const given = { arch: 'RepOpt-VGG-XS', mode: 'vgg', epochs: 1, batchSize: 64, outDir: path.join(tmp, 'defaults') } as const;
    const r = await train({ ...given, data: TRAIN_DEFAULTS.data }, { data }).result;
    expect(r.config).toEqual({ ...TRAIN_DEFAULTS, ...given });
    r.network.dispose();
  });
});

describe('train(): AbortSignal', () => {
  test('abort on a step event: stops after that step, writes a checkpoint, and the resumed run ends bit-identical', async () => {
    const whole = await train(options('whole'), { data }).result;

    const controller = new AbortController();
    const first = train(options('split'), { data, signal: controller.signal });
    const checkpoints: number[] = [];
    first.on('checkpoint', (e) => checkpoints.push(e.step));
    first.on('step', (e) => {
      if (e.step === 40) controller.abort();
    });
    const stopped = await first.result;
    expect(stopped.status).toBe('aborted');
    expect(stopped.steps).toBe(40);
    expect(checkpoints).toEqual([32, 40]);
    expect(path.basename(stopped.checkpoint)).toBe('ckpt-000000040');
    stopped.network.dispose();

    const rest = await train(options('split', { resume: true }), { data }).result;
    expect(rest.status).toBe('completed');
    expect(rest.steps).toBe(96);
    const a = whole.network.stateDict();
    const b = rest.network.stateDict();
    for (const [name, t] of a) expect(Array.from(b.get(name)!.data)).toEqual(Array.from(t.data));
    expect(rest.test).toEqual(whole.test);
    // The interrupted epoch's record is whole too: its first 8 steps came from the checkpoint.
    const metrics = (h: EpochEvent) => [h.epoch, h.step, h.trainLoss, h.trainAccuracy, h.testLoss, h.testAccuracy];
    expect(rest.history.map(metrics)).toEqual(whole.history.map(metrics));
    whole.network.dispose();
    rest.network.dispose();
  });

  test('abort from a timer while a step runs: the event loop is free during training, and the run stops at once', async () => {
    const controller = new AbortController();
    const run = train(options('timer', { epochs: 50 }), { data, signal: controller.signal });
    let ticks = 0;
    const interval = setInterval(() => ticks++, 2);
    let started = 0;
    run.on('start', () => {
      started = Date.now();
      setTimeout(() => controller.abort(), 300);
    });
    const r = await run.result;
    clearInterval(interval);
    const elapsed = Date.now() - started;
    expect(r.status).toBe('aborted');
    expect(r.steps).toBeGreaterThan(0);
    expect(r.steps).toBeLessThan(50 * 32);
    expect(fs.existsSync(r.checkpoint)).toBe(true);
    // A blocked event loop would give a handful of ticks; a free one most 2 ms slots.
    expect(ticks).toBeGreaterThan(elapsed / 2 / 4);
    r.network.dispose();
  });

  test('an already aborted signal: no step runs, the result says aborted', async () => {
    const r = await train(options('pre-aborted'), { data, signal: AbortSignal.abort() }).result;
    expect(r.status).toBe('aborted');
    expect(r.steps).toBe(0);
    r.network.dispose();
  });
});

describe('hyperSearch()', () => {
  test('an aborted search says its scales are unfinished', async () => {
    const controller = new AbortController();
    const run = hyperSearch(options('hs'), { data, signal: controller.signal });
    run.on('step', (e) => {
      if (e.step === 8) controller.abort();
    });
    const r = await run.result;
    expect(r.train.status).toBe('aborted');
    expect(r.train.config.clipNorm).toBe(HYPER_SEARCH_DEFAULTS.clipNorm);
    expect(r.warnings[0]).toBe('the search was aborted after 8 steps: these scales come from an unfinished search (resume it to finish)');
    expect(fs.existsSync(r.files.json)).toBe(true);
    r.train.network.dispose();
  });
});

describe('checkpoints keep the normalisation', () => {
  test('the training set statistics are in the checkpoint, and evaluate() matches the run’s own test metrics', async () => {
    const out = path.join(tmp, 'norm');
    const r = await train(options('norm', { epochs: 1, data: { kind: 'fashion-mnist', trainSubset: 600, testSubset: 200 }, batchSize: 32 }))
      .result;
    const ckpt = readLatestCheckpoint<unknown, TrainCheckpointExtra>(path.join(out, 'checkpoints'))!;
    expect(ckpt.meta.extra?.normalization).toBeDefined();
    expect(ckpt.meta.extra?.normalization?.mean[0]).toBeGreaterThan(0.1);
    const m = await evaluate({ checkpoint: out, threads: Number(process.env.REPOPT_TEST_THREADS ?? 2) });
    expect(m.checkpoint).toBe(ckpt.dir);
    expect(m.count).toBe(r.test.count);
    expect(m.accuracy).toBe(r.test.accuracy);
    expect(m.loss).toBeCloseTo(r.test.loss, 6);
    r.network.dispose();
  });

  test('the kept statistics equal channelStats of the training set', async () => {
    const r = await train(options('stats', { epochs: 1 }), { data }).result;
    const ckpt = readLatestCheckpoint<unknown, TrainCheckpointExtra>(path.join(tmp, 'stats', 'checkpoints'))!;
    expect(ckpt.meta.extra?.normalization).toEqual(channelStats(data.train));
    r.network.dispose();
  });
});

describe('repopt train: Ctrl-C', () => {
  test('stops after the step in flight with a checkpoint, exit status 130; --resume finishes the run', async () => {
    const cli = path.join(__dirname, '..', 'dist', 'cli.js');
    const out = path.join(tmp, 'ctrl-c');
    const args = ['train', '--mode', 'vgg', '--arch', 'RepOpt-VGG-XS', '--train-subset', '640', '--test-subset', '100'];
    args.push('--batch-size', '64', '--epochs', '100', '--log-every', '5', '--out', out, '--threads', '1');
    const child = spawn(process.execPath, [cli, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
    // Interrupt once the first epoch's checkpoint is there.
    while (!fs.existsSync(path.join(out, 'checkpoints', 'latest'))) await new Promise((resolve) => setTimeout(resolve, 50));
    child.kill('SIGINT');
    expect(await exited).toBe(130);
    const [, steps, dir] = /repopt: interrupted after (\d+) steps; checkpoint (\S+); continue with --resume/.exec(stderr)!;
    expect(Number(steps)).toBeGreaterThanOrEqual(10);
    expect(Number(steps)).toBeLessThan(1000);
    expect(path.basename(dir!)).toBe(checkpointName(Number(steps)));
    const resumed = spawnSync(process.execPath, [cli, ...args, '--resume'], { encoding: 'utf8' });
    expect(resumed.status).toBe(0);
    expect(resumed.stdout).toMatch(/after 1000 steps/);
  }, 300_000);
});
