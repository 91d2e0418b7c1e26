#!/usr/bin/env node
// The repopt command line: info, demo, hyper-search, train, eval, convert, quantize, export, scales show.
import { Command, InvalidArgumentError, Option } from 'commander';
import * as fs from 'fs';
import * as path from 'path';
import { ARCHS, networkSpec } from './configs';
import { integer, real } from './cli-values';
import { demo } from './demo';
import { addDistributedOptions, addLaunchCommand, distributedConfig, DistributedFlags, launchSelfIfAsked } from './distributed/cli';
import { foldToDeploy } from './fold';
import { quantizeCheckpoint } from './quant/command';
import { hyperSearch, plotScales, scaleStatistics, scaleTable, scaleWarnings } from './hypersearch';
import { NativeBackendNetwork } from './native-backend';
import { PthTensor, writePth } from './pth';
import { writeSafetensors } from './safetensors';
import { formatPercent } from './report';
import { info, setNumThreads } from './runtime';
import { loadScales, validateScales } from './scales';
import { checkpointAt, specOfCheckpoint } from './train/load';
import { channelStats, DataSpec, loadData, uploadDataset } from './train/data';
import { TRAIN_DEFAULTS, train, TrainConfig, TrainMode } from './train/trainer';

function strides(value: string): [number, number, number, number, number] {
  const parts = value.split(',').map(Number);
  if (parts.length !== 5 || !parts.every((s) => s === 1 || s === 2)) throw new InvalidArgumentError('expected five strides of 1 or 2, e.g. 1,2,2,2,2');
  return parts as [number, number, number, number, number];
}

interface TrainFlags extends Partial<DistributedFlags> {
  arch: string;
  dataset: 'fashion-mnist' | 'cifar10' | 'cifar100' | 'folder';
  dataDir?: string;
  imageSize: number;
  trainSubset?: number;
  testSubset?: number;
  epochs: number;
  batchSize: number;
  lr: number;
  weightDecay: number;
  momentum: number;
  nesterov: boolean;
  warmupEpochs: number;
  labelSmoothing: number;
  pad: number;
  flip: boolean;
  resizedCrop?: boolean;
  clipNorm: number;
  forceClip?: boolean;
  skipNonFinite?: boolean;
  strides?: [number, number, number, number, number];
  seed: number;
  threads: number;
  device: string;
  channelsLast?: boolean;
  autocast?: 'bf16' | 'none';
  out: string;
  logEvery: number;
  resume?: boolean;
  finetune?: string;
  stopAfterSteps?: number;
}

function dataSpec(f: Pick<TrainFlags, 'dataset' | 'dataDir' | 'imageSize' | 'trainSubset' | 'testSubset'>): DataSpec {
  const subsets = { ...(f.trainSubset ? { trainSubset: f.trainSubset } : {}), ...(f.testSubset ? { testSubset: f.testSubset } : {}) };
  if (f.dataset === 'fashion-mnist') return { kind: 'fashion-mnist', ...(f.dataDir ? { dir: f.dataDir } : {}), ...subsets };
  if (!f.dataDir) throw new Error(`--dataset ${f.dataset} needs --data-dir`);
  if (f.dataset === 'folder') return { kind: 'folder', dir: f.dataDir, size: f.imageSize, ...subsets };
  return { kind: f.dataset, dir: f.dataDir, ...subsets };
}

function addTrainOptions(cmd: Command, defaults: { epochs: number; out: string }): Command {
  return cmd
    .addOption(new Option('--arch <name>', 'architecture').choices(Object.keys(ARCHS)).default('RepOpt-VGG-S'))
    .addOption(new Option('--dataset <name>', 'data set').choices(['fashion-mnist', 'cifar10', 'cifar100', 'folder']).default('fashion-mnist'))
    .option('--data-dir <dir>', 'data set folder (default for fashion-mnist: /usr/share/datasets/fashion-mnist)')
    .option('--image-size <n>', 'image folder: resize + centre-crop size', integer(1), 224)
    .option('--train-subset <n>', 'train on a class-balanced subset of n images', integer(1))
    .option('--test-subset <n>', 'evaluate on a class-balanced subset of n images', integer(1))
    .option('--epochs <n>', 'epochs', integer(1), defaults.epochs)
    .option('--batch-size <n>', 'batch size', integer(1), 128)
    .option('--lr <x>', 'learning rate for batch 256 (scaled linearly)', real(0), 0.1)
    .option('--weight-decay <x>', 'weight decay (official grouping)', real(0), TRAIN_DEFAULTS.weightDecay)
    .option('--momentum <x>', 'SGD momentum', real(0), TRAIN_DEFAULTS.momentum)
    .option('--no-nesterov', 'plain momentum instead of nesterov')
    .option('--warmup-epochs <n>', 'linear warm-up epochs', integer(0), 0)
    .option('--label-smoothing <x>', 'label smoothing', real(0), TRAIN_DEFAULTS.labelSmoothing)
    .option('--pad <n>', 'random-crop padding (0: no crop)', integer(0), 2)
    .option('--no-flip', 'no random horizontal flip')
    .option('--resized-crop', 'random-resized crop (scale 0.08-1, ratio 3/4-4/3) instead of the padded crop')
    .option('--clip-norm <x>', 'gradient-norm clipping (0: none)', real(0), 0)
    .option('--force-clip', 'allow clipping with a RepOptimizer (breaks the equivalence)')
    .option('--skip-non-finite', 'skip steps with a NaN/Inf loss or gradient (counted) instead of stopping')
    .option('--strides <list>', 'strides of stage0..stage4, e.g. 1,2,2,2,2 for a CIFAR-style stem', strides)
    .option('--seed <n>', 'seed', integer(0), 0)
    .option('--threads <n>', 'torch threads (never more than free cores)', integer(1), 2)
    .option('--device <name>', "'cpu' or 'cuda[:n]'", 'cpu')
    .option('--channels-last', 'channels-last conv weights and inputs (default on CUDA; on CPU it helps wide networks)')
    .option('--no-channels-last', 'contiguous (NCHW) layout')
    .addOption(new Option('--autocast <dtype>', 'forward pass precision (default: bf16 on CUDA, none on CPU)').choices(['bf16', 'none']))
    .option('--out <dir>', 'output folder (checkpoints, metrics.jsonl)', defaults.out)
    .option('--log-every <n>', 'read metrics from the device every n steps', integer(1), 25)
    .option('--resume', 'continue from the newest complete checkpoint in --out')
    .option('--finetune <checkpoint>', 'start from these weights, without the init rule')
    .option('--stop-after-steps <n>', 'stop after n steps, with a checkpoint', integer(1));
}

function trainConfig(f: TrainFlags, mode: TrainMode, scales?: string): TrainConfig {
  return {
    arch: f.arch,
    mode,
    data: dataSpec(f),
    epochs: f.epochs,
    batchSize: f.batchSize,
    lr: f.lr,
    momentum: f.momentum,
    nesterov: f.nesterov,
    weightDecay: f.weightDecay,
    warmupEpochs: f.warmupEpochs,
    labelSmoothing: f.labelSmoothing,
    augment: f.resizedCrop ? { pad: 0, flip: f.flip, resizedCrop: true } : { pad: f.pad, flip: f.flip },
    clipNorm: f.clipNorm,
    ...(f.forceClip ? { forceClip: true } : {}),
    ...(f.skipNonFinite ? { skipNonFinite: true } : {}),
    ...(scales ? { scales } : {}),
    ...(f.strides ? { strides: f.strides } : {}),
    seed: f.seed,
    device: f.device,
    ...(f.channelsLast !== undefined ? { channelsLast: f.channelsLast } : {}),
    ...(f.autocast ? { autocast: f.autocast } : {}),
    threads: f.threads,
    outDir: f.out,
    logEvery: f.logEvery,
    evalBatchSize: TRAIN_DEFAULTS.evalBatchSize,
    ...(f.resume ? { resume: true } : {}),
    ...(f.finetune ? { finetune: f.finetune } : {}),
    ...(f.stopAfterSteps ? { stopAfterSteps: f.stopAfterSteps } : {}),
    ...distributedConfig(f),
  };
}

function writeWeights(file: string, tensors: ReadonlyMap<string, PthTensor>): void {
  if (file.endsWith('.safetensors')) writeSafetensors(file, tensors);
  else if (file.endsWith('.pth') || file.endsWith('.pt')) writePth(file, tensors);
  else throw new Error(`${file}: choose the format by the extension, .pth or .safetensors`);
}

export function buildProgram(): Command {
  const program = new Command('repopt')
    .description('RepOptimizer training on libtorch: hyper-search the scales, train RepOpt-VGG, compare with RepVGG and VGG')
    .showHelpAfterError()
    .addHelpText('after', '\nExit status: 0 on success, 1 on any error (the message says what to change).');

  program
    .command('info')
    .description('print the libtorch runtime: version, CUDA, threads, which binary is loaded')
    .option('--json', 'print JSON')
    .action((opts: { json?: boolean }) => {
      const i = info();
      if (opts.json) {
        process.stdout.write(JSON.stringify(i, null, 2) + '\n');
        return;
      }
      const rows: [string, string][] = [
        ['libtorch', i.torchVersion],
        ['CUDA', i.cuda ? `yes, ${i.deviceCount} device(s)` : i.cudaBuild ? 'no: built with CUDA, but no device is visible' : 'no: CPU-only libtorch'],
        ['cuDNN', i.cudnnVersion === null ? '-' : String(i.cudnnVersion)],
        ['threads', `${i.threads} intra-op, ${i.interopThreads} inter-op`],
        ['C++11 ABI', String(i.cxx11Abi)],
        ['binary', `${i.prebuild ? `prebuild ${i.prebuild}` : i.binary} (${i.binaryPath})`],
      ];
      const width = Math.max(...rows.map(([k]) => k.length));
      process.stdout.write(rows.map(([k, v]) => `${k.padEnd(width)}  ${v}`).join('\n') + '\n');
    });

  program
    .command('demo')
    .description('the main job: hyper-search, then RepOpt-VGG vs RepVGG (folded) vs VGG on Fashion-MNIST, with a report')
    .option('--quick', 'a 2-minute run on a subset (for tests)')
    .option('--out <dir>', 'report folder', 'repopt-demo')
    .option('--seed <n>', 'seed', integer(0), 0)
    .option('--threads <n>', 'torch threads', integer(1), 2)
    .option('--device <name>', "'cpu' or 'cuda[:n]'", 'cpu')
    .option('--data-dir <dir>', 'Fashion-MNIST folder (IDX files)')
    .action(async (o: { quick?: boolean; out: string; seed: number; threads: number; device: string; dataDir?: string }) => {
      const result = await demo({ quick: !!o.quick, out: o.out, seed: o.seed, threads: o.threads, device: o.device, ...(o.dataDir ? { dataDir: o.dataDir } : {}) });
      for (const r of result.rows) process.stdout.write(`${r.name.padEnd(12)} test accuracy ${formatPercent(r.testAccuracy)}\n`);
      process.stdout.write(`report: ${result.report}\n`);
    });

  addDistributedOptions(addTrainOptions(program.command('hyper-search').description('train the HS model (trainable branch scales) and save its scales'), { epochs: 10, out: 'repopt-hs' }))
    .action(async (f: TrainFlags & DistributedFlags, cmd: Command) => {
      if (await launchSelfIfAsked(f, cmd)) return;
      const r = await hyperSearch({ ...trainConfig({ ...f, clipNorm: f.clipNorm || 5 }, 'hs') });
      if (r.train.rank !== 0) return;
      process.stdout.write(scaleTable(r.stats) + '\n');
      for (const w of r.warnings) process.stderr.write(`warning: ${w}\n`);
      await plotScales(path.join(f.out, 'scales.png'), r.stats);
      process.stdout.write(`HS test accuracy ${formatPercent(r.train.test.accuracy)}\nscales: ${r.files.json}, ${r.files.pth}\n`);
    });

  addDistributedOptions(addTrainOptions(program.command('train').description('train one model'), { epochs: 10, out: 'repopt-run' }))
    .addOption(new Option('--mode <mode>', 'target: RepOpt-VGG (needs --scales); vgg; repvgg; hs').choices(['target', 'vgg', 'repvgg', 'hs']).default('target'))
    .option('--scales <file>', 'scale file (JSON or .pth) for mode target')
    .action(async (f: TrainFlags & DistributedFlags & { mode: TrainMode; scales?: string }, cmd: Command) => {
      if (await launchSelfIfAsked(f, cmd)) return;
      const r = await train(trainConfig(f, f.mode, f.scales));
      if (r.rank !== 0) return;
      const skipped = r.skippedSteps ? `, ${r.skippedSteps} step(s) skipped for non-finite values` : '';
      process.stdout.write(`test accuracy ${formatPercent(r.test.accuracy)} after ${r.steps} steps${skipped}; checkpoint ${r.checkpoint}\n`);
    });

  program
    .command('eval')
    .description("evaluate a checkpoint on its data set's test split")
    .requiredOption('--checkpoint <dir>', 'checkpoint folder, or a run folder (its newest checkpoint)')
    .option('--threads <n>', 'torch threads', integer(1), 2)
    .action(async (o: { checkpoint: string; threads: number }) => {
      setNumThreads(o.threads);
      const ckpt = checkpointAt(o.checkpoint);
      const c = ckpt.meta.config;
      const data = await loadData(c.data, c.seed);
      const net = new NativeBackendNetwork(specOfCheckpoint(ckpt), 'float32');
      net.loadStateTensors(ckpt.model);
      const test = uploadDataset(data.test, channelStats(data.train), 'cpu', 0);
      const m = net.handle.evaluate(test, 500);
      process.stdout.write(`${ckpt.dir}: test accuracy ${formatPercent(m.accuracy)}, loss ${m.loss.toFixed(4)} on ${m.count} images\n`);
    });

  program
    .command('convert')
    .description('fold a trained repvgg, RepOpt-VGG or VGG checkpoint into the deploy network (one conv3x3 + bias per block)')
    .requiredOption('--checkpoint <dir>', 'checkpoint of a repvgg, target or vgg run')
    .requiredOption('--out <file>', 'output: *.pth (torch.load reads it) or *.safetensors')
    .action((o: { checkpoint: string; out: string }) => {
      const ckpt = checkpointAt(o.checkpoint);
      const c = ckpt.meta.config;
      if (c.mode === 'hs') throw new Error(`convert folds trained repvgg, target and vgg checkpoints; ${ckpt.dir} is mode hs (its scales are what matters: see scales.json)`);
      const spec = specOfCheckpoint(ckpt);
      const host = new Map([...ckpt.model].map(([k, t]) => [k, { shape: t.shape, data: Float64Array.from(t.data as ArrayLike<number>, Number) }]));
      const folded = foldToDeploy(spec, host);
      writeWeights(o.out, new Map([...folded.state].map(([k, t]) => [k, { dtype: 'float32' as const, shape: [...t.shape], data: Float32Array.from(t.data) }])));
      process.stdout.write(`${o.out}: ${folded.spec.blocks.length} folded blocks\n`);
    });

  program
    .command('quantize')
    .description('INT8: fold a checkpoint, calibrate, compare float vs simulated vs real int8 accuracy; optionally fine-tune with QAT; export')
    .requiredOption('--checkpoint <dir>', 'checkpoint folder, or a run folder (its newest checkpoint)')
    .option('--calib-batches <n>', 'training batches for calibration', integer(1), 8)
    .option('--batch-size <n>', 'calibration batch size', integer(1), 128)
    .addOption(new Option('--observer <kind>', 'activation range observer').choices(['minmax', 'percentile']).default('minmax'))
    .option('--percentile <p>', 'percentile observer: upper percentile in (50, 100]', real(50), 99.99)
    .option('--qat-epochs <k>', 'quantization-aware fine-tuning epochs (target and vgg runs; GradMults stay on)', integer(0), 0)
    .option('--qat-lr <x>', 'QAT learning rate for batch 256 (default: the run\'s / 10)', real(0))
    .option('--threads <n>', 'torch threads', integer(1), 2)
    .option('--out <dir>', 'output folder (default <run>/int8)')
    .action(async (o: { checkpoint: string; calibBatches: number; batchSize: number; observer: 'minmax' | 'percentile'; percentile: number; qatEpochs: number; qatLr?: number; threads: number; out?: string }) => {
      const r = await quantizeCheckpoint(o);
      for (const row of r.rows) {
        process.stdout.write(`${row.name.padEnd(16)} float32 ${formatPercent(row.float.accuracy)}  int8 simulated ${formatPercent(row.simulated.accuracy)}  int8 QNNPACK ${formatPercent(row.int8.accuracy)}\n`);
      }
      process.stdout.write(`report: ${r.report}\nint8 model: ${r.int8Model}\n`);
    });

  program
    .command('export')
    .description('write a checkpoint\'s weights as a PyTorch state_dict (.pth, official key names) or safetensors')
    .requiredOption('--checkpoint <dir>', 'checkpoint folder, or a run folder (its newest checkpoint)')
    .requiredOption('--out <file>', 'output file: *.pth or *.safetensors')
    .action((o: { checkpoint: string; out: string }) => {
      const ckpt = checkpointAt(o.checkpoint);
      writeWeights(o.out, ckpt.model);
      process.stdout.write(`${o.out}: ${ckpt.model.size} tensors from ${ckpt.dir}\n`);
    });

  const scales = program.command('scales').description('inspect scale files');
  scales
    .command('show <file>')
    .description('per-block statistics of a scale file (JSON or .pth); with --arch, also check that it fits')
    .addOption(new Option('--arch <name>', 'check the file against this architecture').choices(Object.keys(ARCHS)))
    .option('--plot <png>', 'also plot the statistics')
    .action(async (file: string, o: { arch?: string; plot?: string }) => {
      const set = loadScales(file);
      // Without --arch, find the architecture whose scale keys the file has.
      const arch = o.arch ?? Object.keys(ARCHS).find((a) => {
        try {
          validateScales(networkSpec(a, { mode: 'hs' }), set);
          return true;
        } catch {
          return false;
        }
      });
      if (!arch) throw new Error(`${file}: its ${set.size} keys fit none of ${Object.keys(ARCHS).join(', ')}; pass --arch to see what is missing`);
      const spec = networkSpec(arch, { mode: 'hs' });
      validateScales(spec, set);
      const stats = scaleStatistics(spec, set);
      process.stdout.write(`${file}: ${set.size} tensors, fits ${arch}\n${scaleTable(stats)}\n`);
      for (const w of scaleWarnings(stats)) process.stderr.write(`warning: ${w}\n`);
      if (o.plot) await plotScales(o.plot, stats);
    });
  addLaunchCommand(program, __filename);
  return program;
}

if (require.main === module) {
  buildProgram()
    .parseAsync(process.argv)
    .catch((e: Error) => {
      process.stderr.write(`${e.message.startsWith('repopt: ') ? '' : 'repopt: '}${e.message}\n`);
      process.exit(1);
    });
}
