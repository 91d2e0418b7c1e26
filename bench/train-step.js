#!/usr/bin/env node
// Training steps on CPU, measured side by side in one run, same threads and shapes:
//   - the TypeScript loop (one native call per step, lr set and metrics read as the trainer does)
//   - the same steps in one native call (a pure C++ loop in the addon)
//   - PyTorch eager (Debian's python3-torch, same libtorch version) doing the same step
// for RepOpt-VGG-S at 28x28 batch 64 and RepOpt-VGG-A0 at 32x32 batch 128 (target blocks, RepOptSGD),
// then resident memory after 200 and 2000 steps. First, steps off the JS thread (trainBatch, a
// Promise per step) against steps on it (trainBatchSync): the event-loop delay p99 while training
// (perf_hooks.monitorEventLoopDelay, 1 ms resolution) and the step times, interleaved rounds, with the
// goals p99 <= 20 ms and async within 3 % of sync. Prints tables, writes bench/results/train-step.json.
// REPOPT_BENCH_ONLY=async runs the async section only.
'use strict';
const { spawnSync } = require('child_process');
const { monitorEventLoopDelay } = require('perf_hooks');
const fs = require('fs');
const path = require('path');
const { nativeBackend, networkSpec, setNumThreads, info } = require('../dist');
const { seededRandom, blockGradMults } = require('./common');
const { native } = require('../dist/native');

const threads = Number(process.env.REPOPT_BENCH_THREADS || 2);
const runs = Number(process.env.REPOPT_BENCH_REPS || 5);
const python = process.env.REPOPT_BENCH_PYTHON || '/usr/bin/python3';
setNumThreads(threads);

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const now = () => Number(process.hrtime.bigint()) / 1e6;

function setup(arch, imageShape, batchSize, count, channelsLast) {
  const spec = networkSpec(arch, { mode: 'target', numClasses: 10, inChannels: imageShape[0] });
  const net = nativeBackend.createNetwork(spec, { seed: 0 });
  net.setChannelsLast(channelsLast);
  const random = seededRandom(1);
  const gradMults = blockGradMults(spec, () => 0.5 + random());
  const opt = net.createOptimizer({ type: 'sgd', lr: 0.05, momentum: 0.9, nesterov: true, weightDecay: 4e-5, gradMults });
  const size = imageShape.reduce((a, b) => a * b, 1);
  const images = Uint8Array.from({ length: count * size }, () => Math.floor(random() * 256));
  const labels = Int32Array.from({ length: count }, () => Math.floor(random() * 10));
  const ds = new (native().Dataset)(images, [count, ...imageShape], labels, {
    mean: [0.5, 0.5, 0.5].slice(0, imageShape[0]),
    std: [0.25, 0.25, 0.25].slice(0, imageShape[0]),
  });
  const perm = ds.permutation(0, 0);
  return { spec, net, opt, ds, perm, batches: Math.floor(count / batchSize) };
}

function tsLoop(s, batchSize, steps, offset) {
  for (let k = 0; k < steps; k++) {
    s.opt.setLr(0.05);
    s.net.trainBatchSync(s.opt, s.ds, s.perm, (offset + k) % s.batches, batchSize, { labelSmoothing: 0.1 });
    if ((k + 1) % 20 === 0) s.net.takeTrainMetrics();
  }
  s.net.takeTrainMetrics();
}

// The trainer's loop with steps off the JS thread: one awaited Promise per step.
async function asyncLoop(s, batchSize, steps, offset) {
  for (let k = 0; k < steps; k++) {
    s.opt.setLr(0.05);
    await s.net.trainBatch(s.opt, s.ds, s.perm, (offset + k) % s.batches, batchSize, { labelSmoothing: 0.1 });
    if ((k + 1) % 20 === 0) s.net.takeTrainMetrics();
  }
  s.net.takeTrainMetrics();
}

// The sync loop, yielding to the event loop between steps (as a trainer reporting progress would):
// the delay a timer sees is then one whole step.
async function syncLoopYielding(s, batchSize, steps, offset) {
  for (let k = 0; k < steps; k++) {
    s.opt.setLr(0.05);
    s.net.trainBatchSync(s.opt, s.ds, s.perm, (offset + k) % s.batches, batchSize, { labelSmoothing: 0.1 });
    if ((k + 1) % 20 === 0) s.net.takeTrainMetrics();
    await new Promise((resolve) => setImmediate(resolve));
  }
  s.net.takeTrainMetrics();
}

async function eventLoopP99(loop) {
  const h = monitorEventLoopDelay({ resolution: 1 });
  h.enable();
  await loop();
  h.disable();
  return { p99: h.percentile(99) / 1e6, max: h.max / 1e6, mean: h.mean / 1e6 };
}

async function timedAsync(fn, steps) {
  const t0 = now();
  await fn();
  return (now() - t0) / steps;
}

async function asyncSection() {
  const w = { arch: 'RepOpt-VGG-S', imageShape: [1, 28, 28], batchSize: 64, steps: 30 };
  const s = setup(w.arch, w.imageShape, w.batchSize, w.batchSize * 16, false);
  tsLoop(s, w.batchSize, 3, 0); // warm-up
  await asyncLoop(s, w.batchSize, 3, 0);
  const delayAsync = await eventLoopP99(() => asyncLoop(s, w.batchSize, 2 * w.steps, 0));
  const delaySync = await eventLoopP99(() => syncLoopYielding(s, w.batchSize, 2 * w.steps, 0));
  const sync = [];
  const asy = [];
  // Interleaved rounds, alternating which goes first, so that drifting load hits both alike.
  for (let r = 0; r < 2 * runs; r++) {
    const runSync = () => sync.push(timed(() => tsLoop(s, w.batchSize, w.steps, r * w.steps), w.steps));
    const runAsync = async () => asy.push(await timedAsync(() => asyncLoop(s, w.batchSize, w.steps, r * w.steps), w.steps));
    if (r % 2 === 0) {
      runSync();
      await runAsync();
    } else {
      await runAsync();
      runSync();
    }
  }
  s.perm.dispose();
  s.ds.dispose();
  const result = {
    workload: `${w.arch} ${w.imageShape.join('x')} batch ${w.batchSize}`,
    delayAsync,
    delaySync,
    syncMs: median(sync),
    asyncMs: median(asy),
    rounds: 2 * runs,
  };
  result.ratio = result.asyncMs / result.syncMs;
  const verdict = (ok) => (ok ? 'PASS' : 'FAIL');
  console.log(`steps off the JS thread, CPU, ${threads} torch threads, ${result.workload}, libtorch ${info().torchVersion}`);
  console.log('| loop | event-loop delay p99 ms | max ms | mean ms | ms/step (median of ' + result.rounds + ' interleaved rounds) |');
  console.log('|---|---|---|---|---|');
  console.log(
    `| async (trainBatch, awaited) | ${delayAsync.p99.toFixed(2)} | ${delayAsync.max.toFixed(2)} | ${delayAsync.mean.toFixed(2)} | ${result.asyncMs.toFixed(2)} |`,
  );
  console.log(
    `| sync (trainBatchSync) | ${delaySync.p99.toFixed(2)} | ${delaySync.max.toFixed(2)} | ${delaySync.mean.toFixed(2)} | ${result.syncMs.toFixed(2)} |`,
  );
  console.log(`goal event-loop delay p99 <= 20 ms with async steps: ${delayAsync.p99.toFixed(2)} ms ${verdict(delayAsync.p99 <= 20)}`);
  console.log(
    `goal async within 3 % of sync: async / sync = ${result.ratio.toFixed(4)} (${((result.ratio - 1) * 100).toFixed(2)} %) ${verdict(result.ratio <= 1.03)}`,
  );
  return result;
}

function cppLoop(s, batchSize, steps, offset) {
  // Consecutive batches in one call: keep within the permutation.
  let done = 0;
  while (done < steps) {
    const start = (offset + done) % s.batches;
    const count = Math.min(steps - done, s.batches - start);
    s.net.trainBatchSync(s.opt, s.ds, s.perm, start, batchSize, { labelSmoothing: 0.1 }, count);
    done += count;
  }
  s.net.takeTrainMetrics();
}

function timed(fn, steps) {
  const t0 = now();
  fn();
  return (now() - t0) / steps;
}

async function main() {
  const asyncSteps = await asyncSection();
  if (process.env.REPOPT_BENCH_ONLY === 'async') {
    fs.mkdirSync(path.join(__dirname, 'results'), { recursive: true });
    fs.writeFileSync(
      path.join(__dirname, 'results', 'train-step-async.json'),
      JSON.stringify({ threads, runs, asyncSteps }, null, 2) + '\n',
    );
    return;
  }
  const workloads = [
    { arch: 'RepOpt-VGG-S', imageShape: [1, 28, 28], batchSize: 64, steps: 30 },
    { arch: 'RepOpt-VGG-A0', imageShape: [3, 32, 32], batchSize: 128, steps: 6 },
  ];
  const rows = [];
  for (const w of workloads) {
    const count = w.batchSize * 16;
    // NCHW: the trainer's CPU default and PyTorch's; channels-last as the option.
    const s = setup(w.arch, w.imageShape, w.batchSize, count, false);
    const cl = setup(w.arch, w.imageShape, w.batchSize, count, true);
    tsLoop(s, w.batchSize, 3, 0); // warm-up
    tsLoop(cl, w.batchSize, 3, 0);
    const cfg = {
      spec: s.spec,
      imageShape: w.imageShape,
      batchSize: w.batchSize,
      count,
      steps: w.steps,
      runs: 1,
      warmup: 3,
      threads,
      optimizer: 'repopt-sgd',
    };
    const ts = [];
    const cpp = [];
    const tsCl = [];
    const eager = [];
    let pytorch = '';
    // Interleaved runs (the PyTorch peer too), so that drifting machine load hits all alike.
    for (let r = 0; r < runs; r++) {
      ts.push(timed(() => tsLoop(s, w.batchSize, w.steps, r * w.steps), w.steps));
      cpp.push(timed(() => cppLoop(s, w.batchSize, w.steps, r * w.steps), w.steps));
      tsCl.push(timed(() => tsLoop(cl, w.batchSize, w.steps, r * w.steps), w.steps));
      const py = spawnSync(python, [path.join(__dirname, 'python', 'train_step.py'), JSON.stringify(cfg)], {
        encoding: 'utf8',
        env: { ...process.env, OMP_NUM_THREADS: String(threads) },
      });
      if (py.status !== 0) throw new Error(`PyTorch peer failed (${python}; apt-get install python3-torch): ${py.stderr}`);
      const result = JSON.parse(py.stdout.trim().split('\n').pop());
      eager.push(result.msPerStep[0]);
      pytorch = result.torch;
    }
    rows.push({
      workload: `${w.arch} ${w.imageShape.join('x')} batch ${w.batchSize}`,
      tsMs: median(ts),
      cppMs: median(cpp),
      tsClMs: median(tsCl),
      pytorchMs: median(eager),
      pytorch,
    });
    for (const x of [s, cl]) {
      x.perm.dispose();
      x.ds.dispose();
    }
  }

  // Resident memory: 200 steps, then 1800 more (the TypeScript loop, RepOpt-VGG-S).
  const w = workloads[0];
  const s = setup(w.arch, w.imageShape, w.batchSize, w.batchSize * 16, false);
  tsLoop(s, w.batchSize, 200, 0);
  global.gc?.();
  const rss200 = process.memoryUsage().rss;
  tsLoop(s, w.batchSize, 1800, 200);
  global.gc?.();
  const rss2000 = process.memoryUsage().rss;

  const mib = (b) => (b / (1 << 20)).toFixed(1);
  console.log(
    `training step, CPU, ${threads} torch threads, median of ${runs} runs, libtorch ${info().torchVersion} (addon) / PyTorch ${rows[0].pytorch} (eager)`,
  );
  console.log(
    '| workload (target + RepOptSGD) | TS loop ms/step | C++ loop ms/step | TS throughput / C++ | PyTorch eager ms/step | TS time / PyTorch | TS channels-last ms/step | TS CL / PyTorch |',
  );
  console.log('|---|---|---|---|---|---|---|---|');
  for (const r of rows) {
    const cells = [
      r.tsMs.toFixed(2),
      r.cppMs.toFixed(2),
      (r.cppMs / r.tsMs).toFixed(3),
      r.pytorchMs.toFixed(2),
      (r.tsMs / r.pytorchMs).toFixed(3),
      r.tsClMs.toFixed(2),
      (r.tsClMs / r.pytorchMs).toFixed(3),
    ];
    console.log(`| ${r.workload} | ${cells.join(' | ')} |`);
  }
  console.log('TS and C++ loops: NCHW (the CPU default, as PyTorch). Time ratios below 1.000: faster than PyTorch eager.');
  console.log(
    `RSS after 200 steps ${mib(rss200)} MiB, after 2000 steps ${mib(rss2000)} MiB (${((rss2000 / rss200 - 1) * 100).toFixed(1)} %)`,
  );
  fs.mkdirSync(path.join(__dirname, 'results'), { recursive: true });
  fs.writeFileSync(
    path.join(__dirname, 'results', 'train-step.json'),
    JSON.stringify({ threads, runs, asyncSteps, rows, rss200, rss2000 }, null, 2) + '\n',
  );
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
