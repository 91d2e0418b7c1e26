// The streaming image-folder loader end to end: a Fashion-MNIST folder export (PNG files written here)
// trained through the stream reaches the in-memory loader's accuracy; unreadable files are skipped,
// named and counted; the batch order and contents are a function of (seed, epoch); a run resumed
// mid-epoch ends bit-identical to an uninterrupted one.
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import sharp from 'sharp';
import { train } from '../lib/api';
import { loadFashionMnist, loadImageFolder } from '../lib/data';
import { networkSpec } from '../lib/configs';
import { ImageFolderStream, type StreamBatch } from '../lib/data/image-stream';
import { NativeBackendNetwork } from '../lib/native-backend';
import { readLatestCheckpoint } from '../lib/train/checkpoint';
import { resolveTrainConfig, type TrainConfig } from '../lib/train/config';
import { channelStats } from '../lib/train/data';
import { useTestThreads } from './helpers';

let root: string;
/** Fashion-MNIST as a folder: train/<class>/*.png (1,500 images) and val/<class>/*.png (500). */
let fmnist: string;

async function writePng(file: string, gray: Uint8Array, width: number, height: number): Promise<void> {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  await sharp(Buffer.from(gray), { raw: { width, height, channels: 1 } })
    .png()
    .toFile(file);
}

/** `count` images of a Fashion-MNIST split, every class-th one, as PNG files under dir/<class>/. */
async function exportSplit(split: 'train' | 'test', dir: string, count: number): Promise<void> {
  const ds = loadFashionMnist(split);
  const plane = 28 * 28;
  const step = Math.floor(ds.count / count);
  const writes: Promise<void>[] = [];
  for (let k = 0; k < count; k++) {
    const i = k * step;
    const name = String(ds.labels[i]).padStart(2, '0');
    writes.push(
      writePng(
        path.join(dir, `class-${name}`, `${String(i).padStart(5, '0')}.png`),
        ds.images.subarray(i * plane, (i + 1) * plane),
        28,
        28,
      ),
    );
    if (writes.length >= 64) await Promise.all(writes.splice(0));
  }
  await Promise.all(writes);
}

async function collect(gen: AsyncGenerator<StreamBatch>): Promise<StreamBatch[]> {
  const out: StreamBatch[] = [];
  for await (const b of gen) out.push({ ...b, images: b.images.slice() });
  return out;
}

beforeAll(async () => {
  useTestThreads();
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'repopt-stream-'));
  fmnist = path.join(root, 'fmnist');
  await exportSplit('train', path.join(fmnist, 'train'), 1500);
  await exportSplit('test', path.join(fmnist, 'val'), 500);
}, 120_000);

afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

describe('training from a streamed folder', () => {
  test('a Fashion-MNIST PNG folder streamed reaches the in-memory loader accuracy within 0.5 point', async () => {
    const memoryData = await loadImageFolder(path.join(fmnist, 'train'), { height: 28, width: 28 });
    const normalization = channelStats(memoryData);
    const common = { arch: 'RepOpt-VGG-XS', mode: 'vgg', epochs: 3, batchSize: 50, lr: 0.2, seed: 3, threads: 2, logEvery: 10 } as const;
    // In memory: decoded once, no augmentation.
    const memory = await train({
      ...common,
      data: { kind: 'folder', dir: fmnist, size: 28, loader: 'memory' },
      augment: { pad: 0, flip: false },
      outDir: path.join(root, 'run-memory'),
    }).result;
    // Streamed: decoded per batch; a crop of the whole image (scale and ratio 1) at its own size is the image.
    const streamed = await train({
      ...common,
      data: { kind: 'folder', dir: fmnist, size: 28, cropFraction: 1, normalization, threads: 2 },
      augment: { flip: false, cropScale: [1, 1], cropRatio: [1, 1] },
      outDir: path.join(root, 'run-stream'),
    }).result;
    memory.network.dispose();
    streamed.network.dispose();
    expect(memory.test.count).toBe(500);
    expect(streamed.test.count).toBe(500);
    expect(streamed.steps).toBe(memory.steps);
    // A budget that learns: chance is 10 %.
    process.stdout.write(`Fashion-MNIST PNG folder, 3 epochs: in memory ${memory.test.accuracy}, streamed ${streamed.test.accuracy}\n`);
    expect(memory.test.accuracy).toBeGreaterThan(0.6);
    expect(Math.abs(streamed.test.accuracy - memory.test.accuracy)).toBeLessThanOrEqual(0.005);
    expect(streamed.history.map((h) => h.skippedImages)).toEqual([0, 0, 0]);
  }, 300_000);

  test('RandomResizedCrop and flip from the stream train too (the default streamed transform)', async () => {
    const r = await train({
      arch: 'RepOpt-VGG-XS',
      mode: 'vgg',
      epochs: 2,
      batchSize: 50,
      lr: 0.2,
      seed: 1,
      threads: 2,
      data: { kind: 'folder', dir: fmnist, size: 28, cropFraction: 1, threads: 2 },
      augment: { cropScale: [0.5, 1] },
      outDir: path.join(root, 'run-rrc'),
    }).result;
    r.network.dispose();
    expect(r.config.augment).toMatchObject({ pad: 0, resizedCrop: true, flip: true });
    // Well above chance (10 %) after 60 steps of heavily cropped images.
    expect(r.test.accuracy).toBeGreaterThan(0.3);
  }, 300_000);

  test('a run stopped mid-epoch and resumed ends bit-identical to an uninterrupted one', async () => {
    const options = {
      arch: 'RepOpt-VGG-XS',
      mode: 'vgg',
      epochs: 2,
      batchSize: 100,
      lr: 0.2,
      seed: 5,
      threads: 2,
      data: { kind: 'folder', dir: fmnist, size: 28, cropFraction: 1, threads: 2, trainSubset: 600, testSubset: 200 },
    } as const;
    const whole = await train({ ...options, outDir: path.join(root, 'whole') }).result;
    const first = await train({ ...options, stopAfterSteps: 8, outDir: path.join(root, 'split') }).result;
    first.network.dispose();
    expect(first.status).toBe('stopped');
    const rest = await train({ ...options, resume: true, outDir: path.join(root, 'split') }).result;
    const a = whole.network.stateTensors();
    const b = rest.network.stateTensors();
    expect([...b.keys()]).toEqual([...a.keys()]);
    const bytes = (d: ArrayBufferView) => Buffer.from(d.buffer, d.byteOffset, d.byteLength);
    for (const [name, t] of a) expect(Buffer.compare(bytes(b.get(name)!.data), bytes(t.data))).toBe(0);
    expect(rest.test.accuracy).toBe(whole.test.accuracy);
    whole.network.dispose();
    rest.network.dispose();
  }, 300_000);
});

describe('data parallel from a stream', () => {
  test('2 processes x 25 streamed == 1 process x 50 (frozen BN, whole-image crops, 6 steps, 1e-5)', () => {
    const cli = path.join(__dirname, '..', 'dist', 'cli.js');
    const args = ['train', '--mode', 'vgg', '--arch', 'RepOpt-VGG-XS', '--dataset', 'folder', '--data-dir', fmnist, '--image-size', '28']
      .concat([
        '--crop-scale',
        '1,1',
        '--crop-ratio',
        '1,1',
        '--no-flip',
        '--crop-fraction',
        '1',
        '--train-subset',
        '600',
        '--test-subset',
        '100',
      ])
      .concat([
        '--batch-size',
        '50',
        '--epochs',
        '1',
        '--stop-after-steps',
        '6',
        '--lr',
        '0.4',
        '--batch-norm',
        'frozen',
        '--threads',
        '1',
      ]);
    const env: NodeJS.ProcessEnv = { ...process.env, OMP_NUM_THREADS: '1' };
    for (const k of ['RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'LOCAL_WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT', 'REPOPT_RENDEZVOUS_FILE'])
      delete env[k];
    const runs = [
      [...args, '--loader-threads', '2', '--out', path.join(root, 'dp-one')],
      [...args, '--nproc', '2', '--out', path.join(root, 'dp-two')],
    ].map((a) => spawnSync(process.execPath, [cli, ...a], { encoding: 'utf8', env, timeout: 180_000 }));
    for (const r of runs) expect([r.status, r.stderr]).toEqual([0, expect.any(String)]);
    const [one, two] = ['dp-one', 'dp-two'].map((d) => readLatestCheckpoint(path.join(root, d, 'checkpoints'))!);
    expect(two.meta.step).toBe(6);
    const maxRelDiff = (a: typeof one.model, b: typeof one.model) => {
      let worst = 0;
      for (const [key, t] of a) {
        const u = b.get(key)!;
        for (let i = 0; i < t.data.length; i++) {
          const x = Number(t.data[i]);
          worst = Math.max(worst, Math.abs(x - Number(u.data[i])) / Math.max(1, Math.abs(x)));
        }
      }
      return worst;
    };
    expect(maxRelDiff(one.model, two.model)).toBeLessThan(1e-5);
    // The weights moved from their initialisation (seed 0): the comparison is not of two untouched networks.
    const init = new NativeBackendNetwork(networkSpec('RepOpt-VGG-XS', { mode: 'target', numClasses: 10, inChannels: 3 }), 'float32', 0);
    expect(maxRelDiff(init.stateTensors(), one.model)).toBeGreaterThan(1e-2);
    init.dispose();
  }, 240_000);
});

describe('the stream itself', () => {
  test('batches are a function of (seed, epoch): the same with other threads, prefetch and a later start', async () => {
    const a = ImageFolderStream.open(path.join(fmnist, 'train'), { size: 24, threads: 1, prefetch: 1 });
    const b = ImageFolderStream.open(path.join(fmnist, 'train'), { size: 24, threads: 2, prefetch: 4 });
    try {
      const order = Array.from({ length: 300 }, (_, i) => (i * 7) % a.count);
      const one = await collect(a.batches({ epoch: 2, seed: 9, batchSize: 64, transform: 'train', order }));
      const two = await collect(b.batches({ epoch: 2, seed: 9, batchSize: 64, transform: 'train', order }));
      const later = await collect(b.batches({ epoch: 2, seed: 9, batchSize: 64, transform: 'train', order, startBatch: 3 }));
      const otherEpoch = await collect(b.batches({ epoch: 3, seed: 9, batchSize: 64, transform: 'train', order }));
      expect(one.map((x) => x.count)).toEqual([64, 64, 64, 64, 44]);
      for (let k = 0; k < one.length; k++) {
        expect(Buffer.compare(Buffer.from(two[k]!.images), Buffer.from(one[k]!.images))).toBe(0);
        expect([...two[k]!.labels]).toEqual([...one[k]!.labels]);
      }
      expect(later.length).toBe(2);
      expect(Buffer.compare(Buffer.from(later[0]!.images), Buffer.from(one[3]!.images))).toBe(0);
      // Another epoch draws other crops of the same images.
      expect([...otherEpoch[0]!.indices]).toEqual([...one[0]!.indices]);
      expect(Buffer.compare(Buffer.from(otherEpoch[0]!.images), Buffer.from(one[0]!.images))).not.toBe(0);
      // Labels follow the class folders.
      for (const batch of one) for (let k = 0; k < batch.count; k++) expect(batch.labels[k]).toBe(a.labels[batch.indices[k]!]);
    } finally {
      a.close();
      b.close();
    }
  });

  test('corrupt, truncated, zero-byte and non-image files are skipped and named; CMYK and grayscale JPEGs load as RGB', async () => {
    const dir = path.join(root, 'mixed');
    const photo = (w: number, h: number) =>
      sharp({ create: { width: w, height: h, channels: 3, background: { r: 200, g: 120, b: 40 } } }).composite([
        { input: { create: { width: Math.floor(w / 2), height: h, channels: 3, background: { r: 20, g: 60, b: 220 } } }, left: 0, top: 0 },
      ]);
    const good = await photo(120, 90).jpeg({ quality: 92 }).toBuffer();
    fs.mkdirSync(path.join(dir, 'a'), { recursive: true });
    fs.mkdirSync(path.join(dir, 'b'), { recursive: true });
    for (let k = 0; k < 5; k++) fs.writeFileSync(path.join(dir, 'a', `good-${k}.jpg`), good);
    fs.writeFileSync(path.join(dir, 'a', 'truncated.jpg'), good.subarray(0, Math.floor(good.length / 2)));
    fs.writeFileSync(path.join(dir, 'a', 'zero.jpg'), Buffer.alloc(0));
    fs.writeFileSync(path.join(dir, 'b', 'corrupt.jpg'), Buffer.from(Array.from({ length: 4000 }, (_, i) => (i * 131 + 7) % 256)));
    fs.writeFileSync(path.join(dir, 'b', 'notes.txt'), 'not an image');
    await photo(100, 80)
      .toColourspace('cmyk')
      .jpeg({ quality: 95 })
      .toFile(path.join(dir, 'b', 'cmyk.jpg'));
    const grayPixels = Buffer.from(Array.from({ length: 100 * 80 }, (_, i) => (i % 100) * 2));
    await sharp(grayPixels, { raw: { width: 100, height: 80, channels: 1 } })
      .toColourspace('b-w')
      .jpeg({ quality: 95 })
      .toFile(path.join(dir, 'b', 'gray.jpg'));
    await photo(100, 80)
      .webp()
      .toFile(path.join(dir, 'b', 'other.webp'));

    const stream = ImageFolderStream.open(dir, { size: 32, threads: 2 });
    try {
      const batches = await collect(stream.batches({ epoch: 0, seed: 0, batchSize: 8, transform: 'eval' }));
      const skipped = batches.flatMap((b) => b.skipped);
      expect(skipped.map((s) => path.basename(s.file)).sort()).toEqual(['corrupt.jpg', 'notes.txt', 'truncated.jpg', 'zero.jpg']);
      const message = (name: string) => skipped.find((s) => path.basename(s.file) === name)!.message;
      expect(message('zero.jpg')).toMatch(/^a\/zero\.jpg: .*(empty|zero)/i);
      expect(message('truncated.jpg')).toMatch(/^a\/truncated\.jpg: .*(truncated|premature|end of)/i);
      expect(message('corrupt.jpg')).toMatch(/^b\/corrupt\.jpg: /);
      expect(batches.reduce((n, b) => n + b.count, 0)).toBe(stream.count - 4);
      // The CMYK and grayscale images came out as RGB: the gray one with R = G = B, the CMYK one coloured.
      const all = batches.flatMap((b) =>
        Array.from(b.indices, (index, k) => ({ index, image: b.images.subarray(k * 3 * 32 * 32, (k + 1) * 3 * 32 * 32) })),
      );
      const imageOf = (name: string) => all.find((x) => path.basename(stream.files[x.index]!) === name)!.image;
      const plane = 32 * 32;
      const gray = imageOf('gray.jpg');
      for (let p = 0; p < plane; p += 37) {
        expect(gray[p]).toBe(gray[plane + p]);
        expect(gray[p]).toBe(gray[2 * plane + p]);
      }
      const cmyk = imageOf('cmyk.jpg');
      const rgbAt = (image: Uint8Array, p: number) => [image[p]!, image[plane + p]!, image[2 * plane + p]!];
      // Left half blue, right half orange, as drawn (within the CMYK round trip).
      const left = rgbAt(cmyk, 16 * 32 + 4);
      const right = rgbAt(cmyk, 16 * 32 + 28);
      expect(left[2]!).toBeGreaterThan(left[0]! + 100);
      expect(right[0]!).toBeGreaterThan(right[2]! + 100);
      expect(all.some((x) => path.basename(stream.files[x.index]!) === 'other.webp')).toBe(true);
    } finally {
      stream.close();
    }

    // Through training: each bad file is named once in a warning and counted in the epoch record.
    const data = path.join(root, 'mixed-run');
    fs.cpSync(dir, path.join(data, 'train'), { recursive: true });
    fs.cpSync(dir, path.join(data, 'val'), { recursive: true });
    const run = train({
      arch: 'RepOpt-VGG-XS',
      mode: 'vgg',
      epochs: 2,
      batchSize: 4,
      threads: 2,
      data: { kind: 'folder', dir: data, size: 32, normalization: 'imagenet' },
      outDir: path.join(root, 'run-mixed'),
    });
    const warnings: string[] = [];
    run.on('warning', (w) => warnings.push(w.message));
    const r = await run.result;
    r.network.dispose();
    const named = warnings.filter((w) => w.startsWith('skipped'));
    for (const name of ['corrupt.jpg', 'notes.txt', 'truncated.jpg', 'zero.jpg']) {
      // Once in train/ and once in val/ over both epochs (named by the path in the folder, first).
      const reports = named
        .join('; ')
        .split('; ')
        .filter((m) =>
          m
            .replace(/^skipped \d+ unreadable image\(s\): /, '')
            .startsWith(`${name === 'corrupt.jpg' || name === 'notes.txt' ? 'b' : 'a'}/${name}: `),
        );
      expect(reports.length).toBe(2);
    }
    // Each epoch reads all 12 training images (3 steps of 4) and the 12 in val/: 4 bad ones in each.
    expect(r.history.map((h) => h.skippedImages)).toEqual([8, 8]);
    const metrics = fs.readFileSync(path.join(root, 'run-mixed', 'metrics.jsonl'), 'utf8');
    expect(metrics).toContain('"skippedImages"');
  }, 120_000);

  test('a file that became a FIFO after the listing is skipped, not waited on', async () => {
    const dir = path.join(root, 'fifo');
    fs.mkdirSync(path.join(dir, 'a'), { recursive: true });
    const png = await sharp({ create: { width: 8, height: 8, channels: 3, background: 'red' } })
      .png()
      .toBuffer();
    for (const name of ['x.png', 'y.png']) fs.writeFileSync(path.join(dir, 'a', name), png);
    const stream = ImageFolderStream.open(dir, { size: 8, threads: 1 });
    try {
      fs.rmSync(path.join(dir, 'a', 'y.png'));
      execFileSync('mkfifo', [path.join(dir, 'a', 'y.png')]);
      const [batch] = await collect(stream.batches({ epoch: 0, seed: 0, batchSize: 2, transform: 'eval' }));
      expect(batch!.count).toBe(1);
      expect(batch!.skipped.map((s) => s.message)).toEqual([expect.stringMatching(/^a\/y\.png: .*not a regular file/)]);
    } finally {
      stream.close();
    }
  });

  test('a folder without images, and train/ and val/ with different classes, are clear errors', async () => {
    const empty = path.join(root, 'empty', 'train');
    fs.mkdirSync(path.join(empty, 'cat'), { recursive: true });
    expect(() => ImageFolderStream.open(empty, { size: 32 })).toThrow(/cat\/: no images in class folder/);
    const none = path.join(root, 'none');
    fs.mkdirSync(none, { recursive: true });
    expect(() => ImageFolderStream.open(none, { size: 32 })).toThrow(/no class sub-folders/);

    const differ = path.join(root, 'differ');
    const png = await sharp({ create: { width: 8, height: 8, channels: 3, background: 'red' } })
      .png()
      .toBuffer();
    for (const [split, cls] of [
      ['train', 'cat'],
      ['train', 'dog'],
      ['val', 'cat'],
      ['val', 'cow'],
    ] as const) {
      fs.mkdirSync(path.join(differ, split, cls), { recursive: true });
      fs.writeFileSync(path.join(differ, split, cls, 'x.png'), png);
    }
    await expect(
      train({
        arch: 'RepOpt-VGG-XS',
        mode: 'vgg',
        epochs: 1,
        batchSize: 1,
        data: { kind: 'folder', dir: differ, size: 8 },
        outDir: path.join(root, 'run-differ'),
      }).result,
    ).rejects.toThrow(/train\/ and val\/ have different classes: only in train\/: dog; only in val\/: cow/);
  });
});

describe('--recipe imagenet', () => {
  test('sets the official ImageNet recipe; options given override it (API and CLI)', async () => {
    const config = resolveTrainConfig({
      recipe: 'imagenet',
      mode: 'vgg',
      data: { kind: 'folder', dir: fmnist },
      epochs: 3,
      outDir: path.join(root, 'unused'),
    });
    expect(config).toMatchObject({
      recipe: 'imagenet',
      epochs: 3,
      batchSize: 256,
      lr: 0.1,
      momentum: 0.9,
      nesterov: true,
      weightDecay: 4e-5,
      warmupEpochs: 5,
      labelSmoothing: 0.1,
      clipNorm: 0,
      augment: { pad: 0, resizedCrop: true, flip: true, randAugment: 'raug15' },
      data: { kind: 'folder', dir: fmnist, size: 224, cropFraction: 1, normalization: 'imagenet' },
    });
    expect(() => resolveTrainConfig({ recipe: 'cifar' as 'imagenet', outDir: path.join(root, 'unused') })).toThrow(
      /recipe must be one of imagenet/,
    );

    // The CLI: flags left at their defaults give way to the recipe, flags given win.
    const out = path.join(root, 'run-recipe');
    const cli = path.join(__dirname, '..', 'dist', 'cli.js');
    const run = spawnSync(
      process.execPath,
      [
        cli,
        'train',
        '--recipe',
        'imagenet',
        '--mode',
        'vgg',
        '--arch',
        'RepOpt-VGG-XS',
        '--dataset',
        'folder',
        '--data-dir',
        fmnist,
      ].concat(['--image-size', '32', '--batch-size', '20', '--epochs', '2', '--stop-after-steps', '2', '--threads', '2', '--out', out]),
      { encoding: 'utf8' },
    );
    expect(run.stderr).not.toMatch(/error/i);
    expect(run.status).toBe(0);
    const ckpt = readLatestCheckpoint<TrainConfig>(path.join(out, 'checkpoints'))!;
    expect(ckpt.meta.config).toMatchObject({
      recipe: 'imagenet',
      epochs: 2,
      batchSize: 20,
      lr: 0.1,
      warmupEpochs: 5,
      labelSmoothing: 0.1,
      weightDecay: 4e-5,
      augment: { randAugment: 'raug15', pad: 0, resizedCrop: true },
      data: { size: 32, cropFraction: 1, normalization: 'imagenet' },
    });
  }, 120_000);
});

describe('streamed folder options', () => {
  test('bad options are refused naming the option, in the API and the CLI', () => {
    const outDir = path.join(root, 'unused');
    const data = { kind: 'folder', dir: fmnist, size: 32 } as const;
    const refused = (options: Parameters<typeof resolveTrainConfig>[0]) => {
      try {
        resolveTrainConfig(options);
      } catch (e) {
        return { option: (e as { option?: string }).option, message: (e as Error).message };
      }
      throw new Error('expected a refusal');
    };
    expect(refused({ mode: 'vgg', data: { ...data, loader: 'memory', threads: 2 }, outDir })).toMatchObject({
      option: 'data.threads',
      message: expect.stringMatching(/applies to data.loader stream/),
    });
    expect(refused({ mode: 'vgg', data, augment: { pad: 4 }, outDir })).toMatchObject({
      option: 'augment.pad',
      message: expect.stringMatching(/RandomResizedCrop/),
    });
    expect(refused({ mode: 'vgg', data, augment: { randAugment: 'rand-q3' }, outDir }).option).toBe('augment.randAugment');
    expect(refused({ mode: 'vgg', augment: { randAugment: 'raug15' }, outDir })).toMatchObject({
      option: 'augment.randAugment',
      message: expect.stringMatching(/streamed image folder/),
    });
    expect(refused({ mode: 'vgg', data: { ...data, cropFraction: 1.5 }, outDir }).option).toBe('data.cropFraction');
    expect(refused({ mode: 'vgg', data: { ...data, normalization: { mean: [0.5], std: [1, 1, 1] } }, outDir }).option).toBe(
      'data.normalization',
    );
    expect(refused({ mode: 'vgg', data, augment: { cropScale: [0.5, 2] }, outDir }).option).toBe('augment.cropScale');
    expect(refused({ mode: 'vgg', data, quant: { calibBatches: 2 }, outDir }).option).toBe('quant');

    const cli = path.join(__dirname, '..', 'dist', 'cli.js');
    const run = spawnSync(
      process.execPath,
      [
        cli,
        'train',
        '--mode',
        'vgg',
        '--dataset',
        'folder',
        '--data-dir',
        fmnist,
        '--rand-augment',
        'rand-q3',
        '--out',
        path.join(root, 'cli-bad'),
      ],
      { encoding: 'utf8' },
    );
    expect(run.status).not.toBe(0);
    expect(run.stderr).toMatch(/--rand-augment/);
    expect(run.stderr).not.toMatch(/augment\.randAugment/);
  });
});
