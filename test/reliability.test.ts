// Failure behaviour: divergence stops with the step and the last good checkpoint named (or skips
// steps when asked), damaged checkpoints are detected and passed over, kill -9 at random moments never
// leaves an unusable latest checkpoint, and memory stays flat over long runs.
import { spawn, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import type { ImageDataset } from '../lib/data';
import { Random } from '../lib/reference/random';
import { readLatestCheckpoint } from '../lib/train/checkpoint';
import { train, TRAIN_DEFAULTS } from '../lib';
import type { TrainConfig } from '../lib/train/config';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'repopt-reliability-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function synthetic(count: number, seed: number): ImageDataset {
  const random = new Random(seed);
  const labels = Int32Array.from({ length: count }, (_, n) => n % 4);
  const images = Uint8Array.from(
    { length: count * 64 },
    (_, i) => (labels[Math.floor(i / 64)] * 60 + Math.floor(random.nextDouble() * 40)) % 256,
  );
  return { name: 'synthetic', images, labels, count, channels: 1, height: 8, width: 8, numClasses: 4 };
}
const data = { train: synthetic(256, 1), test: synthetic(64, 2) };

const config = (out: string, extra: Partial<TrainConfig> = {}): TrainConfig => ({
  ...TRAIN_DEFAULTS,
  arch: 'RepOpt-VGG-XS',
  mode: 'vgg',
  data: { kind: 'fashion-mnist' },
  epochs: 4,
  batchSize: 16,
  lr: 0.2,
  logEvery: 4,
  outDir: path.join(tmp, out),
  ...extra,
});

describe('numerical faults', () => {
  test('a diverging run stops naming the steps and the last good checkpoint, which stays intact and resumes', async () => {
    await train(config('diverge', { stopAfterSteps: 32 }), { data }).result;
    await expect(train(config('diverge', { resume: true, allowConfigChange: true, lr: 1e12 }), { data }).result).rejects.toThrow(
      /^lr 1000000000000: training diverged, the loss read at step \d+ is (NaN|Infinity); continue from the last good checkpoint .*ckpt-000000032 with resume, allowConfigChange and a lower lr, or pass skipNonFinite/,
    );
    const latest = readLatestCheckpoint<TrainConfig>(path.join(tmp, 'diverge', 'checkpoints'))!;
    expect(latest.meta.step).toBe(32);
    const done = await train(config('diverge', { resume: true }), { data }).result;
    expect(done.steps).toBe(64);
    expect(done.test.accuracy).toBeGreaterThan(0.5);
  });

  test('with skipNonFinite the bad steps are skipped and counted', async () => {
    await train(config('skip', { stopAfterSteps: 16 }), { data }).result;
    const r = await train(config('skip', { resume: true, allowConfigChange: true, lr: 1e12, skipNonFinite: true }), { data }).result;
    expect(r.steps).toBe(64);
    expect(r.skippedSteps).toBeGreaterThan(0);
    const lines = fs
      .readFileSync(path.join(tmp, 'skip', 'metrics.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(lines.some((l) => l.type === 'train' && l.skipped > 0)).toBe(true);
  });
});

describe('damaged checkpoints', () => {
  test('a bit flip or truncation is detected by checksum and the previous checkpoint is used', async () => {
    await train(config('damage', { epochs: 3 }), { data }).result;
    const root = path.join(tmp, 'damage', 'checkpoints');
    const latest = readLatestCheckpoint<TrainConfig>(root)!;
    expect(latest.meta.step).toBe(48);
    const model = path.join(latest.dir, 'model.pth');
    const bytes = fs.readFileSync(model);
    bytes[bytes.length - 100] ^= 0x10;
    fs.writeFileSync(model, bytes);
    expect(readLatestCheckpoint<TrainConfig>(root)!.meta.step).toBe(32);
    fs.truncateSync(path.join(root, 'ckpt-000000032', 'optimizer.bin'), 10);
    expect(() => readLatestCheckpoint(root)).toThrow(
      /no complete checkpoint under .*\n.*model\.pth: checksum mismatch.*\n.*optimizer\.bin: checksum mismatch/,
    );
    expect(fs.statSync(root).mode & 0o777).toBe(0o700);
  });
});

describe('kill -9 at random moments', () => {
  test(
    'the newest complete checkpoint always loads and the run resumes to the end',
    async () => {
      const cli = path.join(__dirname, '..', 'dist', 'cli.js');
      const out = path.join(tmp, 'killed');
      // REPOPT_KILL_ROUNDS: more rounds for a longer soak (each ~2-4 s); every kill lands on a random
      // moment: start-up, a step, a checkpoint write (one per 4-step epoch) or the lock's take-over. The
      // run is long enough that no round finds it done.
      const rounds = Number(process.env.REPOPT_KILL_ROUNDS ?? 4);
      const epochs = Math.max(250, rounds * 20);
      const args = [
        'train',
        '--mode',
        'vgg',
        '--arch',
        'RepOpt-VGG-XS',
        '--train-subset',
        '256',
        '--test-subset',
        '100',
        '--batch-size',
        '64',
        '--epochs',
        String(epochs),
        '--log-every',
        '5',
        '--out',
        out,
        '--threads',
        '1',
      ];
      const random = new Random(Number(process.env.REPOPT_KILL_SEED ?? 99));
      let checked = 0;
      let lastStep = -1;
      // Kills that landed in a checkpoint write (it left its temporary folder behind).
      let inWrite = 0;
      for (let round = 0; round < rounds; round++) {
        const child = spawn(process.execPath, [cli, ...args, ...(round > 0 ? ['--resume'] : [])], { stdio: 'ignore' });
        const exited = new Promise((resolve) => child.once('exit', resolve));
        await new Promise((resolve) => setTimeout(resolve, 1200 + random.nextDouble() * 1500));
        child.kill('SIGKILL');
        await exited;
        const root = path.join(out, 'checkpoints');
        if (!fs.existsSync(root)) continue;
        if (fs.readdirSync(root).some((f) => f.includes('.tmp'))) inWrite++;
        // No damaged checkpoint passed over: the newest written one is complete, and progress never goes back.
        const damaged: string[] = [];
        const latest = readLatestCheckpoint(root, { onDamaged: (d) => damaged.push(`${d.dir}: ${d.reason}`) });
        expect(damaged).toEqual([]);
        if (latest) {
          expect(latest.meta.step).toBeGreaterThanOrEqual(lastStep);
          lastStep = latest.meta.step;
          checked++;
        }
      }
      if (process.env.REPOPT_KILL_ROUNDS)
        process.stdout.write(`kill -9: ${rounds} kills (${inWrite} in a checkpoint write), ${checked} checks, last step ${lastStep}\n`);
      const finished = spawnSync(process.execPath, [cli, ...args, '--resume'], { encoding: 'utf8' });
      expect(finished.status).toBe(0);
      expect(finished.stdout).toMatch(new RegExp(`after ${epochs * 4} steps`));
    },
    120000 + 5000 * Number(process.env.REPOPT_KILL_ROUNDS ?? 0),
  );
});

describe('memory', () => {
  test('2 x 10,000 tensor create/dispose cycles and GC finalizers: no leak, no double free', () => {
    // Finalizers run after a GC, once the event loop turns: collect, yield, repeat.
    const script = `
      const settle = async () => { for (let k = 0; k < 5; k++) { global.gc(); await new Promise((r) => setImmediate(r)); } };
      (async () => {
      const { native } = require(${JSON.stringify(path.join(__dirname, '..', 'dist', 'native.js'))});
      const b = native();
      const before = b.memory().tensorBytes;
      const cycle = (k) => {
        const t = b.Tensor.zeros([256]);
        if (k % 3 === 0) t.dispose();
        if (k % 5 === 0) { t.dispose(); t.dispose(); }
      };
      // The first 10,000 cycles warm the heaps up; the next 10,000 must not grow them.
      for (let k = 0; k < 10000; k++) cycle(k);
      await settle();
      const rss1 = process.memoryUsage().rss;
      for (let k = 0; k < 10000; k++) cycle(k);
      await settle();
      const rss2 = process.memoryUsage().rss;
      console.log(JSON.stringify({ before, after: b.memory().tensorBytes, rss1, rss2 }));
      })();`;
    const r = spawnSync(process.execPath, ['--expose-gc', '-e', script], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    const m = JSON.parse(r.stdout);
    // Finalizers released what was not disposed; every byte reported once.
    expect(m.after).toBe(m.before);
    expect(m.rss2 / m.rss1).toBeLessThan(1.05);
  });

  test('10,000 training steps: resident memory flat', () => {
    const script = `
      const { nativeBackend, networkSpec, setNumThreads } = require(${JSON.stringify(path.join(__dirname, '..', 'dist', 'index.js'))});
      const { native } = require(${JSON.stringify(path.join(__dirname, '..', 'dist', 'native.js'))});
      setNumThreads(1);
      const net = nativeBackend.createNetwork(networkSpec('RepOpt-VGG-XS', { mode: 'target', numClasses: 4, inChannels: 1 }));
      const opt = net.createOptimizer({ type: 'sgd', lr: 0.05, momentum: 0.9 });
      const ds = new (native().Dataset)(new Uint8Array(64 * 64).map((_, i) => i % 251), [64, 1, 8, 8], Int32Array.from({ length: 64 }, (_, i) => i % 4), { mean: [0.5], std: [0.25] });
      const perm = ds.permutation(0, 0);
      const run = (steps) => { for (let k = 0; k < steps; k += 8) { net.trainBatchSync(opt, ds, perm, 0, 8, { pad: 1, flip: true }, 8); net.takeTrainMetrics(); } };
      run(1000);
      global.gc();
      const rss1 = process.memoryUsage().rss;
      run(9000);
      global.gc();
      console.log(JSON.stringify({ rss1, rss2: process.memoryUsage().rss }));`;
    const r = spawnSync(process.execPath, ['--expose-gc', '-e', script], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    const m = JSON.parse(r.stdout);
    expect(m.rss2 / m.rss1).toBeLessThan(1.05);
  }, 120000);
});
