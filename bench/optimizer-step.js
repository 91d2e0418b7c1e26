#!/usr/bin/env node
// Optimizer step on RepOpt-VGG-B1's parameters (CPU): libtorch SGD vs RepOptSGD (compact GradMult,
// fused and reference steps; full GradMult), same parameters, same fixed gradients, same threads, one
// run. Prints a table and writes bench/results/optimizer-step.json.
'use strict';
const fs = require('fs');
const path = require('path');
const { nativeBackend, networkSpec, setNumThreads, info, loadScales, repConvsOf, gradMultOf } = require('../dist');

const threads = Number(process.env.REPOPT_BENCH_THREADS || 2);
const arch = process.env.REPOPT_BENCH_ARCH || 'RepOpt-VGG-B1';
const reps = Number(process.env.REPOPT_BENCH_REPS || 7);
setNumThreads(threads);

const spec = networkSpec(arch, { mode: 'target', numClasses: 1000 });
const scales = loadScales(path.join(__dirname, '..', 'test', 'fixtures', 'official-scales', 'RepOpt-VGG-B1-scales.pth'));
const gradMults = repConvsOf(spec, scales).map((c) => gradMultOf(c, 'sgd'));
const base = { type: 'sgd', lr: 0.1, momentum: 0.9, nesterov: true, weightDecay: 4e-5 };

const variants = [
  ['libtorch SGD', base, null],
  ['RepOptSGD compact, fused', { ...base, gradMults }, 'fused'],
  ['RepOptSGD compact, foreach', { ...base, gradMults }, 'foreach'],
  ['RepOptSGD compact, reference', { ...base, gradMults }, 'reference'],
  ['RepOptSGD full, fused', { ...base, gradMults, gradMultStorage: 'full' }, 'fused'],
];

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const net = nativeBackend.createNetwork(spec, { seed: 0 });
const rows = [];
for (const [name, optSpec, impl] of variants) {
  const opt = net.createOptimizer(optSpec);
  if (impl) opt.setImplementation(impl);
  net.timeOptimizerSteps(opt, 2); // warm-up: momentum buffers allocated, pages touched
  const times = net.timeOptimizerSteps(opt, reps);
  rows.push({ name, msPerStep: median(Array.from(times)), gradMultBytes: opt.gradMultBytes });
  opt.dispose();
}
const sgd = rows[0].msPerStep;
const params =
  spec.blocks.length &&
  require('../dist/spec')
    .parameterInfo(spec)
    .reduce((n, p) => n + p.shape.reduce((a, b) => a * b, 1), 0);
console.log(
  `optimizer step, ${arch} (${(params / 1e6).toFixed(2)}M params, fp32), CPU, ${threads} torch threads, median of ${reps}, libtorch ${info().torchVersion}`,
);
console.log('| optimizer | ms/step | vs libtorch SGD | GradMult memory |');
console.log('|---|---|---|---|');
for (const r of rows) {
  const mem = r.gradMultBytes >= 1 << 20 ? `${(r.gradMultBytes / (1 << 20)).toFixed(1)} MiB` : `${(r.gradMultBytes / 1024).toFixed(1)} KiB`;
  console.log(`| ${r.name} | ${r.msPerStep.toFixed(1)} | ${(r.msPerStep / sgd).toFixed(3)}x | ${mem} |`);
}
fs.mkdirSync(path.join(__dirname, 'results'), { recursive: true });
fs.writeFileSync(path.join(__dirname, 'results', 'optimizer-step.json'), JSON.stringify({ arch, threads, reps, rows }, null, 2) + '\n');
