// What a training run is: the full config (every field set), the options a caller gives (anything
// left out comes from TRAIN_DEFAULTS), and the one check of both.
import { ARCHS } from '../configs';
import { TRAIN_DEFAULTS, withDefaults } from '../defaults';
import type { GroupSettings } from '../distributed/worker';
import type { BlockMode } from '../spec';
import type { DataSpec } from './data';

/** What is trained: target (RepOpt-VGG: target blocks + RepOptSGD from scales), vgg (target blocks,
 * plain SGD), repvgg (three-branch blocks), hs (hyper-search: trainable scales). */
export type TrainMode = 'target' | 'vgg' | 'repvgg' | 'hs';

export interface Augment {
  /** Random crop of the original size out of the image zero-padded by `pad` pixels (0: no crop). */
  readonly pad: number;
  readonly flip: boolean;
  /** torchvision's RandomResizedCrop (scale 0.08-1, ratio 3/4-4/3) instead of the padded crop. */
  readonly resizedCrop?: boolean;
}

export interface TrainConfig {
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
  /** Continue from the newest complete checkpoint in outDir/checkpoints. */
  readonly resume?: boolean;
  /** Start from these weights (no init rule), e.g. to fine-tune: a checkpoint folder, or a run folder
   * (its newest complete checkpoint). */
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
}

/** What a caller gives: where to write, and anything else that differs from TRAIN_DEFAULTS. */
export type TrainOptions = Partial<Omit<TrainConfig, 'outDir' | 'augment'>> & {
  readonly outDir: string;
  readonly augment?: Partial<Augment>;
};

const DATA_KINDS: readonly string[] = ['fashion-mnist', 'cifar10', 'cifar100', 'folder'] satisfies DataSpec['kind'][];

export function blockMode(mode: TrainMode): BlockMode {
  return mode === 'vgg' ? 'target' : mode;
}

/** The full config: the options over TRAIN_DEFAULTS, checked. Throws an Error saying what to change. */
export function resolveTrainConfig(options: TrainOptions): TrainConfig {
  if (typeof options !== 'object' || options === null) throw new TypeError('train: expected an options object with at least outDir');
  const augment: Augment = withDefaults(TRAIN_DEFAULTS.augment, options.augment ?? {});
  const config: TrainConfig = {
    ...withDefaults(TRAIN_DEFAULTS, options),
    augment: augment.resizedCrop ? { ...augment, pad: 0 } : augment,
  };
  checkConfig(config);
  return config;
}

/** Checks a config before anything runs; throws an Error saying what to change. */
export function checkConfig(c: TrainConfig): void {
  const positive = (v: number) => Number.isInteger(v) && v > 0;
  if (typeof c.outDir !== 'string' || c.outDir === '') throw new TypeError('outDir must name the run folder');
  if (!['target', 'vgg', 'repvgg', 'hs'].includes(c.mode))
    throw new RangeError(`mode must be target, vgg, repvgg or hs, got ${String(c.mode)}`);
  if (!positive(c.epochs)) throw new RangeError(`epochs must be a positive integer, got ${c.epochs}`);
  if (!positive(c.batchSize)) throw new RangeError(`batch size must be a positive integer, got ${c.batchSize}`);
  if (!positive(c.logEvery)) throw new RangeError(`logEvery must be a positive integer, got ${c.logEvery}`);
  if (!(c.lr > 0 && Number.isFinite(c.lr))) throw new RangeError(`lr must be a positive number, got ${c.lr}`);
  if (!(c.clipNorm >= 0)) throw new RangeError(`clip norm must be >= 0, got ${c.clipNorm}`);
  if (!(c.arch in ARCHS)) throw new RangeError(`arch must be one of ${Object.keys(ARCHS).join(', ')}; got ${String(c.arch)}`);
  if (!DATA_KINDS.includes(c.data?.kind))
    throw new RangeError(`data.kind must be one of ${DATA_KINDS.join(', ')}; got ${String(c.data?.kind)}`);
  if (!(c.labelSmoothing >= 0 && c.labelSmoothing <= 1)) throw new RangeError(`label smoothing must be in [0, 1], got ${c.labelSmoothing}`);
  if (!(c.momentum >= 0 && Number.isFinite(c.momentum))) throw new RangeError(`momentum must be >= 0, got ${c.momentum}`);
  if (!(c.weightDecay >= 0 && Number.isFinite(c.weightDecay))) throw new RangeError(`weight decay must be >= 0, got ${c.weightDecay}`);
  if (!(Number.isInteger(c.warmupEpochs) && c.warmupEpochs >= 0))
    throw new RangeError(`warmup epochs must be an integer >= 0, got ${c.warmupEpochs}`);
  if (!(Number.isInteger(c.augment.pad) && c.augment.pad >= 0))
    throw new RangeError(`augment.pad must be an integer >= 0, got ${c.augment.pad}`);
  if (!positive(c.threads)) throw new RangeError(`threads must be a positive integer, got ${c.threads}`);
  if (!positive(c.evalBatchSize)) throw new RangeError(`eval batch size must be a positive integer, got ${c.evalBatchSize}`);
  if (c.stopAfterSteps !== undefined && !positive(c.stopAfterSteps)) {
    throw new RangeError(`stopAfterSteps must be a positive integer, got ${c.stopAfterSteps}`);
  }
  if (c.mode === 'target' && !c.scales)
    throw new Error(
      'mode target (RepOpt-VGG) needs --scales: a scale file from `repopt hyper-search` or an official RepOpt-VGG-*-scales.pth',
    );
  if (c.mode !== 'target' && c.scales) throw new Error(`--scales only applies to mode target, not ${c.mode}`);
  if (c.mode === 'target' && c.clipNorm > 0 && !c.forceClip) {
    throw new Error(
      'gradient clipping breaks the RepOptimizer equivalence (the GradMult update is no longer the CSLA update); drop ' +
        '--clip-norm or pass --force-clip',
    );
  }
  if (c.resume && c.finetune) throw new Error('--resume and --finetune exclude each other');
  if (c.quant && c.mode !== 'target' && c.mode !== 'vgg')
    throw new Error(`quantization-aware training fine-tunes plain networks (target, vgg), not ${c.mode}`);
  if (c.quant && !positive(c.quant.calibBatches))
    throw new RangeError(`QAT calibration needs at least 1 batch, got ${c.quant.calibBatches}`);
  if (c.batchNorm !== undefined && !['batch', 'frozen', 'sync'].includes(c.batchNorm))
    throw new RangeError(`batch norm must be batch, frozen or sync, got ${c.batchNorm}`);
}
