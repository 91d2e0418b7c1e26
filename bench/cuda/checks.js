#!/usr/bin/env node
// The CUDA checks: results on a device against the CPU, with explicit tolerances. Used by
// bench/cuda/run.sh (on a GPU machine without npm) and by test/cuda.test.ts (skipped without CUDA).
// `node bench/cuda/checks.js [device] [results-dir]` (device 'cuda' by default; 'cpu' runs the same
// code against itself, which is how the checks themselves are tested on machines without a GPU).
'use strict';
const fs = require('fs');
const net = require('net');
const path = require('path');
const { nativeBackend, info, manualSeed } = require('../../dist');
const { blockGradMults } = require('../common');
const { native } = require('../../dist/native');

const BLOCKS = [
  { name: 'stage0', inChannels: 3, outChannels: 8, stride: 2 },
  { name: 'stage1.0', inChannels: 8, outChannels: 16, stride: 2 },
  { name: 'stage1.1', inChannels: 16, outChannels: 16, stride: 1 },
  { name: 'stage2.0', inChannels: 16, outChannels: 16, stride: 1 },
];
const spec = { mode: 'target', inChannels: 3, numClasses: 10, blocks: BLOCKS };

function gradMults() {
  return blockGradMults({ blocks: BLOCKS }, (k, o, branch) =>
    branch === 's' ? 0.6 + 0.05 * ((o + k) % 9) - (o % 7 === 3 ? 1.2 : 0) : 0.4 + 0.03 * ((o * 3 + k) % 11),
  );
}

function batches(count, size = 16, batch = 8) {
  let seed = 12345;
  const next = () => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return (seed / 2147483648) * 4 - 2;
  };
  return Array.from({ length: count }, () => ({
    x: { shape: [batch, 3, size, size], data: Float32Array.from({ length: batch * 3 * size * size }, next) },
    y: Int32Array.from({ length: batch }, (_, i) => (i * 7 + count) % 10),
  }));
}

// Largest |a - b| / (1 + |b|) over all tensors of two state dicts.
function maxRelDiff(a, b) {
  let worst = 0;
  for (const [name, t] of b) {
    const other = a.get(name).data;
    for (let i = 0; i < t.data.length; i++) worst = Math.max(worst, Math.abs(other[i] - t.data[i]) / (1 + Math.abs(t.data[i])));
  }
  return worst;
}

function bitIdentical(a, b) {
  for (const [name, t] of b) {
    const other = a.get(name).data;
    for (let i = 0; i < t.data.length; i++) if (!Object.is(other[i], t.data[i])) return false;
  }
  return true;
}

function twins(device, precision = 'float32') {
  const cpu = nativeBackend.createNetwork(spec, { precision, seed: 5 });
  const dev = nativeBackend.createNetwork(spec, { precision, seed: 6 });
  dev.loadStateDict(cpu.stateDict());
  dev.to(device);
  return [cpu, dev];
}

// Optimizer steps on the device vs CPU (training steps with TF32 off, see runChecks): each optimizer,
// each GradMult storage; and on the device, the foreach and reference implementations (bit for bit:
// deterministic cuDNN gives both the same gradients).
function optimizerChecks(device) {
  const out = [];
  const cases = [
    ['RepOptSGD compact', { type: 'sgd', lr: 0.05, momentum: 0.9, nesterov: true, weightDecay: 1e-3, gradMults: gradMults() }],
    [
      'RepOptSGD full',
      { type: 'sgd', lr: 0.05, momentum: 0.9, nesterov: true, weightDecay: 1e-3, gradMults: gradMults(), gradMultStorage: 'full' },
    ],
    ['RepOptAdamW compact', { type: 'adamw', lr: 1e-3, weightDecay: 0.05, gradMults: gradMults() }],
  ];
  for (const [name, optSpec] of cases) {
    const [cpu, dev] = twins(device);
    const oc = cpu.createOptimizer(optSpec);
    const od = dev.createOptimizer(optSpec);
    let lossDiff = 0;
    for (const { x, y } of batches(5)) lossDiff = Math.max(lossDiff, Math.abs(cpu.trainStep(oc, x, y) - dev.trainStep(od, x, y)));
    const diff = maxRelDiff(dev.stateDict(), cpu.stateDict());
    out.push({ check: `${name}: 5 steps on ${device} vs CPU (fp32)`, value: diff, limit: 1e-5, pass: diff <= 1e-5 && lossDiff <= 1e-4 });
  }
  for (const storage of ['compact', 'full']) {
    const [, a] = twins(device);
    const [, b] = twins(device);
    const optSpec = { type: 'sgd', lr: 0.05, momentum: 0.9, weightDecay: 1e-3, gradMults: gradMults(), gradMultStorage: storage };
    const oa = a.createOptimizer(optSpec);
    const ob = b.createOptimizer(optSpec);
    oa.setImplementation('foreach');
    ob.setImplementation('reference');
    for (const { x, y } of batches(4)) {
      a.trainStep(oa, x, y);
      b.trainStep(ob, x, y);
    }
    const same = bitIdentical(a.stateDict(), b.stateDict());
    out.push({
      check: `RepOptSGD foreach == reference on ${device} (${storage} GradMult, fp32)`,
      value: same ? 0 : maxRelDiff(a.stateDict(), b.stateDict()),
      limit: 0,
      pass: same,
    });
  }
  return out;
}

// A whole training step through the GradMult multiply, in fp64: one SGD step with lr 1 and no
// momentum moves each conv weight by -(g ⊙ M), so the device's multiply is compared with the CPU's.
function gradMultCheck(device) {
  const [cpu, dev] = twins(device, 'float64');
  const optSpec = { type: 'sgd', lr: 1, gradMults: gradMults() };
  const oc = cpu.createOptimizer(optSpec);
  const od = dev.createOptimizer(optSpec);
  const { x, y } = batches(1)[0];
  cpu.trainStep(oc, x, y);
  dev.trainStep(od, x, y);
  const diff = maxRelDiff(dev.stateDict(), cpu.stateDict());
  return { check: `GradMult multiply (one SGD step, fp64) on ${device} vs CPU`, value: diff, limit: 1e-12, pass: diff <= 1e-12 };
}

// Whole training steps from the dataset with bf16 autocast and channels-last: finite, decreasing loss.
function mixedPrecisionCheck(device) {
  manualSeed(3);
  const network = nativeBackend.createNetwork(spec, { seed: 3 });
  network.to(device);
  network.setChannelsLast(true);
  const opt = network.createOptimizer({ type: 'sgd', lr: 0.05, momentum: 0.9, gradMults: gradMults() });
  const count = 64;
  const size = 16;
  const images = new Uint8Array(count * 3 * size * size).map(
    (_, i) => ((i % (3 * size * size)) * (((i / (3 * size * size)) % 10) | 0) * 13) % 256,
  );
  const labels = Int32Array.from({ length: count }, (_, i) => i % 10);
  const ds = new (native().Dataset)(images, [count, 3, size, size], labels, { device, mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25] });
  const losses = [];
  for (let epoch = 0; epoch < 6; epoch++) {
    const perm = ds.permutation(1, epoch);
    network.trainBatchSync(opt, ds, perm, 0, count, { autocast: 'bf16' }, 1);
    losses.push(network.takeTrainMetrics().loss);
    perm.dispose();
  }
  ds.dispose();
  const pass = losses.every(Number.isFinite) && losses[losses.length - 1] < losses[0];
  return {
    check: `train steps on ${device}, bf16 autocast + channels-last: loss ${losses[0].toFixed(3)} -> ${losses[losses.length - 1].toFixed(3)}`,
    value: losses[losses.length - 1],
    limit: losses[0],
    pass,
  };
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function ncclCheck() {
  const b = native();
  const pg = new b.ProcessGroup({
    rank: 0,
    worldSize: 1,
    masterAddr: '127.0.0.1',
    masterPort: await freePort(),
    backend: 'nccl',
    timeoutMs: 30_000,
  });
  let r;
  try {
    r = pg
      .allreduce(b.Tensor.fromArray(new Float32Array([1, 2, 3])).to('cuda:0'), 'sum')
      .to('cpu')
      .toArray();
  } finally {
    pg.dispose();
  }
  const pass = r[0] === 1 && r[1] === 2 && r[2] === 3;
  return { check: 'a one-process NCCL group all-reduces a CUDA tensor', value: Array.from(r).join(','), limit: '1,2,3', pass };
}

function memoryCheck() {
  const m = native().cudaMemory(0);
  return {
    check: `cudaMemory(0): peak ${(m.peakAllocated / 2 ** 20).toFixed(1)} MiB allocated`,
    value: m.peakAllocated,
    limit: 0,
    pass: m.peakAllocated > 0,
  };
}

async function runChecks(device = 'cuda') {
  // IEEE fp32 in convolutions and matmuls (no TF32), and reproducible cuDNN algorithms.
  const math = native().setCudaMath({});
  native().setCudaMath({ tf32: false, deterministic: true, benchmark: false });
  try {
    return await collect(device);
  } finally {
    native().setCudaMath(math);
  }
}

async function collect(device) {
  const results = [gradMultCheck(device), ...optimizerChecks(device), mixedPrecisionCheck(device)];
  if (device.startsWith('cuda')) results.push(await ncclCheck(), memoryCheck());
  return results;
}

module.exports = { runChecks };

if (require.main === module) {
  const device = process.argv[2] || 'cuda';
  const out = process.argv[3] || process.env.OUT || '/tmp/repopt-cuda-checks';
  native().setNumThreads(Number(process.env.REPOPT_TEST_THREADS || 2));
  runChecks(device).then((results) => {
    fs.mkdirSync(out, { recursive: true });
    const i = info();
    fs.writeFileSync(path.join(out, 'checks.json'), JSON.stringify({ info: i, results }, null, 2) + '\n');
    const md = [
      '| check | value | limit | result |',
      '|---|---|---|---|',
      ...results.map((r) => `| ${r.check} | ${r.value} | ${r.limit} | ${r.pass ? 'pass' : 'FAIL'} |`),
    ].join('\n');
    fs.writeFileSync(path.join(out, 'checks.md'), `libtorch ${i.torchVersion}, ${i.prebuild ?? i.binary}\n\n${md}\n`);
    process.stdout.write(md + '\n');
    process.exit(results.every((r) => r.pass) ? 0 : 1);
  });
}
