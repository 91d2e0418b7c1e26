// Finding a run's checkpoint and the network it holds (eval, convert, export, quantize).
import * as fs from 'fs';
import * as path from 'path';
import { ARCHS, networkSpec } from '../configs';
import { OptionError } from '../option-error';
import { TRAIN_DEFAULTS } from '../defaults';
import { officialModel, readOfficialStateDict } from '../official';
import type { NetworkSpec } from '../spec';
import {
  CHECKPOINT_FORMAT,
  CHECKPOINT_VERSION,
  type DamagedCheckpoint,
  damagedCheckpointWarning,
  readCheckpoint,
  readLatestCheckpoint,
} from './checkpoint';
import type { TrainConfig, TrainMode } from './config';
import type { DataSpec } from './data';
import type { TrainCheckpoint, TrainCheckpointExtra } from './trainer';

/** By default a damaged checkpoint passed over is said on stderr: the user asked for the newest one. */
function warnOnStderr(damaged: DamagedCheckpoint): void {
  process.stderr.write(`warning: ${damagedCheckpointWarning(damaged)}\n`);
}

/** How to read an official checkpoint file, which records no config: the architecture (default: the one
 * whose shapes the weights have) and the data set it is evaluated on (default: TRAIN_DEFAULTS.data). */
export interface OfficialCheckpointOptions {
  readonly arch?: string;
  readonly data?: DataSpec;
}

/** Whether `where` names a file (an official checkpoint or state dict) rather than a repopt folder. */
export function isCheckpointFile(where: string): boolean {
  return typeof where === 'string' && fs.existsSync(where) && fs.statSync(where).isFile();
}

/** An official checkpoint file (lib/official.ts) as a checkpoint at step 0 whose config is TRAIN_DEFAULTS
 * with the architecture and mode its weights hold. */
function officialCheckpoint(file: string, options: OfficialCheckpointOptions): TrainCheckpoint {
  if (options.arch !== undefined && !Object.hasOwn(ARCHS, options.arch))
    throw new OptionError('arch', `arch must be one of ${Object.keys(ARCHS).join(', ')}, got ${JSON.stringify(options.arch)}`);
  const { arch, mode, state } = officialModel(readOfficialStateDict(file), file, options.arch);
  const config = {
    ...TRAIN_DEFAULTS,
    augment: { ...TRAIN_DEFAULTS.augment },
    outDir: path.dirname(file),
    arch,
    mode: mode as TrainMode,
    data: options.data ?? TRAIN_DEFAULTS.data,
  } satisfies TrainConfig;
  return {
    dir: file,
    meta: { format: CHECKPOINT_FORMAT, version: CHECKPOINT_VERSION, step: 0, epoch: 0, config, rngState: '', files: {} },
    model: state,
    optimizer: new Uint8Array(0),
  };
}

/** A checkpoint folder, or the newest complete checkpoint of a checkpoints/ folder or a run's --out;
 * each newer damaged checkpoint passed over goes to `onDamaged`. With `official`, also an official
 * checkpoint or state dict file (eval, convert, finetune: its weights only). */
export function checkpointAt(
  where: string,
  onDamaged: (damaged: DamagedCheckpoint) => void = warnOnStderr,
  official?: OfficialCheckpointOptions,
): TrainCheckpoint {
  if (isCheckpointFile(where)) {
    if (!official) throw new Error(`${where} is a file: give a checkpoint folder, a checkpoints/ folder or a run folder`);
    return officialCheckpoint(where, official);
  }
  if (fs.existsSync(path.join(where, 'meta.json'))) return readCheckpoint<TrainConfig, TrainCheckpointExtra>(where);
  const latest = readLatestCheckpoint<TrainConfig, TrainCheckpointExtra>(
    fs.existsSync(path.join(where, 'checkpoints')) ? path.join(where, 'checkpoints') : where,
    { onDamaged },
  );
  if (!latest) throw new Error(`no checkpoint at ${where} (give a checkpoint folder, a checkpoints/ folder or a run folder)`);
  return latest;
}

/** The run folder (the trainer's outDir) a checkpoint lies in. */
export function runDirOf(ckpt: TrainCheckpoint): string {
  return path.dirname(path.dirname(ckpt.dir));
}

/** The network a checkpoint holds: its config's architecture and mode, classes and input channels
 * read off the weights. */
export function specOfCheckpoint(ckpt: TrainCheckpoint): NetworkSpec {
  const c = ckpt.meta.config;
  const first = [...ckpt.model].find(([k, t]) => k.startsWith('stage0.') && t.shape.length === 4);
  const linear = ckpt.model.get('linear.weight');
  if (!first || !linear) throw new Error(`${ckpt.dir}: the model has no stage0 conv or linear.weight; not a repopt network`);
  return networkSpec(c.arch, {
    mode: c.mode === 'vgg' ? 'target' : c.mode,
    numClasses: linear.shape[0],
    inChannels: first[1].shape[1],
    ...(c.strides ? { strides: c.strides } : {}),
  });
}
