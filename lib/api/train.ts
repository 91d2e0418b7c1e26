// train() and hyperSearch(): a run starts at once and reports through events; `await run.result`.
import { HYPER_SEARCH_DEFAULTS, withDefaults } from '../defaults';
import { type HyperSearchResult, runHyperSearch } from '../hypersearch';
import { OptionError } from '../option-error';
import { loadScales } from '../scales';
import { resolveTrainConfig, type TrainOptions } from '../train/config';
import type { TrainTestData } from '../train/data';
import { TrainingRun } from '../train/run';
import { runTraining, type TrainResult } from '../train/trainer';

export interface RunOptions {
  /** Stops the run after the step in flight; a checkpoint is written and `resume: true` continues
   * from it exactly. The result's status is then 'aborted'. */
  readonly signal?: AbortSignal;
  /** Data already loaded (e.g. shared by several runs); otherwise read from the options' `data`. The
   * options must still say what it is (`data`): checkpoints record it, and resuming, `evaluate` and
   * `quantize` reload it from there. */
  readonly data?: TrainTestData;
}

/** Trains one model: `mode` target (RepOpt-VGG, needs `scales`), vgg, repvgg or hs. The options are
 * checked now (a bad one throws here); every one left out comes from TRAIN_DEFAULTS. */
export function train(options: TrainOptions, run: RunOptions = {}): TrainingRun<TrainResult> {
  const config = resolveTrainConfig(options);
  checkPreloaded(options, run);
  if (config.mode === 'target') checkScaleFile(config.scales!);
  return new TrainingRun((emit) => runTraining(config, { ...run, emit }));
}

/** Reads the scale file now, so that a missing, unreadable or degenerate one fails before the run starts. */
function checkScaleFile(file: string): void {
  try {
    loadScales(file, 'scales');
  } catch (e) {
    const message = (e as Error).message;
    throw new OptionError('scales', message.startsWith('scales ') ? message : `scales ${message}`);
  }
}

function checkPreloaded(options: TrainOptions, run: RunOptions): void {
  if (run.data && options?.data === undefined) {
    throw new TypeError('train: data given in memory needs options.data saying what it is (checkpoints record it to reload it)');
  }
}

export type HyperSearchOptions = Omit<TrainOptions, 'mode' | 'scales'>;

/** Trains the hyper-search model (trainable branch scales) and saves its scales as scales.json and
 * scales.pth in outDir: the constants of RepOpt-VGG (`train({ mode: 'target', scales })`). */
export function hyperSearch(options: HyperSearchOptions, run: RunOptions = {}): TrainingRun<HyperSearchResult> {
  const config = resolveTrainConfig({ ...withDefaults(HYPER_SEARCH_DEFAULTS, options), mode: 'hs' });
  checkPreloaded(options, run);
  return new TrainingRun((emit) => runHyperSearch(config, { ...run, emit }));
}
