// quantize(): post-training INT8 quantization of a run's checkpoint, optionally followed by
// quantization-aware fine-tuning; records float vs int8 accuracy and writes the exports.
import * as fs from 'fs';
import * as path from 'path';
import { QUANTIZE_DEFAULTS, TRAIN_DEFAULTS, withDefaults } from '../defaults';
import { NativeBackendNetwork } from '../native-backend';
import { OptionError } from '../option-error';
import type { EpochMetrics } from '../native';
import { writePth } from '../pth';
import {
  checkCalibrationBatches,
  deployNetwork,
  type PtqResult,
  quantizeDeploy,
  rangesOf,
  spreadTable,
  weightSpread,
  writeInt8Model,
} from '../quant';
import { formatPercent, markdownTable } from '../report';
import { writeSafetensors } from '../safetensors';
import { setNumThreads } from '../runtime';
import { checkLr, checkThreads, resolveTrainConfig } from '../train/config';
import { loadData, uploadDataset } from '../train/data';
import { checkpointAt, runDirOf, specOfCheckpoint } from '../train/load';
import { makeOutDir } from '../train/run-folder';
import { runTraining } from '../train/trainer';
import { normalizationOf } from './checkpoint';
import type { RunOptions } from './train';

export interface QuantizeOptions {
  /** A checkpoint folder, a checkpoints/ folder or a run folder (its newest complete checkpoint). */
  readonly checkpoint: string;
  /** Training batches for calibration. */
  readonly calibBatches?: number;
  readonly batchSize?: number;
  readonly observer?: 'minmax' | 'percentile';
  /** The percentile observer's upper percentile, in (50, 100]. */
  readonly percentile?: number;
  /** Quantization-aware fine-tuning epochs (target and vgg runs; GradMults stay on); 0: none. */
  readonly qatEpochs?: number;
  /** QAT learning rate for batch 256; default a tenth of the run's. */
  readonly qatLr?: number;
  readonly threads?: number;
  /** Output folder; default <run>/int8. */
  readonly out?: string;
}

export interface QuantizeRow {
  readonly name: string;
  readonly float: EpochMetrics;
  readonly simulated: EpochMetrics;
  readonly int8: EpochMetrics;
}

export interface QuantizeOutcome {
  readonly rows: QuantizeRow[];
  readonly out: string;
  readonly report: string;
  readonly int8Model: string;
}

const REPORT_SECTION = '## INT8 quantization';

/** Replaces (or appends) the INT8 section of a run's report.md. */
function writeReportSection(file: string, section: string): void {
  const old = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : `# repopt run ${path.basename(path.dirname(file))}\n`;
  const start = old.indexOf(REPORT_SECTION);
  let kept = old;
  if (start >= 0) {
    const next = old.indexOf('\n## ', start + REPORT_SECTION.length);
    kept = old.slice(0, start) + (next >= 0 ? old.slice(next + 1) : '');
  }
  fs.writeFileSync(file, `${kept.trimEnd()}\n\n${section.trimEnd()}\n`);
}

function checkQuantizeOptions(
  o: Omit<QuantizeOptions, 'checkpoint'> & Required<Omit<QuantizeOptions, 'qatLr' | 'out' | 'checkpoint'>>,
): void {
  const positive = (v: number) => Number.isInteger(v) && v > 0;
  if (!positive(o.calibBatches)) throw new OptionError('calibBatches', `calibBatches must be a positive integer, got ${o.calibBatches}`);
  if (!positive(o.batchSize)) throw new OptionError('batchSize', `batchSize must be a positive integer, got ${o.batchSize}`);
  if (o.observer !== 'minmax' && o.observer !== 'percentile')
    throw new OptionError('observer', `observer must be minmax or percentile, got ${String(o.observer)}`);
  if (!(o.percentile > 50 && o.percentile <= 100))
    throw new OptionError('percentile', `percentile must be in (50, 100], got ${o.percentile}`);
  if (!(Number.isInteger(o.qatEpochs) && o.qatEpochs >= 0))
    throw new OptionError('qatEpochs', `qatEpochs must be an integer >= 0, got ${o.qatEpochs}`);
  checkThreads(o.threads);
}

function row(name: string, r: PtqResult): QuantizeRow {
  return { name, float: r.float, simulated: r.simulated, int8: r.int8 };
}

/** Folds, calibrates and evaluates a checkpoint in float32, simulated int8 and real int8 (QNNPACK);
 * with qatEpochs, fine-tunes quantization-aware first. Writes the exports and a report section. */
export async function quantize(options: QuantizeOptions, run: Pick<RunOptions, 'signal'> = {}): Promise<QuantizeOutcome> {
  const o = withDefaults(
    { ...QUANTIZE_DEFAULTS, threads: TRAIN_DEFAULTS.threads } as Required<Omit<QuantizeOptions, 'qatLr' | 'out' | 'checkpoint'>> & {
      qatLrFactor: number;
    },
    options,
  );
  checkQuantizeOptions(o);
  setNumThreads(o.threads);
  const ckpt = checkpointAt(o.checkpoint);
  const c = ckpt.meta.config;
  if (c.mode === 'hs')
    throw new Error(`${ckpt.dir}: quantize takes trained target, vgg or repvgg checkpoints; this one is a hyper-search (mode hs) model`);
  if (o.qatEpochs > 0 && c.mode === 'repvgg')
    throw new OptionError(
      'qatEpochs',
      'qatEpochs: quantization-aware training fine-tunes plain networks (RepOpt-VGG, VGG); a repvgg run quantizes ' +
        'post-training only (drop qatEpochs)',
      ['qatEpochs'],
    );
  // QAT trains at the run's batch size.
  if (o.qatLr !== undefined) checkLr(o.qatLr, c.batchSize, 'qatLr', "the run's batch size");
  const spec = specOfCheckpoint(ckpt);
  const source = new NativeBackendNetwork(spec, 'float32');
  try {
    source.loadStateTensors(ckpt.model);
  } catch (e) {
    throw new Error(`${ckpt.dir}: the weights do not fit ${c.arch} (${spec.mode}): ${(e as Error).message}`);
  }
  const runDir = runDirOf(ckpt);
  const out = o.out ?? path.join(runDir, 'int8');
  makeOutDir(out, 'out');

  const data = await loadData(c.data, c.seed);
  const stats = await normalizationOf(ckpt);
  const trainSet = uploadDataset(data.train, stats, 'cpu', c.seed);
  const testSet = uploadDataset(data.test, stats, 'cpu', c.seed);
  // Both calibrations checked before either runs: QAT calibrates at the run's batch size.
  checkCalibrationBatches(data.train.count, o.calibBatches, o.batchSize, { batches: 'calibBatches', batchSize: 'batchSize' });
  if (o.qatEpochs > 0 && o.calibBatches > Math.floor(data.train.count / c.batchSize)) {
    throw new OptionError(
      'calibBatches',
      `calibBatches ${o.calibBatches} is more than quantization-aware training can calibrate on: the training set's ` +
        `${data.train.count} images make ${Math.floor(data.train.count / c.batchSize)} batch(es) of the run's batch size ${c.batchSize}`,
    );
  }
  const calibration = { batches: o.calibBatches, batchSize: o.batchSize, seed: c.seed, observer: o.observer, percentile: o.percentile };
  const deployed: PtqResult[] = [];
  try {
    const ptq = await quantizeDeploy(deployNetwork(spec, source.stateDict()), trainSet, testSet, calibration);
    source.dispose();
    deployed.push(ptq);
    const rows = [row('post-training', ptq)];
    let final = ptq;
    if (o.qatEpochs > 0) {
      const qatConfig = resolveTrainConfig({
        ...c,
        epochs: o.qatEpochs,
        lr: o.qatLr ?? c.lr * o.qatLrFactor,
        warmupEpochs: 0,
        finetune: ckpt.dir,
        resume: false,
        stopAfterSteps: undefined,
        threads: o.threads,
        device: 'cpu',
        autocast: 'none', // fake quantization runs in float32
        outDir: path.join(out, 'qat'),
        overwrite: true, // quantizing again redoes QAT; the previous one is moved aside
        quant: { calibBatches: o.calibBatches, observer: o.observer, percentile: o.percentile },
      });
      const qat = await runTraining(qatConfig, { ...run, data, emit: () => {} });
      try {
        if (qat.status !== 'completed') {
          throw new Error(`quantize: quantization-aware training was ${qat.status} after ${qat.steps} steps; nothing was exported`);
        }
        const ranges = qat.network.quantParams()!;
        qat.network.setFakeQuant(false);
        final = await quantizeDeploy(deployNetwork(qat.spec, qat.network.stateDict()), trainSet, testSet, calibration, ranges);
        deployed.push(final);
      } finally {
        qat.network.dispose();
      }
      rows.push(row(`QAT (${o.qatEpochs} epoch${o.qatEpochs > 1 ? 's' : ''})`, final));
    }

    // Exports of the final model: float deploy weights (official keys) and the int8 layout.
    const floatState = final.deploy.stateTensors();
    writePth(path.join(out, 'deploy.pth'), floatState);
    writeSafetensors(path.join(out, 'deploy.safetensors'), floatState);
    const int8Model = writeInt8Model(out, final.deploy.spec, final.params, final.deploy.quantizedWeights(), stats);
    fs.writeFileSync(
      path.join(out, 'quantization.json'),
      JSON.stringify(
        { checkpoint: ckpt.dir, arch: c.arch, mode: c.mode, calibration, qatEpochs: o.qatEpochs, rows, ranges: rangesOf(final.params) },
        null,
        2,
      ) + '\n',
    );

    const spread = weightSpread(final.deploy.spec, final.deploy.stateDict());
    const section = [
      REPORT_SECTION,
      '',
      `Checkpoint \`${ckpt.dir}\` (${c.arch}, mode ${c.mode}), folded into one conv3x3 + bias per block. Weights: int8 ` +
        `per output channel, symmetric; activations: ${final.params.activations} per tensor, ` +
        `${o.observer === 'minmax' ? 'min-max' : `${o.percentile}th-percentile`} ranges from ${o.calibBatches} ` +
        `training batch(es) of ${o.batchSize}. "Simulated": libtorch fake-quantize ops in float; "QNNPACK": real int8 ` +
        `kernels. Test set: ${testSet.count} images.`,
      '',
      markdownTable(
        ['model', 'float32', 'INT8 simulated', 'INT8 (QNNPACK)', 'drop'],
        rows.map((r) => [
          r.name,
          formatPercent(r.float.accuracy),
          formatPercent(r.simulated.accuracy),
          formatPercent(r.int8.accuracy),
          `${((r.float.accuracy - r.int8.accuracy) * 100).toFixed(1)} pt`,
        ]),
      ),
      '',
      'Per-layer weight spread of the quantized model (max/std: how far out the int8 grid must reach):',
      '',
      spreadTable([{ name: c.mode, spread }]),
      '',
      `Exports in \`${path.relative(runDir, out) || '.'}\`: \`deploy.pth\` / \`deploy.safetensors\` (float, official ` +
        `keys), \`model.int8.json\` + \`model.int8.bin\` (int8 weights, int32 biases, scales and zero points), \`quantization.json\`.`,
    ].join('\n');
    const report = path.join(runDir, 'report.md');
    writeReportSection(report, section);
    return { rows, out, report, int8Model };
  } finally {
    source.dispose();
    for (const r of deployed) r.deploy.dispose();
    trainSet.dispose();
    testSet.dispose();
  }
}
