#!/usr/bin/env node
// Data-parallel scaling on this machine, measured side by side in one run: RepOpt-VGG-S (target
// blocks, RepOptSGD with GradMults) on 28x28 images, 1 process vs 2 processes (Gloo over 127.0.0.1,
// 1 torch thread each, gradients averaged by c10d's Reducer), at the same global batch (strong
// scaling) and at the same per-process batch (weak scaling). On a CUDA build with 2+ GPUs the same
// for NCCL, one GPU per process. Prints a table, writes bench/results/distributed.json.
// Worker mode (internal): RANK / WORLD_SIZE / MASTER_PORT set, argv: <backend> <device> <local batch> <steps>.
'use strict';
const { spawn } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

const ARCH = 'RepOpt-VGG-S';
const STEPS = Number(process.env.REPOPT_BENCH_DIST_STEPS || 40);
const ROUNDS = Number(process.env.REPOPT_BENCH_REPS || 3);

function worker() {
  const { networkSpec } = require('../dist');
  const { seededRandom, blockGradMults } = require('./common');
  const { native } = require('../dist/native');
  const { NativeBackendNetwork } = require('../dist/native-backend');
  const [backend, device, localBatch, steps] = [process.argv[2], process.argv[3], Number(process.argv[4]), Number(process.argv[5])];
  const rank = Number(process.env.RANK);
  const world = Number(process.env.WORLD_SIZE);
  const b = native();
  b.setNumThreads(1);
  const spec = networkSpec(ARCH, { mode: 'target', numClasses: 10, inChannels: 1 });
  const net = new NativeBackendNetwork(spec, 'float32', 0);
  if (device !== 'cpu') net.to(device);
  const random = seededRandom(1);
  const gradMults = blockGradMults(spec, () => 0.5 + random());
  const pg =
    world > 1
      ? new b.ProcessGroup({
          rank,
          worldSize: world,
          masterAddr: '127.0.0.1',
          masterPort: Number(process.env.MASTER_PORT),
          backend,
          timeoutMs: 120000,
        })
      : null;
  if (pg) net.attach(pg);
  const opt = net.createOptimizer({ type: 'sgd', lr: 0.05, momentum: 0.9, nesterov: true, weightDecay: 4e-5, gradMults });
  const count = localBatch * (steps + 5);
  const images = Uint8Array.from({ length: count * 784 }, () => Math.floor(random() * 256));
  const labels = Int32Array.from({ length: count }, () => Math.floor(random() * 10));
  const ds = new b.Dataset(images, [count, 1, 28, 28], labels, { device, mean: [0.5], std: [0.25] });
  const perm = ds.permutation(rank, 0);
  const stepAt = (k) => net.trainBatchSync(opt, ds, perm, k, localBatch, { labelSmoothing: 0.1 });
  for (let k = 0; k < 5; k++) stepAt(k);
  net.takeTrainMetrics();
  pg?.barrier();
  const start = process.hrtime.bigint();
  for (let k = 0; k < steps; k++) stepAt(5 + k);
  net.takeTrainMetrics(); // waits for the device
  pg?.barrier();
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  if (pg) net.detach(pg);
  if (rank === 0) process.stdout.write(JSON.stringify({ seconds, images: steps * localBatch * world }) + '\n');
}

function freePort() {
  return new Promise((resolve) => {
    const server = require('net').createServer();
    server.listen(0, '127.0.0.1', () => {
      const port = server.address().port;
      server.close(() => resolve(port));
    });
  });
}

async function measure(world, backend, device, localBatch) {
  const port = await freePort();
  const children = Array.from({ length: world }, (_, rank) => {
    const dev = device === 'cuda' ? `cuda:${rank}` : device;
    const env = {
      ...process.env,
      RANK: String(rank),
      WORLD_SIZE: String(world),
      MASTER_ADDR: '127.0.0.1',
      MASTER_PORT: String(port),
      OMP_NUM_THREADS: '1',
    };
    return spawn(process.execPath, [__filename, backend, dev, String(localBatch), String(STEPS)], {
      env,
      stdio: ['ignore', 'pipe', 'inherit'],
    });
  });
  const outputs = await Promise.all(
    children.map(
      (c) =>
        new Promise((resolve, reject) => {
          let out = '';
          c.stdout.on('data', (d) => (out += d));
          c.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`bench worker exited with ${code}`))));
        }),
    ),
  );
  const r = JSON.parse(outputs[0].trim().split('\n').pop());
  return r.images / r.seconds;
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function main() {
  const { info } = require('../dist');
  const rt = info();
  const cases = [
    { name: 'global batch 64 (strong scaling)', batch: { 1: 64, 2: 32 } },
    { name: 'batch 64 per process (weak scaling)', batch: { 1: 64, 2: 64 } },
  ];
  const setups = [{ backend: 'gloo', device: 'cpu' }];
  if (rt.cuda && rt.deviceCount >= 2) setups.push({ backend: 'nccl', device: 'cuda' });
  else
    process.stdout.write(
      `NCCL: skipped (${rt.cuda ? `${rt.deviceCount} CUDA device(s)` : rt.cudaBuild ? 'a CUDA build, but no CUDA device visible' : 'CPU-only libtorch'}; needs a CUDA build and 2+ GPUs)\n`,
    );
  const results = [];
  process.stdout.write(
    `${ARCH}, 28x28, RepOptSGD, ${STEPS} timed steps, median of ${ROUNDS} rounds (1 and 2 processes alternating); ${os.cpus().length} CPU cores, 1 torch thread per process\n`,
  );
  process.stdout.write('backend  case                                   1 process img/s  2 processes img/s  speed-up\n');
  for (const s of setups) {
    for (const c of cases) {
      const one = [];
      const two = [];
      for (let r = 0; r < ROUNDS; r++) {
        one.push(await measure(1, s.backend, s.device, c.batch[1]));
        two.push(await measure(2, s.backend, s.device, c.batch[2]));
      }
      const row = { backend: s.backend, case: c.name, onePerSecond: median(one), twoPerSecond: median(two) };
      row.speedup = row.twoPerSecond / row.onePerSecond;
      results.push(row);
      process.stdout.write(
        `${s.backend.padEnd(8)} ${c.name.padEnd(38)} ${row.onePerSecond.toFixed(0).padStart(16)} ${row.twoPerSecond.toFixed(0).padStart(18)}  ${row.speedup.toFixed(2)}x\n`,
      );
    }
  }
  const dir = path.join(__dirname, 'results');
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(
    path.join(dir, 'distributed.json'),
    JSON.stringify({ arch: ARCH, steps: STEPS, rounds: ROUNDS, cores: os.cpus().length, torch: rt.torchVersion, results }, null, 2) + '\n',
  );
}

if (process.env.WORLD_SIZE !== undefined && process.argv.length >= 6) worker();
else
  main().catch((e) => {
    process.stderr.write(`${e.stack}\n`);
    process.exit(1);
  });
