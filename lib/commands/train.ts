// `repopt hyper-search` and `repopt train`: flags to TrainOptions, a progress bar fed by the run's
// events, and a summary line; the training itself is the public API's.
import { type Command, InvalidArgumentError, Option } from 'commander';
import * as path from 'path';
import { hyperSearch, plotScales, scaleTable, train } from '../api';
import { ARCHS } from '../configs';
import { HYPER_SEARCH_DEFAULTS, IMAGE_FOLDER_DEFAULTS, MIXUP_DEFAULTS, OUT_DIRS, TRAIN_DEFAULTS } from '../defaults';

import { formatPercent } from '../report';
import type { TrainMode, TrainOptions } from '../train/config';
import type { DataSpec } from '../train/data';
import { showProgress } from '../train/progress';
import type { TrainingRun } from '../train/run';
import type { TrainResult } from '../train/trainer';
import { addDistributedOptions, distributedConfig, type DistributedFlags, launchSelfIfAsked } from './launch';
import { integer, real, threadsFlag } from './values';

function strides(value: string): [number, number, number, number, number] {
  const parts = value.split(',').map(Number);
  if (parts.length !== 5 || !parts.every((s) => s === 1 || s === 2))
    throw new InvalidArgumentError('expected five strides of 1 or 2, e.g. 1,2,2,2,2');
  return parts as [number, number, number, number, number];
}

interface TrainFlags extends DistributedFlags {
  arch: string;
  dataset: 'fashion-mnist' | 'cifar10' | 'cifar100' | 'folder';
  dataDir?: string;
  imageSize?: number;
  loader?: 'stream' | 'memory';
  loaderThreads?: number;
  prefetch?: number;
  cropFraction?: number;
  shrinkOnLoad?: boolean;
  normalization?: 'sample' | 'imagenet';
  cropScale?: [number, number];
  cropRatio?: [number, number];
  randAugment?: string;
  recipe?: 'imagenet';
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
  pad?: number;
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
  overwrite?: boolean;
  allowConfigChange?: boolean;
  finetune?: string;
  stopAfterSteps?: number;
  accumulate: number;
  emaDecay?: number;
  mixup?: number;
  cutmix?: number;
  mixupProb?: number;
  mixupSwitchProb?: number;
}

type DataFlags = Pick<
  TrainFlags,
  | 'dataset'
  | 'dataDir'
  | 'imageSize'
  | 'trainSubset'
  | 'testSubset'
  | 'loader'
  | 'loaderThreads'
  | 'prefetch'
  | 'cropFraction'
  | 'shrinkOnLoad'
  | 'normalization'
>;

export function dataSpec(f: DataFlags): DataSpec {
  const subsets = { ...(f.trainSubset ? { trainSubset: f.trainSubset } : {}), ...(f.testSubset ? { testSubset: f.testSubset } : {}) };
  if (f.dataset === 'fashion-mnist') return { kind: 'fashion-mnist', ...(f.dataDir ? { dir: f.dataDir } : {}), ...subsets };
  if (!f.dataDir) throw new Error(`--dataset ${f.dataset} needs --data-dir`);
  if (f.dataset === 'folder')
    return {
      kind: 'folder',
      dir: f.dataDir,
      size: f.imageSize ?? IMAGE_FOLDER_DEFAULTS.size,
      ...(f.loader ? { loader: f.loader } : {}),
      ...(f.loaderThreads ? { threads: f.loaderThreads } : {}),
      ...(f.prefetch ? { prefetch: f.prefetch } : {}),
      ...(f.cropFraction ? { cropFraction: f.cropFraction } : {}),
      ...(f.shrinkOnLoad === false ? { shrinkOnLoad: false } : {}),
      ...(f.normalization ? { normalization: f.normalization } : {}),
      ...subsets,
    };
  return { kind: f.dataset, dir: f.dataDir, ...subsets };
}

/** '0.08,1' -> [0.08, 1] */
function range(value: string): [number, number] {
  const parts = value.split(',').map(Number);
  if (parts.length !== 2 || !parts.every(Number.isFinite)) throw new InvalidArgumentError('expected two numbers min,max, e.g. 0.08,1');
  return parts as [number, number];
}

function addTrainOptions(cmd: Command, defaults: { out: string; clipNorm: number }): Command {
  const d = TRAIN_DEFAULTS;
  return cmd
    .addOption(new Option('--arch <name>', 'architecture').choices(Object.keys(ARCHS)).default(d.arch))
    .addOption(new Option('--dataset <name>', 'data set').choices(['fashion-mnist', 'cifar10', 'cifar100', 'folder']).default(d.data.kind))
    .option('--data-dir <dir>', 'data set folder (default for fashion-mnist: /usr/share/datasets/fashion-mnist)')
    .option('--image-size <n>', `image folder: the training and evaluation image size (default ${IMAGE_FOLDER_DEFAULTS.size})`, integer(1))
    .addOption(
      new Option('--loader <kind>', 'image folder: stream (decode per batch; default) or memory (decode once, hold in memory)').choices([
        'stream',
        'memory',
      ]),
    )
    .option('--loader-threads <n>', 'image folder stream: decoding threads (default: the core count)', integer(1))
    .option('--prefetch <n>', 'image folder stream: batches decoded ahead (default 2)', integer(1))
    .option('--crop-fraction <x>', 'image folder stream, evaluation: resize to size / x, centre-crop size (default 0.875)', real(0))
    .option('--no-shrink-on-load', 'image folder stream: decode JPEGs at full size (no DCT-domain downscaling)')
    .addOption(
      new Option('--normalization <kind>', "image folder stream: mean/std of 512 training images (sample, default) or ImageNet's").choices([
        'sample',
        'imagenet',
      ]),
    )
    .addOption(new Option('--recipe <name>', "start from a recipe's settings (flags given override them)").choices(['imagenet']))
    .option('--train-subset <n>', 'train on a class-balanced subset of n images', integer(1))
    .option('--test-subset <n>', 'evaluate on a class-balanced subset of n images', integer(1))
    .option('--epochs <n>', 'epochs', integer(1), d.epochs)
    .option('--batch-size <n>', 'batch size', integer(1), d.batchSize)
    .option('--lr <x>', 'learning rate for batch 256 (scaled linearly)', real(0), d.lr)
    .option('--weight-decay <x>', 'weight decay (official grouping)', real(0), d.weightDecay)
    .option('--momentum <x>', 'SGD momentum', real(0), d.momentum)
    .option('--no-nesterov', 'plain momentum instead of nesterov')
    .option('--warmup-epochs <n>', 'linear warm-up epochs', integer(0), d.warmupEpochs)
    .option('--label-smoothing <x>', 'label smoothing', real(0), d.labelSmoothing)
    .option('--pad <n>', `random-crop padding (0: no crop; default ${d.augment.pad}, 0 for a streamed image folder)`, integer(0))
    .option('--no-flip', 'no random horizontal flip')
    .option('--resized-crop', 'random-resized crop (scale 0.08-1, ratio 3/4-4/3) instead of the padded crop')
    .option('--crop-scale <min,max>', 'random-resized crop: area fraction range (default 0.08,1)', range)
    .option('--crop-ratio <min,max>', 'random-resized crop: aspect ratio range (default 0.75,1.333)', range)
    .option('--rand-augment <spec>', "image folder stream: RandAugment, timm's form (e.g. rand-m9-mstd0.5-inc1) or the official raug15")
    .option('--clip-norm <x>', 'gradient-norm clipping (0: none)', real(0), defaults.clipNorm)
    .option('--force-clip', 'allow clipping with a RepOptimizer (breaks the equivalence)')
    .option('--skip-non-finite', 'skip steps with a NaN/Inf loss or gradient (counted) instead of stopping')
    .option('--strides <list>', 'strides of stage0..stage4, e.g. 1,2,2,2,2 for a CIFAR-style stem', strides)
    .option('--seed <n>', 'seed', integer(0), d.seed)
    .option('--threads <n>', 'torch threads (at most the cores)', threadsFlag, d.threads)
    .option('--device <name>', "'cpu' or 'cuda[:n]'", d.device)
    .option('--channels-last', 'channels-last conv weights and inputs (default on CUDA; on CPU it helps wide networks)')
    .option('--no-channels-last', 'contiguous (NCHW) layout')
    .addOption(new Option('--autocast <dtype>', 'forward pass precision (default: bf16 on CUDA, none on CPU)').choices(['bf16', 'none']))
    .option('--out <dir>', 'output folder (checkpoints, metrics.jsonl)', defaults.out)
    .option('--log-every <n>', 'read metrics from the device every n steps', integer(1), d.logEvery)
    .option('--resume', 'continue from the newest complete checkpoint in --out (with the same settings)')
    .option('--overwrite', 'start a new run in an --out that holds one, moving the old run aside to <out>.replaced-<UTC time>')
    .option('--allow-config-change', "with --resume: continue with settings that differ from the checkpoint's (recorded in metrics.jsonl)")
    .option('--finetune <checkpoint>', 'start from these weights (a checkpoint, a run, or an official .pth), without the init rule')
    .option('--stop-after-steps <n>', 'stop after n steps, with a checkpoint', integer(1))
    .option(
      '--accumulate <n>',
      'split each batch into n micro-batches, one optimizer step (n divides --batch-size)',
      integer(1),
      d.accumulate,
    )
    .option('--ema-decay <d>', 'keep an EMA of the weights with this decay per step (evaluated each epoch, checkpointed)', real(0))
    .option('--mixup <alpha>', 'Mixup with lambda ~ Beta(alpha, alpha) and soft targets (0: off)', real(0))
    .option('--cutmix <alpha>', 'CutMix with lambda ~ Beta(alpha, alpha) (0: off; with --mixup, one of the two per step)', real(0))
    .option('--mixup-prob <p>', `probability that a step is mixed (default ${MIXUP_DEFAULTS.prob})`, real(0))
    .option('--mixup-switch-prob <p>', `with --mixup and --cutmix: probability of CutMix (default ${MIXUP_DEFAULTS.switchProb})`, real(0));
}

/** With --recipe, the flags left at their defaults give way to the recipe's settings. */
function recipeFlags<F extends TrainFlags>(f: F, cmd: Command): F {
  if (!f.recipe) return f;
  const kept = new Set(['dataset', 'out', 'mode']);
  return Object.fromEntries(Object.entries(f).filter(([key]) => kept.has(key) || cmd.getOptionValueSource(key) !== 'default')) as F;
}

function mixupOptions(f: TrainFlags): TrainOptions['mixup'] {
  return {
    ...(f.mixup !== undefined ? { mixupAlpha: f.mixup } : {}),
    ...(f.cutmix !== undefined ? { cutmixAlpha: f.cutmix } : {}),
    ...(f.mixupProb !== undefined ? { prob: f.mixupProb } : {}),
    ...(f.mixupSwitchProb !== undefined ? { switchProb: f.mixupSwitchProb } : {}),
  };
}

function trainOptions(f: TrainFlags, mode: TrainMode, scales?: string): TrainOptions {
  return {
    recipe: f.recipe,
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
    augment: {
      pad: f.pad,
      flip: f.flip,
      ...(f.resizedCrop ? { resizedCrop: true } : {}),
      ...(f.cropScale ? { cropScale: f.cropScale } : {}),
      ...(f.cropRatio ? { cropRatio: f.cropRatio } : {}),
      ...(f.randAugment ? { randAugment: f.randAugment } : {}),
    },
    clipNorm: f.clipNorm,
    forceClip: f.forceClip,
    skipNonFinite: f.skipNonFinite,
    scales,
    strides: f.strides,
    seed: f.seed,
    device: f.device,
    channelsLast: f.channelsLast,
    autocast: f.autocast,
    threads: f.threads,
    outDir: f.out,
    logEvery: f.logEvery,
    resume: f.resume,
    overwrite: f.overwrite,
    allowConfigChange: f.allowConfigChange,
    finetune: f.finetune,
    stopAfterSteps: f.stopAfterSteps,
    accumulate: f.accumulate,
    ...(f.emaDecay !== undefined ? { ema: { decay: f.emaDecay } } : {}),
    ...([f.mixup, f.cutmix, f.mixupProb, f.mixupSwitchProb].some((v) => v !== undefined) ? { mixup: mixupOptions(f) } : {}),
    ...distributedConfig(f),
  };
}

// Ctrl-C: the run stops after the step in flight and writes a checkpoint (a second Ctrl-C: Node's default).
function stopOnCtrlC(): AbortSignal {
  const stop = new AbortController();
  process.once('SIGINT', () => stop.abort());
  return stop.signal;
}

async function untilDone<R>(run: TrainingRun<R>, label: string): Promise<R> {
  showProgress(run, label);
  return run.result;
}

function interrupted(r: TrainResult): void {
  if (r.rank === 0)
    process.stderr.write(`repopt: interrupted after ${r.steps} steps; checkpoint ${r.checkpoint || '(none)'}; continue with --resume\n`);
  process.exitCode = 130;
}

export function addTrainCommands(program: Command): void {
  const hs = program.command('hyper-search').description('train the HS model (trainable branch scales) and save its scales');
  addDistributedOptions(addTrainOptions(hs, { out: OUT_DIRS.hyperSearch, clipNorm: HYPER_SEARCH_DEFAULTS.clipNorm })).action(
    async (f: TrainFlags, cmd: Command) => {
      if (await launchSelfIfAsked(f, cmd)) return;
      const r = await untilDone(hyperSearch(trainOptions(recipeFlags(f, cmd), 'hs'), { signal: stopOnCtrlC() }), `hs ${f.arch}`);
      if (r.train.status === 'aborted') return interrupted(r.train);
      if (r.train.rank !== 0) return;
      process.stdout.write(scaleTable(r.stats) + '\n');
      for (const w of r.warnings) process.stderr.write(`warning: ${w}\n`);
      await plotScales(path.join(f.out, 'scales.png'), r.stats);
      process.stdout.write(`HS test accuracy ${formatPercent(r.train.test.accuracy)}\nscales: ${r.files.json}, ${r.files.pth}\n`);
      r.train.network.dispose();
      r.train.ema?.network.dispose();
    },
  );

  const trainCmd = program.command('train').description('train one model');
  addDistributedOptions(addTrainOptions(trainCmd, { out: OUT_DIRS.train, clipNorm: TRAIN_DEFAULTS.clipNorm }))
    .addOption(
      new Option('--mode <mode>', 'target: RepOpt-VGG (needs --scales); vgg; repvgg; hs')
        .choices(['target', 'vgg', 'repvgg', 'hs'])
        .default(TRAIN_DEFAULTS.mode),
    )
    .option('--scales <file>', 'scale file (JSON or .pth) for mode target')
    .action(async (f: TrainFlags & { mode: TrainMode; scales?: string }, cmd: Command) => {
      if (await launchSelfIfAsked(f, cmd)) return;
      const r = await untilDone(
        train(trainOptions(recipeFlags(f, cmd), f.mode, f.scales), { signal: stopOnCtrlC() }),
        `${f.mode} ${f.arch}`,
      );
      r.network.dispose();
      r.ema?.network.dispose();
      if (r.status === 'aborted') return interrupted(r);
      if (r.rank !== 0) return;
      const skipped = r.skippedSteps ? `, ${r.skippedSteps} step(s) skipped for non-finite values` : '';
      process.stdout.write(
        `test accuracy ${formatPercent(r.test.accuracy)} after ${r.steps} steps${skipped}; checkpoint ${r.checkpoint}\n`,
      );
    });
}
