// What a training run is: the full config (every field set), the options a caller gives (anything
// left out comes from TRAIN_DEFAULTS), and the one check of both.
import { ARCHS } from '../configs';
import { IMAGE_FOLDER_DEFAULTS, MIXUP_DEFAULTS, RECIPES, type RecipeName, TRAIN_DEFAULTS, withDefaults } from '../defaults';
import { OptionError } from '../option-error';
import { info } from '../runtime';
import type { GroupSettings } from '../distributed/worker';
import type { BlockMode } from '../spec';
import { type DataSpec, type FolderSpec, isStreamed } from './data';
import type { MixupConfig } from './mixup';
import { parseRandAugment } from '../data/randaugment';
import { checkOutDirPath } from './run-folder';
import { scaledLr } from './schedule';

/** What is trained: target (RepOpt-VGG: target blocks + RepOptSGD from scales), vgg (target blocks,
 * plain SGD), repvgg (three-branch blocks), hs (hyper-search: trainable scales). */
export type TrainMode = 'target' | 'vgg' | 'repvgg' | 'hs';

export interface Augment {
  /** Random crop of the original size out of the image zero-padded by `pad` pixels (0: no crop). */
  readonly pad: number;
  readonly flip: boolean;
  /** torchvision's RandomResizedCrop (scale 0.08-1, ratio 3/4-4/3) instead of the padded crop (always on for
   * a streamed image folder). */
  readonly resizedCrop?: boolean;
  /** RandomResizedCrop's area fraction and aspect-ratio ranges (default [0.08, 1] and [3/4, 4/3]). */
  readonly cropScale?: readonly [number, number];
  readonly cropRatio?: readonly [number, number];
  /** RandAugment after the crop and flip (a streamed image folder): timm's 'rand-m9-mstd0.5-inc1' form, or the
   * official preset 'raug15'. */
  readonly randAugment?: string;
}

export interface TrainConfig {
  /** The recipe the settings started from (see RECIPES), for the record. */
  readonly recipe?: RecipeName;
  readonly arch: string;
  readonly mode: TrainMode;
  readonly data: DataSpec;
  readonly epochs: number;
  readonly batchSize: number;
  /** lr for batch 256 (scaled linearly). */
  readonly lr: number;
  readonly momentum: number;
  readonly nesterov: boolean;
  readonly weightDecay: number;
  readonly warmupEpochs: number;
  readonly labelSmoothing: number;
  readonly augment: Augment;
  /** Gradient-norm clipping (0: none). Refused with a RepOptimizer unless forceClip. */
  readonly clipNorm: number;
  readonly forceClip?: boolean;
  /** Scale file (JSON or .pth) for mode target. */
  readonly scales?: string;
  readonly identityInit?: 'trained' | 'one';
  readonly strides?: readonly [number, number, number, number, number];
  readonly seed: number;
  readonly device: string;
  /** Channels-last conv weights and inputs. Default: on for CUDA; off on CPU, where it helps wide
   * networks (RepOpt-VGG-A0: ~8 % faster) and slows narrow ones (RepOpt-VGG-S: ~10 % slower). */
  readonly channelsLast?: boolean;
  /** bf16 autocast of the forward pass. Default: 'bf16' on CUDA, 'none' on CPU. */
  readonly autocast?: 'bf16' | 'none';
  readonly threads: number;
  readonly outDir: string;
  /** Read loss and accuracy off the device (and emit a 'step' event) every this many steps. */
  readonly logEvery: number;
  readonly evalBatchSize: number;
  /** Stop after this many steps (with a checkpoint), e.g. to split a run. */
  readonly stopAfterSteps?: number;
  /** Skip steps whose loss or gradients are not finite (counted) instead of stopping. */
  readonly skipNonFinite?: boolean;
  /** Continue from the newest complete checkpoint in outDir/checkpoints. Its settings must match
   * (arch, data, batch size, lr, epochs, ...) unless allowConfigChange. */
  readonly resume?: boolean;
  /** Start a new run in an outDir that holds one: the old run folder is moved aside whole, to a
   * sibling named <outDir>.replaced-<UTC time> (without it, such a folder is refused). */
  readonly overwrite?: boolean;
  /** With resume: continue with settings that differ from the checkpoint's; the differences are
   * reported (a 'warning' event) and recorded in metrics.jsonl. The network (arch, mode, data kind)
   * never changes. */
  readonly allowConfigChange?: boolean;
  /** Start from these weights (no init rule), e.g. to fine-tune: a checkpoint folder, a run folder (its
   * newest complete checkpoint), or an official checkpoint / state dict file (.pth) of this arch. */
  readonly finetune?: string;
  /** Quantization-aware training (target and vgg): calibrate the int8 ranges on this many training
   * batches, then train the fake-quantized network (ranges follow the batches; GradMults stay on). */
  readonly quant?: { readonly calibBatches: number; readonly observer?: 'minmax' | 'percentile'; readonly percentile?: number };
  /** BatchNorm in training: per-process batch statistics ('batch', the default, also under data
   * parallelism), the running statistics ('frozen': eval-mode BN, statistics not updated), or
   * statistics over all processes ('sync': SyncBatchNorm; the same as 'batch' in one process). */
  readonly batchNorm?: 'batch' | 'frozen' | 'sync';
  /** Data parallelism: the rendezvous comes from RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT (set by
   * `repopt train --nproc` / `repopt launch` / torchrun); batchSize is the global batch, split evenly. */
  readonly distributed?: GroupSettings & {
    /** Gradient bucket size for the all-reduces (c10d Reducer), MB. */
    readonly bucketCapMb?: number;
    /** Checks after every step that all ranks hold bit-identical parameters (costs a collective). */
    readonly checkReplicas?: boolean;
  };
  /** Micro-batches per optimizer step: batchSize stays the batch of one step, split into this many
   * forward + backward passes of batchSize / accumulate (BatchNorm statistics are per micro-batch). */
  readonly accumulate?: number;
  /** An EMA of the weights, updated after every optimizer step: ema = decay * ema + (1 - decay) * weights
   * over every parameter and BatchNorm buffer; evaluated each epoch, kept in every checkpoint (ema.pth). */
  readonly ema?: { readonly decay: number };
  /** Mixup / CutMix with soft-target cross-entropy (timm's Mixup, mode 'batch', correct_lam); the
   * fields not given come from MIXUP_DEFAULTS. */
  readonly mixup?: MixupConfig;
}

/** What a caller gives: where to write, and anything else that differs from TRAIN_DEFAULTS. */
export type TrainOptions = Partial<Omit<TrainConfig, 'outDir' | 'augment' | 'mixup' | 'data'>> & {
  readonly outDir: string;
  /** An image folder's size defaults to IMAGE_FOLDER_DEFAULTS.size (or the recipe's). */
  readonly data?: Exclude<DataSpec, FolderSpec> | (Omit<FolderSpec, 'size'> & { readonly size?: number });
  readonly augment?: Partial<Augment>;
  readonly mixup?: Partial<MixupConfig>;
};

const DATA_KINDS: readonly string[] = ['fashion-mnist', 'cifar10', 'cifar100', 'folder'] satisfies DataSpec['kind'][];

export function blockMode(mode: TrainMode): BlockMode {
  return mode === 'vgg' ? 'target' : mode;
}

// Bounds of what libtorch and the data split accept, checked here so that the message names the option.
/** lr, momentum, weight decay and clipping reach float32 tensors as scalars. */
const FLOAT32_MAX = 3.4028234663852886e38;
const FLOAT32_TEXT = '3.4e38';
/** The class-balanced subsets split with seed (train) and seed + 1 (test), seeds below 2^32. */
const MAX_SEED = 2 ** 32 - 2;

/** Throws unless `lr` (for batch 256) is positive and, scaled to `batchSize` as the schedule runs it,
 * within float32 (lr 1e308 would overflow it). `option`, `batchName`: how the caller names the two. */
export function checkLr(lr: number, batchSize: number, option = 'lr', batchName = 'batchSize'): void {
  if (!(lr > 0 && Number.isFinite(lr))) throw new OptionError(option, `${option} must be a positive number, got ${lr}`);
  if (!(scaledLr(lr, batchSize) <= FLOAT32_MAX))
    throw new OptionError(
      option,
      `${option} ${lr} is too large for ${batchName} ${batchSize}: the peak learning rate ${option} x ${batchSize} / 256 ` +
        `must be at most ${FLOAT32_TEXT} (float32), got ${scaledLr(lr, batchSize)}`,
      [batchName, option],
    );
}

/** Throws unless `threads` is a positive integer (more than the cores is capped when used, with a
 * warning); `option`: the caller's parameter name. */
export function checkThreads(threads: number, option = 'threads'): void {
  if (!(Number.isInteger(threads) && threads >= 1)) throw new OptionError(option, `${option} must be a positive integer, got ${threads}`);
}

/** Throws unless `device` names a device this binary can use: 'cpu', or 'cuda[:n]' with CUDA. */
export function checkDevice(device: string): void {
  const cuda = /^cuda(?::(\d+))?$/.exec(device);
  if (device !== 'cpu' && !cuda) throw new OptionError('device', `device must be 'cpu', 'cuda' or 'cuda:<n>', got '${String(device)}'`);
  if (!cuda) return;
  const runtime = info();
  const index = Number(cuda[1] ?? 0);
  if (!runtime.cuda)
    throw new OptionError(
      'device',
      `device ${device}: CUDA is not available to this binary (libtorch ${runtime.torchVersion}` +
        `${runtime.cudaBuild ? ', built for CUDA, but no device is usable' : ', CPU-only build'}; \`repopt info\` shows the build)`,
    );
  if (index >= runtime.deviceCount)
    throw new OptionError('device', `device ${device}: there are ${runtime.deviceCount} CUDA device(s), numbered from 0`);
}

export function checkDataSpec(data: DataSpec): void {
  if (data.kind !== 'fashion-mnist' && !(typeof data.dir === 'string' && data.dir !== ''))
    throw new OptionError('data.dir', `data.dir must name the folder of the ${data.kind} data set, got ${JSON.stringify(data.dir)}`, [
      'data.kind',
    ]);
  if (data.kind === 'folder') checkFolderSpec(data);
  for (const subset of ['trainSubset', 'testSubset'] as const) {
    const count = data[subset];
    if (count !== undefined && !(Number.isInteger(count) && count > 0))
      throw new OptionError(`data.${subset}`, `data.${subset} must be a positive integer (a number of images), got ${count}`);
  }
}

function checkFolderSpec(data: FolderSpec): void {
  const positive = (v: unknown) => Number.isInteger(v) && (v as number) > 0;
  if (!positive(data.size)) throw new OptionError('data.size', `data.size must be a positive integer (the image size), got ${data.size}`);
  if (data.loader !== undefined && data.loader !== 'stream' && data.loader !== 'memory')
    throw new OptionError('data.loader', `data.loader must be stream or memory, got ${String(data.loader)}`);
  const streamOnly = ['threads', 'prefetch', 'cropFraction', 'shrinkOnLoad', 'normalization'] as const;
  if (data.loader === 'memory')
    for (const key of streamOnly)
      if (data[key] !== undefined)
        throw new OptionError(`data.${key}`, `data.${key} applies to data.loader stream, not memory`, ['data.loader']);
  for (const key of ['threads', 'prefetch'] as const)
    if (data[key] !== undefined && !positive(data[key]))
      throw new OptionError(`data.${key}`, `data.${key} must be a positive integer, got ${data[key]}`);
  if (data.cropFraction !== undefined && !(data.cropFraction > 0 && data.cropFraction <= 1))
    throw new OptionError('data.cropFraction', `data.cropFraction must be in (0, 1], got ${data.cropFraction}`);
  if (data.shrinkOnLoad !== undefined && typeof data.shrinkOnLoad !== 'boolean')
    throw new OptionError('data.shrinkOnLoad', `data.shrinkOnLoad must be true or false, got ${String(data.shrinkOnLoad)}`);
  const n = data.normalization;
  const channels = (v: unknown, low: number) =>
    Array.isArray(v) && v.length === 3 && v.every((x) => typeof x === 'number' && Number.isFinite(x) && x > low);
  if (
    n !== undefined &&
    n !== 'sample' &&
    n !== 'imagenet' &&
    !(typeof n === 'object' && channels(n.mean, -Infinity) && channels(n.std, 0))
  )
    throw new OptionError(
      'data.normalization',
      `data.normalization must be sample, imagenet or { mean, std } with 3 finite numbers each (std > 0), got ${JSON.stringify(n)}`,
    );
}

/** Throws unless a [min, max] range satisfies 0 < min <= max (<= 1 for areas). */
function checkRange(option: string, range: unknown, maximum: number): void {
  const ok =
    Array.isArray(range) &&
    range.length === 2 &&
    range.every((v) => typeof v === 'number') &&
    range[0] > 0 &&
    range[0] <= range[1] &&
    range[1] <= maximum;
  if (!ok)
    throw new OptionError(
      option,
      `${option} must be [min, max] with 0 < min <= max${maximum < Infinity ? ` <= ${maximum}` : ''}, got ${JSON.stringify(range)}`,
    );
}

/** The full config: the options over TRAIN_DEFAULTS, checked. Throws an Error saying what to change. */
export function resolveTrainConfig(options: TrainOptions): TrainConfig {
  if (typeof options !== 'object' || options === null) throw new TypeError('train: expected an options object with at least outDir');
  if (options.recipe !== undefined && !Object.hasOwn(RECIPES, options.recipe))
    throw new OptionError('recipe', `recipe must be one of ${Object.keys(RECIPES).join(', ')}; got ${String(options.recipe)}`);
  const {
    folder: recipeFolder,
    augment: recipeAugment,
    ...recipe
  } = options.recipe ? RECIPES[options.recipe] : { folder: {}, augment: {} };
  const data = options.data?.kind === 'folder' ? withDefaults({ ...IMAGE_FOLDER_DEFAULTS, ...recipeFolder }, options.data) : options.data;
  // A streamed image folder is cropped as ImageNet recipes do (RandomResizedCrop), not padded.
  const streamed = isStreamed(data ?? TRAIN_DEFAULTS.data);
  const augment: Augment = withDefaults(
    { ...TRAIN_DEFAULTS.augment, ...(streamed ? { pad: 0, resizedCrop: true } : {}), ...recipeAugment },
    options.augment ?? {},
  );
  const config: TrainConfig = {
    ...withDefaults({ ...TRAIN_DEFAULTS, ...recipe }, { ...options, ...(data ? { data } : {}) }),
    // (A pad given with a streamed folder is left for checkConfig to refuse.)
    augment: augment.resizedCrop && !streamed ? { ...augment, pad: 0 } : augment,
    mixup: options.mixup ? withDefaults(MIXUP_DEFAULTS, options.mixup) : undefined,
  };
  checkConfig(config);
  return config;
}

/** Checks a config before anything runs; throws an Error saying what to change. */
export function checkConfig(c: TrainConfig): void {
  const positive = (v: number) => Number.isInteger(v) && v > 0;
  checkOutDirPath(c.outDir, 'outDir');
  if (!['target', 'vgg', 'repvgg', 'hs'].includes(c.mode))
    throw new OptionError('mode', `mode must be target, vgg, repvgg or hs, got ${String(c.mode)}`);
  if (!positive(c.epochs)) throw new OptionError('epochs', `epochs must be a positive integer, got ${c.epochs}`);
  if (!positive(c.batchSize)) throw new OptionError('batchSize', `batchSize must be a positive integer, got ${c.batchSize}`);
  if (!positive(c.logEvery)) throw new OptionError('logEvery', `logEvery must be a positive integer, got ${c.logEvery}`);
  checkLr(c.lr, c.batchSize);
  if (!(c.clipNorm >= 0 && c.clipNorm <= FLOAT32_MAX))
    throw new OptionError('clipNorm', `clipNorm must be in [0, ${FLOAT32_TEXT}], got ${c.clipNorm}`);
  if (!(c.arch in ARCHS)) throw new OptionError('arch', `arch must be one of ${Object.keys(ARCHS).join(', ')}; got ${String(c.arch)}`);
  if (!DATA_KINDS.includes(c.data?.kind))
    throw new OptionError('data.kind', `data.kind must be one of ${DATA_KINDS.join(', ')}; got ${String(c.data?.kind)}`);
  checkDataSpec(c.data);
  if (c.strides !== undefined && !(Array.isArray(c.strides) && c.strides.length === 5 && c.strides.every((s) => s === 1 || s === 2)))
    throw new OptionError('strides', `strides must be five strides of 1 or 2 (stage0..stage4), got ${JSON.stringify(c.strides)}`);
  if (!(c.labelSmoothing >= 0 && c.labelSmoothing <= 1))
    throw new OptionError('labelSmoothing', `labelSmoothing must be in [0, 1], got ${c.labelSmoothing}`);
  if (!(c.momentum >= 0 && c.momentum <= FLOAT32_MAX))
    throw new OptionError('momentum', `momentum must be in [0, ${FLOAT32_TEXT}], got ${c.momentum}`);
  if (!(c.weightDecay >= 0 && c.weightDecay <= FLOAT32_MAX))
    throw new OptionError('weightDecay', `weightDecay must be in [0, ${FLOAT32_TEXT}], got ${c.weightDecay}`);
  if (!(Number.isInteger(c.warmupEpochs) && c.warmupEpochs >= 0))
    throw new OptionError('warmupEpochs', `warmupEpochs must be an integer >= 0, got ${c.warmupEpochs}`);
  if (!(Number.isInteger(c.augment.pad) && c.augment.pad >= 0))
    throw new OptionError('augment.pad', `augment.pad must be an integer >= 0, got ${c.augment.pad}`);
  if (c.augment.cropScale !== undefined) checkRange('augment.cropScale', c.augment.cropScale, 1);
  if (c.augment.cropRatio !== undefined) checkRange('augment.cropRatio', c.augment.cropRatio, Infinity);
  if (c.augment.randAugment !== undefined) {
    if (!isStreamed(c.data))
      throw new OptionError('augment.randAugment', 'augment.randAugment applies to a streamed image folder (data.kind folder)', [
        'data.kind',
      ]);
    parseRandAugment(c.augment.randAugment, {}, 'augment.randAugment');
  }
  if (isStreamed(c.data)) {
    if (c.augment.pad > 0 || !c.augment.resizedCrop)
      throw new OptionError(
        'augment.pad',
        'a streamed image folder is cropped with RandomResizedCrop (augment.cropScale, augment.cropRatio), not padded; drop augment.pad',
        ['augment.resizedCrop', 'data.loader'],
      );
    if (c.quant)
      throw new OptionError(
        'quant',
        'quant: quantization-aware training reads an in-memory data set; use data.loader memory for the image folder',
        ['data.loader'],
      );
  }
  checkThreads(c.threads);
  if (!positive(c.evalBatchSize))
    throw new OptionError('evalBatchSize', `evalBatchSize must be a positive integer, got ${c.evalBatchSize}`);
  if (c.stopAfterSteps !== undefined && !positive(c.stopAfterSteps)) {
    throw new OptionError('stopAfterSteps', `stopAfterSteps must be a positive integer, got ${c.stopAfterSteps}`);
  }
  if (!(Number.isInteger(c.seed) && c.seed >= 0 && c.seed <= MAX_SEED))
    throw new OptionError('seed', `seed must be an integer in [0, ${MAX_SEED}], got ${c.seed}`);
  checkDevice(c.device);
  if (c.mode === 'target' && !c.scales)
    throw new OptionError(
      'scales',
      'scales is needed for mode target (RepOpt-VGG): a scale file from `repopt hyper-search` or an official RepOpt-VGG-*-scales.pth',
      ['mode'],
    );
  if (c.mode !== 'target' && c.scales) throw new OptionError('scales', `scales only applies to mode target, not ${c.mode}`, ['mode']);
  if (c.mode === 'target' && c.clipNorm > 0 && !c.forceClip) {
    throw new OptionError(
      'clipNorm',
      'clipNorm: gradient clipping breaks the RepOptimizer equivalence (the GradMult update is no longer the CSLA update); ' +
        'drop clipNorm or pass forceClip',
      ['clipNorm', 'forceClip'],
    );
  }
  if (c.resume && c.finetune) throw new OptionError('resume', 'resume and finetune exclude each other', ['finetune']);
  if (c.resume && c.overwrite)
    throw new OptionError(
      'overwrite',
      'overwrite and resume exclude each other (one moves the run in outDir aside, the other continues it)',
      ['resume', 'outDir'],
    );
  if (c.quant && c.mode !== 'target' && c.mode !== 'vgg')
    throw new OptionError('quant', `quant: quantization-aware training fine-tunes plain networks (target, vgg), not ${c.mode}`);
  if (c.quant && !positive(c.quant.calibBatches))
    throw new OptionError('quant.calibBatches', `quant.calibBatches must be a positive integer, got ${c.quant.calibBatches}`);
  if (c.batchNorm !== undefined && !['batch', 'frozen', 'sync'].includes(c.batchNorm))
    throw new OptionError('batchNorm', `batchNorm must be batch, frozen or sync, got ${c.batchNorm}`);
  checkRecipeOptions(c);
}

/** accumulate, ema and mixup. */
function checkRecipeOptions(c: TrainConfig): void {
  const accumulate = c.accumulate ?? 1;
  if (!(Number.isInteger(accumulate) && accumulate >= 1))
    throw new OptionError('accumulate', `accumulate must be a positive integer, got ${accumulate}`);
  if (c.batchSize % accumulate !== 0)
    throw new OptionError(
      'accumulate',
      `accumulate ${accumulate} must divide batchSize ${c.batchSize} (the batch of one optimizer step, split into micro-batches)`,
      ['batchSize'],
    );
  if (c.ema !== undefined) {
    const decay = c.ema?.decay;
    if (!(typeof decay === 'number' && decay >= 0 && decay < 1))
      throw new OptionError('ema.decay', `ema.decay must be a number in [0, 1), got ${String(decay)}`);
    if (c.quant)
      throw new OptionError('ema', 'ema: the EMA network is not fake-quantized; drop ema for quantization-aware training', ['quant']);
  }
  if (c.mixup !== undefined) {
    const m = c.mixup;
    for (const key of ['mixupAlpha', 'cutmixAlpha'] as const)
      if (!(m[key] >= 0 && Number.isFinite(m[key])))
        throw new OptionError(`mixup.${key}`, `mixup.${key} must be a number >= 0 (0: off), got ${m[key]}`);
    for (const key of ['prob', 'switchProb'] as const)
      if (!(m[key] >= 0 && m[key] <= 1)) throw new OptionError(`mixup.${key}`, `mixup.${key} must be in [0, 1], got ${m[key]}`);
  }
}
