#!/usr/bin/env node
// RepOpt-VGG-B1 training steps on CUDA from TypeScript (one native call per step, RepOptSGD with compact
// GradMults), against PyTorch eager and torch.compile (bench/cuda/pytorch_step.py) in the same run.
// Usage: node bench/cuda/train-step.js [results-dir]   (run through bench/cuda/run.sh)
'use strict';
const { spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');
const { nativeBackend, networkSpec, info } = require('../../dist');
const { blockGradMults } = require('../common');
const { native } = require('../../dist/native');

const out = process.argv[2] || '/tmp/repopt-cuda-bench';
const steps = Number(process.env.REPOPT_BENCH_STEPS || 20);
const warmup = 8;

/** Multiply-accumulates of one forward pass per image (conv + linear). */
function macs(spec, size) {
  let h = size;
  let total = 0;
  for (const b of spec.blocks) {
    h = Math.ceil(h / b.stride);
    total += h * h * b.outChannels * b.inChannels * 9;
  }
  return total + spec.blocks[spec.blocks.length - 1].outChannels * spec.numClasses;
}

function ours(spec, size, batch, precision) {
  const net = nativeBackend.createNetwork(spec, { seed: 0 });
  net.to('cuda');
  net.setChannelsLast(precision === 'bf16');
  const gradMults = blockGradMults(spec, (_, __, branch) => (branch === 's' ? 1.1 : 0.7));
  const opt = net.createOptimizer({ type: 'sgd', lr: 0.1, momentum: 0.9, nesterov: true, weightDecay: 1e-4, gradMults });
  const count = batch * 2;
  const images = new Uint8Array(count * 3 * size * size).map((_, i) => (i * 7) % 256);
  const labels = Int32Array.from({ length: count }, (_, i) => i % spec.numClasses);
  const ds = new (native().Dataset)(images, [count, 3, size, size], labels, {
    device: 'cuda',
    mean: [0.5, 0.5, 0.5],
    std: [0.25, 0.25, 0.25],
  });
  const perm = ds.permutation(0, 0);
  const options = { labelSmoothing: 0.1, autocast: precision === 'bf16' ? 'bf16' : 'none' };
  const run = (n) => {
    for (let k = 0; k < n; k++) {
      opt.setLr(0.1);
      net.trainBatchSync(opt, ds, perm, k % 2, batch, options);
    }
    net.takeTrainMetrics(); // synchronises the device
  };
  // The same steps as a pure C++ loop: two batches per native call.
  const runCpp = (n) => {
    for (let k = 0; k < n; k += 2) net.trainBatchSync(opt, ds, perm, 0, batch, options, Math.min(2, n - k));
    net.takeTrainMetrics();
  };
  run(warmup);
  native().cudaMemory(0, true);
  const t0 = process.hrtime.bigint();
  run(steps);
  const ms = Number(process.hrtime.bigint() - t0) / 1e6 / steps;
  const peak = native().cudaMemory(0).peakAllocated;
  const t1 = process.hrtime.bigint();
  runCpp(steps);
  const cppMs = Number(process.hrtime.bigint() - t1) / 1e6 / steps;
  perm.dispose();
  ds.dispose();
  opt.dispose();
  net.dispose();
  return { msPerStep: ms, peakBytes: peak, cppMsPerStep: cppMs };
}

const workloads = [
  { size: 224, batch: 128, classes: 1000 },
  { size: 32, batch: 256, classes: 100 },
];
const rows = [];
for (const w of workloads) {
  const spec = networkSpec('RepOpt-VGG-B1', { mode: 'target', numClasses: w.classes });
  for (const precision of ['fp32', 'bf16']) {
    const mine = ours(spec, w.size, w.batch, precision);
    const cfg = { spec, batchSize: w.batch, imageSize: w.size, precision, steps, warmup, compile: true };
    const py = spawnSync('python3', [path.join(__dirname, 'pytorch_step.py'), JSON.stringify(cfg)], { encoding: 'utf8' });
    if (py.status !== 0) throw new Error(`PyTorch peer failed: ${py.stderr}`);
    const peer = JSON.parse(py.stdout.trim().split('\n').pop());
    const flops = 3 * 2 * macs(spec, w.size) * w.batch;
    rows.push({
      workload: `B1 ${w.size}x${w.size} batch ${w.batch} ${precision === 'bf16' ? 'bf16+CL' : 'fp32'}`,
      ours: mine,
      eager: peer.eager,
      compiled: peer.compiled,
      flops,
      device: peer.device,
      torch: peer.torch,
    });
  }
}

const fmt = (r) =>
  `${r.msPerStep.toFixed(1)} ms, ${(r.flops / r.msPerStep / 1e9).toFixed(1)} TFLOP/s, ${(r.peakBytes / 2 ** 30).toFixed(2)} GiB`;
console.log(
  `RepOpt-VGG-B1 training step on ${rows[0].device}, PyTorch ${rows[0].torch}, addon libtorch ${info().torchVersion}, ${steps} steps after ${warmup} warm-up`,
);
const lines = [];
const say = (l) => {
  console.log(l);
  lines.push(l);
};
say(
  '| workload | TypeScript (img/s) | C++ loop ms/step | PyTorch eager (img/s) | torch.compile (img/s) | TS / C++ throughput | TS / eager throughput | TS / compile throughput |',
);
say('|---|---|---|---|---|---|---|---|');
for (const r of rows) {
  const batch = Number(r.workload.match(/batch (\d+)/)[1]);
  const ips = (x) => (batch * 1000) / x.msPerStep;
  say(
    `| ${r.workload} | ${fmt({ ...r.ours, flops: r.flops })} (${ips(r.ours).toFixed(0)}) | ${r.ours.cppMsPerStep.toFixed(1)} | ${fmt({ ...r.eager, flops: r.flops })} (${ips(r.eager).toFixed(0)}) | ${fmt({ ...r.compiled, flops: r.flops })} (${ips(r.compiled).toFixed(0)}) | ${(r.ours.cppMsPerStep / r.ours.msPerStep).toFixed(3)} | ${(r.eager.msPerStep / r.ours.msPerStep).toFixed(3)} | ${(r.compiled.msPerStep / r.ours.msPerStep).toFixed(3)} |`,
  );
}
fs.mkdirSync(out, { recursive: true });
fs.writeFileSync(path.join(out, 'cuda-train-step.json'), JSON.stringify(rows, null, 2) + '\n');
fs.writeFileSync(path.join(out, 'cuda-train-step.md'), lines.join('\n') + '\n');
