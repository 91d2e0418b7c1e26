// The one map from API parameter paths to the CLI flags that set them: an OptionError names the API
// parameter, and the CLI prints the flag in its place.
import { OptionError } from '../option-error';

export const CLI_FLAGS: Readonly<Record<string, string>> = {
  arch: '--arch',
  mode: '--mode',
  data: '--dataset',
  'data.kind': '--dataset',
  'data.dir': '--data-dir',
  'data.size': '--image-size',
  'data.loader': '--loader',
  'data.threads': '--loader-threads',
  'data.prefetch': '--prefetch',
  'data.cropFraction': '--crop-fraction',
  'data.shrinkOnLoad': '--no-shrink-on-load',
  'data.normalization': '--normalization',
  'augment.cropScale': '--crop-scale',
  'augment.cropRatio': '--crop-ratio',
  'augment.randAugment': '--rand-augment',
  recipe: '--recipe',
  'data.trainSubset': '--train-subset',
  'data.testSubset': '--test-subset',
  epochs: '--epochs',
  batchSize: '--batch-size',
  lr: '--lr',
  momentum: '--momentum',
  nesterov: '--no-nesterov',
  weightDecay: '--weight-decay',
  warmupEpochs: '--warmup-epochs',
  labelSmoothing: '--label-smoothing',
  'augment.pad': '--pad',
  'augment.flip': '--no-flip',
  'augment.resizedCrop': '--resized-crop',
  clipNorm: '--clip-norm',
  forceClip: '--force-clip',
  skipNonFinite: '--skip-non-finite',
  scales: '--scales',
  strides: '--strides',
  seed: '--seed',
  threads: '--threads',
  device: '--device',
  channelsLast: '--channels-last',
  autocast: '--autocast',
  outDir: '--out',
  out: '--out',
  logEvery: '--log-every',
  resume: '--resume',
  finetune: '--finetune',
  stopAfterSteps: '--stop-after-steps',
  overwrite: '--overwrite',
  allowConfigChange: '--allow-config-change',
  batchNorm: '--batch-norm',
  accumulate: '--accumulate',
  ema: '--ema-decay',
  'ema.decay': '--ema-decay',
  mixup: '--mixup',
  'mixup.mixupAlpha': '--mixup',
  'mixup.cutmixAlpha': '--cutmix',
  'mixup.prob': '--mixup-prob',
  'mixup.switchProb': '--mixup-switch-prob',
  'distributed.backend': '--dist-backend',
  'distributed.timeoutMs': '--dist-timeout',
  'distributed.connectTimeoutMs': '--dist-connect-timeout',
  'distributed.bucketCapMb': '--bucket-cap-mb',
  'distributed.checkReplicas': '--check-replicas',
  checkpoint: '--checkpoint',
  calibBatches: '--calib-batches',
  'quant.calibBatches': '--calib-batches',
  observer: '--observer',
  'quant.observer': '--observer',
  percentile: '--percentile',
  'quant.percentile': '--percentile',
  qatEpochs: '--qat-epochs',
  qatLr: '--qat-lr',
  int8: '--format',
  normalization: '--normalization',
};

/** The flag for an API parameter path; the path itself where no flag sets it (e.g. evalBatchSize). */
export function flagOf(option: string): string {
  return CLI_FLAGS[option] ?? option;
}

/** An error's message for the command line: an OptionError's leading option name, and its related
 * names wherever they stand as whole words, replaced by their flags. (The option itself is replaced
 * only at the start: later in the message the same word may be part of a value, e.g. a folder 'out'.) */
export function cliMessage(e: Error): string {
  if (!(e instanceof OptionError)) return e.message;
  let message = leading(e.option).test(e.message) ? flagOf(e.option) + e.message.slice(e.option.length) : e.message;
  for (const name of e.related) message = message.replace(wholeWord(name), flagOf(name));
  return message;
}

const escaped = (name: string) => name.replace(/\./g, '\\.');
const leading = (name: string) => new RegExp(`^${escaped(name)}(?![\\w/-]|\\.\\w)`);
// Not inside a longer name ('quant.calibBatches', '--lr', 'data' of 'data.kind') nor a path ('runs/out/a').
const wholeWord = (name: string) => new RegExp(`(?<![\\w./-])${escaped(name)}(?![\\w/-]|\\.\\w)`, 'g');
