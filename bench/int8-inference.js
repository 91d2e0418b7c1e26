#!/usr/bin/env node
// Inference of deploy networks (CPU): libtorch float32 vs the fake-quantized simulation vs real int8
// (QNNPACK kernels), whole passes over the same images, interleaved, same threads, one run. Prints a
// table and writes bench/results/int8-inference.json.
'use strict';
const fs = require('fs');
const path = require('path');
const { native } = require('../dist/native');
const { networkSpec, setNumThreads, info } = require('../dist');
const { NativeBackendNetwork } = require('../dist/native-backend');

const threads = Number(process.env.REPOPT_BENCH_THREADS || 2);
const reps = Number(process.env.REPOPT_BENCH_REPS || 5);
setNumThreads(threads);

const cases = [
  { arch: 'RepOpt-VGG-S', size: 28, channels: 1, images: 2048 },
  { arch: 'RepOpt-VGG-A0', size: 32, channels: 3, images: 512 },
];
const batch = 128;
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const seconds = (fn) => {
  const t = process.hrtime.bigint();
  fn();
  return Number(process.hrtime.bigint() - t) / 1e9;
};

const rows = [];
for (const c of cases) {
  let seed = 1;
  const random = () => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed / 2147483648;
  };
  const pixels = Uint8Array.from({ length: c.images * c.channels * c.size * c.size }, () => Math.floor(random() * 256));
  const labels = Int32Array.from({ length: c.images }, (_, i) => i % 10);
  const stats = { mean: Array(c.channels).fill(0.5), std: Array(c.channels).fill(0.25) };
  const ds = new (native().Dataset)(pixels, [c.images, c.channels, c.size, c.size], labels, stats);
  const net = new NativeBackendNetwork(networkSpec(c.arch, { mode: 'deploy', numClasses: 10, inChannels: c.channels }), 'float32', 0);
  const order = ds.permutation(0, 0);
  net.calibrateSync(ds, order, batch, 2);
  const variants = {
    'float32 (libtorch)': () => net.evaluateSync(ds, batch),
    'INT8 simulated (fake-quantize)': () => {
      net.setFakeQuant(true);
      net.evaluateSync(ds, batch);
      net.setFakeQuant(false);
    },
    'INT8 QNNPACK': () => net.evaluateInt8Sync(ds, batch),
  };
  const times = Object.fromEntries(Object.keys(variants).map((k) => [k, []]));
  for (const fn of Object.values(variants)) fn(); // warm-up
  for (let r = 0; r < reps; r++) for (const [k, fn] of Object.entries(variants)) times[k].push(seconds(fn));
  const float = median(times['float32 (libtorch)']);
  for (const k of Object.keys(variants)) {
    const s = median(times[k]);
    rows.push({ arch: c.arch, input: `${c.channels}x${c.size}x${c.size}`, variant: k, imagesPerSecond: c.images / s, vsFloat: float / s });
  }
  order.dispose();
  ds.dispose();
  net.dispose();
}
console.log(
  `deploy-network inference, batch ${batch}, CPU, ${threads} torch threads, median of ${reps} interleaved passes, libtorch ${info().torchVersion}`,
);
console.log('| network | input | variant | images/s | speed vs float32 |');
console.log('|---|---|---|---|---|');
for (const r of rows)
  console.log(`| ${r.arch} | ${r.input} | ${r.variant} | ${Math.round(r.imagesPerSecond)} | ${r.vsFloat.toFixed(2)}x |`);
fs.mkdirSync(path.join(__dirname, 'results'), { recursive: true });
fs.writeFileSync(path.join(__dirname, 'results', 'int8-inference.json'), JSON.stringify({ threads, reps, batch, rows }, null, 2) + '\n');
