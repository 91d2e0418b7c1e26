// Finding a run's checkpoint and the network it holds (eval, convert, export, quantize).
import * as fs from 'fs';
import * as path from 'path';
import { networkSpec } from '../configs';
import type { NetworkSpec } from '../spec';
import { type DamagedCheckpoint, damagedCheckpointWarning, readCheckpoint, readLatestCheckpoint } from './checkpoint';
import type { TrainConfig } from './config';
import type { TrainCheckpoint, TrainCheckpointExtra } from './trainer';

/** By default a damaged checkpoint passed over is said on stderr: the user asked for the newest one. */
function warnOnStderr(damaged: DamagedCheckpoint): void {
  process.stderr.write(`warning: ${damagedCheckpointWarning(damaged)}\n`);
}

/** A checkpoint folder, or the newest complete checkpoint of a checkpoints/ folder or a run's --out;
 * each newer damaged checkpoint passed over goes to `onDamaged`. */
export function checkpointAt(where: string, onDamaged: (damaged: DamagedCheckpoint) => void = warnOnStderr): TrainCheckpoint {
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
