// The one table of defaults: the public API (lib/api/), the CLI's options (lib/commands/) and the
// demo read their defaults from here, so a value changed here changes everywhere.

/** Training: what `train()` / `repopt train` use for every field not given. */
export const TRAIN_DEFAULTS = {
  arch: 'RepOpt-VGG-S',
  mode: 'target',
  data: { kind: 'fashion-mnist' },
  epochs: 10,
  batchSize: 128,
  /** For batch 256; scaled linearly with the batch size (the official recipe). */
  lr: 0.1,
  momentum: 0.9,
  nesterov: true,
  weightDecay: 4e-5,
  warmupEpochs: 0,
  labelSmoothing: 0.1,
  augment: { pad: 2, flip: true },
  clipNorm: 0,
  seed: 0,
  device: 'cpu',
  /** Never more than the free cores: OpenMP slows down ~18x when oversubscribed. */
  threads: 2,
  logEvery: 25,
  evalBatchSize: 500,
  /** Micro-batches per optimizer step. */
  accumulate: 1,
} as const;

/** `mixup` (`--mixup`, `--cutmix`): what a mixup option leaves out. The alphas are 0 (off) as in the
 * official config; prob and switchProb are timm's. */
export const MIXUP_DEFAULTS = { mixupAlpha: 0, cutmixAlpha: 0, prob: 1, switchProb: 0.5 } as const;

/** `recipe: 'imagenet'` (`--recipe imagenet`): the official RepOpt-VGG ImageNet recipe over TRAIN_DEFAULTS;
 * the options given override it. `folder` applies to image-folder data. */
export const RECIPES = {
  imagenet: {
    epochs: 120,
    /** 8 GPUs x 32 in the official runs. */
    batchSize: 256,
    lr: 0.1,
    momentum: 0.9,
    nesterov: true,
    weightDecay: 4e-5,
    warmupEpochs: 5,
    labelSmoothing: 0.1,
    clipNorm: 0,
    /** AUG.PRESET raug15: RandomResizedCrop, flip, the official RandAugPolicy(magnitude=15); no mixup. */
    augment: { flip: true, randAugment: 'raug15' },
    /** The official evaluation: shorter side to 224, centre crop 224. */
    folder: { size: 224, cropFraction: 1, normalization: 'imagenet' },
  },
} as const;

export type RecipeName = keyof typeof RECIPES;

/** Image-folder data sets (`data: { kind: 'folder', size }`): resize + centre-crop size. */
export const IMAGE_FOLDER_DEFAULTS = { size: 224 } as const;

/** Hyper-search differs from training in clipping: the HS scales explode without it (as in the
 * official recipe). */
export const HYPER_SEARCH_DEFAULTS = { clipNorm: 5 } as const;

const QUANTIZE_CALIB_BATCHES = 8;

/** Data parallelism: a collective that does not finish in this time fails (a hung or lost worker). */
export const DISTRIBUTED_DEFAULTS = { timeoutMs: 300_000 } as const;

/** `repopt demo`: its budgets (the full run fits 15 minutes on 2 CPU cores, --quick 2 minutes). The
 * short budgets train at twice the default lr; everything else is TRAIN_DEFAULTS. */
export const DEMO_DEFAULTS = {
  arch: 'RepOpt-VGG-S',
  lr: 0.2,
  full: { trainSubset: undefined, testSubset: undefined, hsEpochs: 5, epochs: 10, calibBatches: QUANTIZE_CALIB_BATCHES },
  quick: { trainSubset: 6000, testSubset: 2000, hsEpochs: 1, epochs: 2, calibBatches: 4 },
} as const;

/** Where the CLI writes when --out is not given. */
export const OUT_DIRS = { train: 'repopt-run', hyperSearch: 'repopt-hs', demo: 'repopt-demo' } as const;

/** `quantize()` / `repopt quantize`. */
export const QUANTIZE_DEFAULTS = {
  calibBatches: QUANTIZE_CALIB_BATCHES,
  batchSize: 128,
  observer: 'minmax',
  percentile: 99.99,
  qatEpochs: 0,
  /** QAT lr: this fraction of the run's lr when not given. */
  qatLrFactor: 0.1,
} as const;

/** `exportOnnx()` / `repopt export --format onnx|onnx-int8`: the float model; the graph normalises
 * pixels in [0, 1] itself. */
export const EXPORT_ONNX_DEFAULTS = { int8: false, normalization: 'graph' } as const;

/** `evaluate()` / `repopt eval`. */
export const EVALUATE_DEFAULTS = { batchSize: TRAIN_DEFAULTS.evalBatchSize, threads: TRAIN_DEFAULTS.threads } as const;

/** `options` over `defaults`, where an option given as undefined counts as not given. */
export function withDefaults<D extends object, O extends object>(defaults: D, options: O): D & O {
  const given = Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined));
  return { ...defaults, ...given } as D & O;
}
