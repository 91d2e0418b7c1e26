// What can be done with a run's checkpoint: evaluate it, fold it into the deploy network, export its
// weights in PyTorch's or safetensors' format.
import * as fs from 'fs';
import * as path from 'path';
import { EVALUATE_DEFAULTS, TRAIN_DEFAULTS, withDefaults } from '../defaults';
import { foldToDeploy } from '../fold';
import type { EpochMetrics } from '../native';
import { NativeBackendNetwork } from '../native-backend';
import { OptionError } from '../option-error';
import { type PthTensor, writePth } from '../pth';
import { setNumThreads } from '../runtime';
import { writeSafetensors } from '../safetensors';
import { checkDataSpec, checkDevice, checkThreads } from '../train/config';
import { damagedCheckpointWarning } from '../train/checkpoint';
import { channelStats, type DataSpec, isStreamed, loadSplit, type Normalization, uploadDataset } from '../train/data';
import { StreamData } from '../train/stream-data';
import { checkpointAt, isCheckpointFile, specOfCheckpoint } from '../train/load';
import type { TrainCheckpoint } from '../train/trainer';

export interface EvaluateOptions {
  /** A checkpoint folder, a checkpoints/ folder or a run folder (its newest complete checkpoint), or an
   * official checkpoint / state dict file (.pth), which needs `data`. */
  readonly checkpoint: string;
  /** Official checkpoint files only: the architecture (default: the one whose shapes the weights have). */
  readonly arch?: string;
  /** Official checkpoint files only (they do not record it): the data set, normalised by its training split. */
  readonly data?: DataSpec;
  readonly batchSize?: number;
  readonly threads?: number;
  readonly device?: string;
}

export interface EvaluateResult extends EpochMetrics {
  /** The checkpoint folder evaluated. */
  readonly checkpoint: string;
  /** The data set whose test split was evaluated (the checkpoint's). */
  readonly data: DataSpec;
  /** Newer damaged checkpoints passed over on the way, one message each (the CLI prints them). */
  readonly warnings: readonly string[];
}

/** The normalisation a checkpoint's network was trained with: kept in the checkpoint; older
 * checkpoints without it get it recomputed from their training set. */
export async function normalizationOf(ckpt: TrainCheckpoint): Promise<Normalization> {
  const kept = ckpt.meta.extra?.normalization;
  if (kept) return kept;
  const c = ckpt.meta.config;
  if (isStreamed(c.data)) {
    const stream = StreamData.open(c.data, c.seed);
    try {
      return await stream.normalization(c.seed);
    } finally {
      stream.close();
    }
  }
  return channelStats(await loadSplit(c.data, 'train', c.seed));
}

/** Test-set loss and accuracy of a checkpoint (eval mode, no augmentation), off the JS thread. */
export async function evaluate(options: EvaluateOptions): Promise<EvaluateResult> {
  const o = withDefaults({ ...EVALUATE_DEFAULTS, device: TRAIN_DEFAULTS.device as string }, options);
  if (!(Number.isInteger(o.batchSize) && o.batchSize > 0))
    throw new OptionError('batchSize', `batchSize must be a positive integer, got ${o.batchSize}`);
  checkThreads(o.threads);
  checkDevice(o.device);
  setNumThreads(o.threads);
  const warnings: string[] = [];
  if (isCheckpointFile(o.checkpoint)) {
    if (o.data === undefined)
      throw new OptionError('data', `data is needed: ${o.checkpoint} is an official checkpoint file, which does not record its data set`);
    checkDataSpec(o.data);
  } else if (o.data !== undefined || o.arch !== undefined) {
    throw new OptionError(
      o.data !== undefined ? 'data' : 'arch',
      `${o.data !== undefined ? 'data' : 'arch'} is only for official checkpoint files: ${o.checkpoint} records its own`,
    );
  }
  const ckpt = checkpointAt(o.checkpoint, (d) => warnings.push(damagedCheckpointWarning(d)), { arch: o.arch, data: o.data });
  const c = ckpt.meta.config;
  const net = new NativeBackendNetwork(specOfCheckpoint(ckpt), 'float32');
  try {
    net.loadStateTensors(ckpt.model);
    if (o.device !== 'cpu') net.to(o.device);
    const normalization = await normalizationOf(ckpt);
    if (isStreamed(c.data)) {
      // Streamed as in training: the evaluation transform, batch by batch.
      const stream = StreamData.open(c.data, c.seed);
      try {
        const m = await stream.evaluate(net, {
          batchSize: o.batchSize,
          normalization,
          device: o.device,
          onSkipped: (skipped) =>
            warnings.push(`skipped ${skipped.length} unreadable image(s): ${skipped.map((s) => s.message).join('; ')}`),
        });
        return { checkpoint: ckpt.dir, data: c.data, warnings, ...m };
      } finally {
        stream.close();
      }
    }
    const test = uploadDataset(await loadSplit(c.data, 'test', c.seed), normalization, o.device, 0);
    try {
      return { checkpoint: ckpt.dir, data: c.data, warnings, ...(await net.evaluate(test, o.batchSize)) };
    } finally {
      test.dispose();
    }
  } finally {
    net.dispose();
  }
}

/** Writes weights as a PyTorch state_dict (*.pth / *.pt, torch.load reads it) or *.safetensors. */
export function writeWeights(file: string, tensors: ReadonlyMap<string, PthTensor>): void {
  if (file.endsWith('.safetensors')) writeSafetensors(file, tensors);
  else if (file.endsWith('.pth') || file.endsWith('.pt')) writePth(file, tensors);
  else throw new Error(`${file}: choose the format by the extension, .pth or .safetensors`);
}

/** Checks `out` of convert/export before any work: a .pth/.pt/.safetensors file in an existing folder. */
function checkWeightsOut(out: string): void {
  if (typeof out !== 'string' || !/\.(pth|pt|safetensors)$/.test(out))
    throw new OptionError(
      'out',
      `out must be a file named *.pth, *.pt or *.safetensors (the extension picks the format), got '${String(out)}'`,
    );
  const dir = path.dirname(out);
  if (!fs.existsSync(dir)) throw new OptionError('out', `out ${out}: the folder ${dir} does not exist`);
  if (!fs.statSync(dir).isDirectory()) throw new OptionError('out', `out ${out}: ${dir} is not a folder`);
  if (fs.existsSync(out) && fs.statSync(out).isDirectory()) throw new OptionError('out', `out ${out} is a folder; name a file in it`);
}

export interface ConvertResult {
  readonly out: string;
  /** The deploy network's blocks (one conv3x3 + bias each). */
  readonly blocks: number;
}

/** Folds a trained repvgg, target (RepOpt-VGG) or vgg checkpoint into the deploy network and writes it.
 * `checkpoint` may be an official checkpoint file; `arch` then checks its architecture (default: the one
 * whose shapes its weights have). */
export function convert(options: { readonly checkpoint: string; readonly out: string; readonly arch?: string }): ConvertResult {
  checkWeightsOut(options.out);
  const ckpt = checkpointAt(options.checkpoint, undefined, { arch: options.arch });
  const c = ckpt.meta.config;
  if (c.mode === 'hs')
    throw new Error(
      `convert folds trained repvgg, target and vgg checkpoints; ${ckpt.dir} is mode hs (its scales are what matters: see scales.json)`,
    );
  const spec = specOfCheckpoint(ckpt);
  const host = new Map(
    [...ckpt.model].map(([k, t]) => [k, { shape: t.shape, data: Float64Array.from(t.data as ArrayLike<number>, Number) }]),
  );
  const folded = foldToDeploy(spec, host);
  writeWeights(
    options.out,
    new Map([...folded.state].map(([k, t]) => [k, { dtype: 'float32' as const, shape: [...t.shape], data: Float32Array.from(t.data) }])),
  );
  return { out: options.out, blocks: folded.spec.blocks.length };
}

/** Writes a checkpoint's weights (official key names) as *.pth or *.safetensors. */
export function exportWeights(options: { readonly checkpoint: string; readonly out: string }): {
  out: string;
  tensors: number;
  checkpoint: string;
} {
  checkWeightsOut(options.out);
  const ckpt = checkpointAt(options.checkpoint);
  writeWeights(options.out, ckpt.model);
  return { out: options.out, tensors: ckpt.model.size, checkpoint: ckpt.dir };
}
