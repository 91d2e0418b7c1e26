#!/usr/bin/env node
// The streaming image-folder loader (ImageFolderStream: native JPEG decode on N loader threads) against
// PyTorch's DataLoader (torchvision ImageFolder + transforms, N worker processes, 1 torch thread each),
// side by side in one run, on a generated folder of 2,000 photo-like JPEGs (mostly 500x375, quality 90,
// ~100 KB each, like ImageNet's; made once with sharp under os.tmpdir() and reused):
//   - images/s of the loader alone, batch 64, uint8 3x224x224 out: the train transform (RandomResizedCrop 224
//     + flip) and the eval transform (resize 256, centre crop 224), both over train/'s 1,600 images;
//   - images/s of loader + training step, and of the training step alone (one batch reused): RepOpt-VGG-XS
//     (target blocks, RepOptSGD) at 224, batch 32, normalised in the training process, N torch threads
//     there on both sides;
//   - images per CPU second of each (ours: the process; PyTorch: main + workers), steadier than images/s
//     on a loaded machine;
//   - resident memory: the peak (ours: the process, sampled and getrusage; PyTorch: main + workers, sampled
//     from /proc, RSS summed and counting shared pages once), and after the first batch, at the middle and
//     at the end of an epoch.
// Rounds interleave (ours first, then PyTorch first), so that drifting load hits both; a loader phase's
// first round is a warm-up epoch, each epoch's first batch is left out of images/s (its latency is shown
// apart), and each training round starts with 2 untimed steps.
// Prints a table, writes bench/results/image-loader.json. REPOPT_BENCH_THREADS (N, default 2),
// REPOPT_BENCH_REPS (timed rounds, default 3), REPOPT_BENCH_STEPS (timed training steps a round, default 12).
'use strict';
const { spawn } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const readline = require('readline');
const { seededRandom, blockGradMults } = require('./common');

const CLASSES = 10;
const PER_CLASS = { train: 160, val: 40 };
const DATA_DIR = path.join(os.tmpdir(), 'repopt-bench-imagefolder-v1');

// ---- the generated folder ----

/** Doubles a w x h field bilinearly (edges clamped). */
function double(src, w, h) {
  const dst = new Float32Array(4 * w * h);
  for (let y = 0; y < 2 * h; y++) {
    const fy = Math.max(0, Math.min(h - 1, (y - 0.5) / 2));
    const y0 = Math.floor(fy);
    const y1 = Math.min(h - 1, y0 + 1);
    const ty = fy - y0;
    for (let x = 0; x < 2 * w; x++) {
      const fx = Math.max(0, Math.min(w - 1, (x - 0.5) / 2));
      const x0 = Math.floor(fx);
      const x1 = Math.min(w - 1, x0 + 1);
      const tx = fx - x0;
      const top = src[y0 * w + x0] + (src[y0 * w + x1] - src[y0 * w + x0]) * tx;
      const bottom = src[y1 * w + x0] + (src[y1 * w + x1] - src[y1 * w + x0]) * tx;
      dst[y * 2 * w + x] = top + (bottom - top) * ty;
    }
  }
  return dst;
}

/** Fractal noise on a (w0 << 7) x (h0 << 7) grid: each doubling up to `detail` adds noise at amplitude
 * amp * persistence^level, the roughly 1/f spectrum of photographs. */
function fractal(random, w0, h0, amp, persistence, detail) {
  let f = Float32Array.from({ length: w0 * h0 }, () => amp * (random() * 2 - 1));
  let w = w0;
  let h = h0;
  for (let level = 1; level <= 7; level++) {
    f = double(f, w, h);
    w *= 2;
    h *= 2;
    if (level > detail) continue;
    amp *= persistence;
    for (let i = 0; i < f.length; i++) f[i] += amp * (random() * 2 - 1);
  }
  return { f, stride: w };
}

/** A photo-like RGB image: textured background and objects (ellipses) in the class's tint, sensor grain. */
function photo(random, width, height, tint) {
  const [w0, h0] = width >= height ? [4, 3] : [3, 4];
  const lum = fractal(random, w0, h0, 60, 0.8 + 0.18 * random(), 7);
  const chromaA = fractal(random, w0, h0, 30, 0.6, 4);
  const chromaB = fractal(random, w0, h0, 30, 0.6, 4);
  const grain = 6 + 18 * random();
  const base = new Float32Array(width * height * 3);
  for (let i = 0; i < width * height; i++) base.set(tint, i * 3);
  const objects = 3 + Math.floor(6 * random());
  for (let s = 0; s < objects; s++) {
    const cx = random() * width;
    const cy = random() * height;
    const rx = 20 + (random() * width) / 3;
    const ry = 20 + (random() * height) / 3;
    const colour = [random() * 255, random() * 255, random() * 255];
    for (let y = Math.max(0, Math.floor(cy - ry)); y < Math.min(height, cy + ry); y++)
      for (let x = Math.max(0, Math.floor(cx - rx)); x < Math.min(width, cx + rx); x++)
        if (((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 < 1) base.set(colour, (y * width + x) * 3);
  }
  const rgb = new Uint8ClampedArray(width * height * 3);
  for (let y = 0; y < height; y++)
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * 3;
      const j = y * lum.stride + x;
      const l = lum.f[j] + grain * (random() * 2 - 1) + 40;
      rgb[i] = 0.7 * base[i] + l + chromaA.f[j];
      rgb[i + 1] = 0.7 * base[i + 1] + l - 0.5 * chromaA.f[j] + chromaB.f[j];
      rgb[i + 2] = 0.7 * base[i + 2] + l - chromaB.f[j];
    }
  return Buffer.from(rgb.buffer);
}

/** Every image of the folder: split, class, file name, and its own seed (the same images in any process). */
function folderImages() {
  const images = [];
  for (const split of ['train', 'val'])
    for (let c = 0; c < CLASSES; c++)
      for (let k = 0; k < PER_CLASS[split]; k++)
        images.push({ split, c, file: path.join(split, `class${c}`, `img${String(k).padStart(4, '0')}.jpg`), seed: 1 + images.length });
  return images;
}

/** The child's part of the folder: every `parts`-th image from `part` on. */
async function generatePart(dir, part, parts) {
  const sharp = require('sharp');
  const images = folderImages();
  for (let n = part; n < images.length; n += parts) {
    const { c, file, seed } = images[n];
    const random = seededRandom(seed * 7919);
    for (let k = 0; k < 3; k++) random(); // consecutive seeds: their first draws are alike
    const classRandom = seededRandom(1000 + c);
    const tint = [classRandom() * 255, classRandom() * 255, classRandom() * 255];
    const shape = random();
    const [width, height] = shape < 0.7 ? [500, 375] : shape < 0.85 ? [500, 333] : [375, 500];
    const out = path.join(dir, file);
    fs.mkdirSync(path.dirname(out), { recursive: true });
    await sharp(photo(random, width, height, tint), { raw: { width, height, channels: 3 } })
      .jpeg({ quality: 90 })
      .toFile(out);
  }
}

/** The folder, generated by one child process per core (then renamed into place) unless already there. */
async function imageFolder() {
  if (fs.existsSync(DATA_DIR)) return DATA_DIR;
  // What an interrupted run left is made again.
  const partial = `${DATA_DIR}.partial`;
  fs.rmSync(partial, { recursive: true, force: true });
  const parts = os.availableParallelism();
  console.log(`generating ${folderImages().length} JPEGs in ${DATA_DIR} (once) ...`);
  await Promise.all(
    Array.from(
      { length: parts },
      (_, part) =>
        new Promise((resolve, reject) => {
          const child = spawn(process.execPath, [__filename, '--generate', partial, String(part), String(parts)], { stdio: 'inherit' });
          child.on('error', reject);
          child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`image generation failed (exit ${code})`))));
        }),
    ),
  );
  fs.renameSync(partial, DATA_DIR);
  return DATA_DIR;
}

function folderStats(dir) {
  const sizes = folderImages().map((x) => fs.statSync(path.join(dir, x.file)).size);
  sizes.sort((a, b) => a - b);
  const kib = (b) => Math.round(b / 1024);
  return {
    images: sizes.length,
    meanKiB: kib(sizes.reduce((a, b) => a + b, 0) / sizes.length),
    minKiB: kib(sizes[0]),
    medianKiB: kib(sizes[sizes.length >> 1]),
    maxKiB: kib(sizes[sizes.length - 1]),
  };
}

// ---- memory ----

/** The sum of the given kB fields of a /proc file, in bytes. */
function procFields(file, ...fields) {
  let text;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return 0; // the process has exited
  }
  return text
    .split('\n')
    .filter((l) => fields.some((f) => l.startsWith(f)))
    .reduce((sum, l) => sum + Number(l.split(/\s+/)[1]) * 1024, 0);
}

/** Samples resident memory every 50 ms: this process, and the PyTorch peer's main process and workers. The
 * forked workers share pages with the main process, which RSS counts in each: their private memory is read
 * too (smaps_rollup), between rounds only, as reading it walks the page tables (~30 ms a process here) and
 * would slow the peer down; main RSS + workers' private is the peer's memory counted once. */
class MemorySampler {
  constructor() {
    this.peerPid = 0;
    this.workerPids = [];
    this.phase = 'start';
    this.peaks = {};
    this.timer = setInterval(() => this.sample(), 50);
  }

  get current() {
    this.peaks[this.phase] ??= { ours: 0, pytorchRssSum: 0, pytorchMainRss: 0, pytorchWorkersPrivate: 0 };
    return this.peaks[this.phase];
  }

  sample() {
    const p = this.current;
    p.ours = Math.max(p.ours, process.memoryUsage.rss());
    const main = procFields(`/proc/${this.peerPid}/status`, 'VmRSS:');
    let sum = main;
    for (const pid of this.workerPids) sum += procFields(`/proc/${pid}/status`, 'VmRSS:');
    p.pytorchMainRss = Math.max(p.pytorchMainRss, main);
    p.pytorchRssSum = Math.max(p.pytorchRssSum, sum);
  }

  /** After a PyTorch round: the workers' private memory. */
  sampleWorkers() {
    const p = this.current;
    let bytes = 0;
    for (const pid of this.workerPids) bytes += procFields(`/proc/${pid}/smaps_rollup`, 'Private_Clean:', 'Private_Dirty:');
    p.pytorchWorkersPrivate = Math.max(p.pytorchWorkersPrivate, bytes);
  }

  stop() {
    clearInterval(this.timer);
  }
}

// ---- the PyTorch peer ----

async function startPeer(python, threads) {
  const child = spawn(python, [path.join(__dirname, 'python', 'image_loader.py')], {
    stdio: ['pipe', 'pipe', 'pipe'],
    env: { ...process.env, OMP_NUM_THREADS: String(threads) },
  });
  let stderr = '';
  child.stderr.on('data', (d) => {
    stderr += d;
  });
  const lines = readline.createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const read = async () => {
    const { value, done } = await lines.next();
    if (done) throw new Error(`PyTorch peer failed (${python}; apt-get install python3-torchvision): ${stderr}`);
    return JSON.parse(value);
  };
  const hello = await read();
  return {
    pid: child.pid,
    torch: hello.torch,
    request: (cmd) => {
      child.stdin.write(`${JSON.stringify(cmd)}\n`);
      return read();
    },
    close: () =>
      new Promise((resolve) => {
        child.on('exit', resolve);
        child.stdin.end();
      }),
  };
}

// ---- the benchmark ----

const now = () => Number(process.hrtime.bigint()) / 1e9;
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function main() {
  const { Tensor, nativeBackend, networkSpec, setNumThreads, info } = require('../dist');
  const { ImageFolderStream } = require('../dist/data/image-stream');
  const { native } = require('../dist/native');
  const { IMAGENET_NORMALIZATION, uploadBatch } = require('../dist/train/stream-data');
  const threads = Number(process.env.REPOPT_BENCH_THREADS || 2);
  const rounds = Number(process.env.REPOPT_BENCH_REPS || 3);
  const steps = Number(process.env.REPOPT_BENCH_STEPS || 12);
  const python = process.env.REPOPT_BENCH_PYTHON || '/usr/bin/python3';
  const warmupSteps = 2;
  const arch = 'RepOpt-VGG-XS';
  setNumThreads(threads);

  const root = await imageFolder();
  const folder = folderStats(root);
  const trainDir = path.join(root, 'train');
  const memory = new MemorySampler();
  const peer = await startPeer(python, threads);
  memory.peerPid = peer.pid;

  /** Sample order of an epoch (shuffled for training, as the DataLoader's shuffle=True). */
  const order = (count, epoch) => {
    const p = native().permutation(count, 1, epoch);
    const a = Int32Array.from(p.toArray(), Number);
    p.dispose();
    return a;
  };

  const cpuSeconds = () => {
    const u = process.cpuUsage();
    return (u.user + u.system) / 1e6;
  };

  async function ourEpoch(stream, transform, batchSize, epoch) {
    const batches = Math.ceil(stream.count / batchSize);
    const marks = { 1: 'start', [batches >> 1]: 'middle', [batches - 1]: 'end' };
    const rss = {};
    let images = 0;
    let i = 0;
    let first = 0;
    let cpu = 0;
    const start = now();
    const opts = { epoch, seed: 1, batchSize, transform, ...(transform === 'train' ? { order: order(stream.count, epoch) } : {}) };
    for await (const b of stream.batches(opts)) {
      if (b.skipped.length) throw new Error(`unreadable images: ${b.skipped.map((s) => s.message).join('; ')}`);
      if (i === 0) {
        first = now();
        cpu = cpuSeconds();
      } else images += b.count;
      if (marks[i]) rss[marks[i]] = process.memoryUsage.rss();
      i++;
    }
    return { images, seconds: now() - first, cpuSeconds: cpuSeconds() - cpu, firstBatchSeconds: first - start, rss };
  }

  /** Rounds of ours and PyTorch's, interleaved (ours first, then PyTorch first). */
  async function interleaved(count, ours, pytorch) {
    const runs = { ours: [], pytorch: [] };
    for (let r = 0; r < count; r++) {
      const runOurs = async () => runs.ours.push(await ours(r));
      const runPytorch = async () => {
        runs.pytorch.push(await pytorch(r));
        memory.sampleWorkers();
      };
      if (r % 2 === 0) {
        await runOurs();
        await runPytorch();
      } else {
        await runPytorch();
        await runOurs();
      }
    }
    return runs;
  }

  /** Medians of images/s (wall) and images per CPU second (the process, or PyTorch's main and workers). */
  const summary = (runs) => ({
    imagesPerSecond: median(runs.map((x) => x.images / x.seconds)),
    imagesPerCpuSecond: median(runs.map((x) => x.images / x.cpuSeconds)),
    ...(runs[0].firstBatchSeconds !== undefined ? { firstBatchSeconds: median(runs.map((x) => x.firstBatchSeconds)) } : {}),
    runs,
  });

  // ---- loader alone ----
  const loaderRows = [];
  for (const transform of ['train', 'eval']) {
    const batchSize = 64;
    memory.phase = `loader alone, ${transform} transform`;
    const stream = ImageFolderStream.open(trainDir, { size: 224, threads, prefetch: 3 });
    const opened = await peer.request({
      cmd: 'open',
      dir: trainDir,
      transform,
      batchSize,
      workers: threads,
      shuffle: transform === 'train',
    });
    memory.workerPids = opened.workers;
    if (opened.count !== stream.count) throw new Error(`ImageFolder found ${opened.count} images, ImageFolderStream ${stream.count}`);
    // Round 0: the warm-up epoch (page cache, allocators, the workers' first batches), kept apart.
    const runs = await interleaved(
      rounds + 1,
      (r) => ourEpoch(stream, transform, batchSize, r),
      () => peer.request({ cmd: 'epoch' }),
    );
    stream.close();
    loaderRows.push({
      transform,
      batchSize,
      ours: { ...summary(runs.ours.slice(1)), warmup: runs.ours[0] },
      pytorch: { ...summary(runs.pytorch.slice(1)), warmup: runs.pytorch[0] },
    });
  }

  // ---- training steps: fed by the loader, and the step alone (one batch reused) ----
  const batchSize = 32;
  memory.phase = 'training';
  const stream = ImageFolderStream.open(trainDir, { size: 224, threads, prefetch: 3 });
  const opened = await peer.request({ cmd: 'open', dir: trainDir, transform: 'train', batchSize, workers: threads, shuffle: true });
  memory.workerPids = opened.workers;
  const spec = networkSpec(arch, { mode: 'target', numClasses: stream.numClasses, inChannels: 3 });
  const net = nativeBackend.createNetwork(spec, { seed: 0 });
  const random = seededRandom(1);
  const gradMults = blockGradMults(spec, () => 0.5 + random());
  const opt = net.createOptimizer({ type: 'sgd', lr: 0.05, momentum: 0.9, nesterov: true, weightDecay: 4e-5, gradMults });

  // As the trainer's streamed step: the batch uploaded as a one-batch data set, normalised there.
  async function step(b) {
    const ds = uploadBatch(b, IMAGENET_NORMALIZATION, 'cpu');
    const indices = Tensor.fromArray(BigInt64Array.from({ length: b.count }, (_, i) => BigInt(i)));
    try {
      await net.trainBatch(opt, ds, indices, 0, b.count, { labelSmoothing: 0.1 });
    } finally {
      indices.dispose();
      ds.dispose();
    }
  }

  async function ourTraining(epoch, reuse) {
    const batches = stream.batches({ epoch, seed: 1, batchSize, transform: 'train', order: order(stream.count, epoch), dropLast: true });
    const first = reuse ? (await batches.next()).value : undefined;
    const next = async () => first ?? (await batches.next()).value;
    for (let k = 0; k < warmupSteps; k++) await step(await next());
    let images = 0;
    const start = now();
    const cpu = cpuSeconds();
    for (let k = 0; k < steps; k++) {
      const b = await next();
      await step(b);
      images += b.count;
    }
    const result = { images, seconds: now() - start, cpuSeconds: cpuSeconds() - cpu, rss: { end: process.memoryUsage.rss() } };
    await batches.return();
    net.takeTrainMetrics();
    return result;
  }

  const trainRows = [];
  for (const reuse of [false, true]) {
    const runs = await interleaved(
      rounds,
      (r) => ourTraining(r, reuse),
      () => peer.request({ cmd: 'train', spec, steps, warmup: warmupSteps, threads, reuse }),
    );
    trainRows.push({ reuse, ours: summary(runs.ours), pytorch: summary(runs.pytorch) });
  }
  stream.close();
  await peer.close();
  memory.stop();
  const oursMaxRss = process.resourceUsage().maxRSS * 1024;
  const load = os.loadavg();

  // ---- report ----
  const mib = (b) => (b / (1 << 20)).toFixed(0);
  const ratio = (a, b) => (a / b).toFixed(3);
  const row = (name, ours, pytorch, digits = 0) =>
    console.log(`| ${name} | ${ours.toFixed(digits)} | ${pytorch.toFixed(digits)} | ${ratio(ours, pytorch)} |`);
  console.log(
    `image-folder loader, CPU, ${threads} loader threads / DataLoader workers, libtorch ${info().torchVersion} / PyTorch ${peer.torch} + torchvision (PIL)`,
  );
  console.log(
    `folder: ${folder.images} JPEGs (quality 90, mostly 500x375), ${folder.meanKiB} KiB mean (min ${folder.minKiB}, median ${folder.medianKiB}, max ${folder.maxKiB}), ${root}`,
  );
  console.log(`| measure (median of ${rounds} interleaved rounds) | ours | PyTorch | ours / PyTorch |`);
  console.log('|---|---|---|---|');
  for (const r of loaderRows) {
    const name =
      r.transform === 'train' ? 'train transform (RandomResizedCrop 224 + flip)' : 'eval transform (resize 256, centre crop 224)';
    row(`loader alone, ${name}, batch ${r.batchSize}: images/s`, r.ours.imagesPerSecond, r.pytorch.imagesPerSecond);
    row('... images per CPU second', r.ours.imagesPerCpuSecond, r.pytorch.imagesPerCpuSecond);
    row('... first batch of an epoch, s', r.ours.firstBatchSeconds, r.pytorch.firstBatchSeconds, 3);
  }
  const workload = `${arch} 224x224 batch ${batchSize}, RepOptSGD, ${steps} steps`;
  for (const r of trainRows) {
    const name = r.reuse ? `training step alone (one batch reused), ${workload}` : `loader + training step, ${workload}`;
    row(`${name}: images/s`, r.ours.imagesPerSecond, r.pytorch.imagesPerSecond, 1);
    row('... images per CPU second', r.ours.imagesPerCpuSecond, r.pytorch.imagesPerCpuSecond, 1);
  }
  for (const [phase, p] of Object.entries(memory.peaks).filter(([phase]) => phase !== 'start')) {
    const once = p.pytorchMainRss + p.pytorchWorkersPrivate;
    console.log(
      `| peak RSS, ${phase}, MiB (PyTorch: main + workers RSS sum / main + workers' private) | ${mib(p.ours)} | ${mib(p.pytorchRssSum)} / ${mib(once)} | ${ratio(p.ours, p.pytorchRssSum)} / ${ratio(p.ours, once)} |`,
    );
  }
  const trainLoader = loaderRows[0];
  const marks = (x) => ['start', 'middle', 'end'].map((m) => mib(x.rss[m])).join(' / ');
  console.log(
    `| RSS after the first batch / middle / end of the last train-transform epoch, MiB | ${marks(trainLoader.ours.runs.at(-1))} | ${marks(trainLoader.pytorch.runs.at(-1))} | |`,
  );
  const ends = (x) => [x.warmup, ...x.runs].map((run) => mib(run.rss.end)).join(', ');
  console.log(
    `| RSS at the end of each train-transform epoch (warm-up first), MiB | ${ends(trainLoader.ours)} | ${ends(trainLoader.pytorch)} | |`,
  );
  console.log(
    `ours: getrusage maxRSS over the run ${mib(oursMaxRss)} MiB. Ratios of images/s above 1.000: ours faster. Load average at the end ${load.map((x) => x.toFixed(1)).join(' ')} on ${os.availableParallelism()} CPUs.`,
  );
  fs.mkdirSync(path.join(__dirname, 'results'), { recursive: true });
  fs.writeFileSync(
    path.join(__dirname, 'results', 'image-loader.json'),
    JSON.stringify(
      { threads, rounds, steps, folder, torch: peer.torch, loaderRows, trainRows, peaks: memory.peaks, oursMaxRss, load },
      null,
      2,
    ) + '\n',
  );
}

if (process.argv[2] === '--generate') {
  generatePart(process.argv[3], Number(process.argv[4]), Number(process.argv[5])).catch((e) => {
    console.error(e);
    process.exit(1);
  });
} else {
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
